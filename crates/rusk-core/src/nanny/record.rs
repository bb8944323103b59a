//! What the scheduler's recovery log gets of a nanny's [`Record`]: the [`NannyRecord`] the nanny
//! sends. One conversion for the nanny shell and the simulator, so that what the simulator
//! checks is what a real nanny sends.
use super::{Record, RecordKind};
use rusk_proto::msg::{EventCause, NannyRecord};

impl From<&Record> for NannyRecord {
    fn from(r: &Record) -> NannyRecord {
        let slot = r.slot;
        match &r.what {
            RecordKind::Detected {
                cause,
                incarnation,
                action,
                pid: _, // the nanny's own log line has it; the scheduler knows incarnations
            } => NannyRecord {
                slot,
                cause: cause.kind(),
                observed: cause.to_string(),
                action: action.clone(),
                incarnation: incarnation.map(|i| i.0),
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            },
            RecordKind::Recovered {
                cause,
                old_incarnation,
                new_incarnation,
                detection,
                recovery,
            } => NannyRecord {
                slot,
                cause: cause.kind(),
                observed: cause.to_string(),
                action: "restarted".into(),
                incarnation: old_incarnation.map(|i| i.0),
                new_incarnation: Some(new_incarnation.0),
                detection_ms: Some(detection.as_millis() as u64),
                recovery_ms: Some(recovery.as_millis() as u64),
            },
            RecordKind::Failed {
                crashes,
                window,
                last,
            } => NannyRecord {
                slot,
                cause: EventCause::CrashLoop,
                observed: format!(
                    "{crashes} crashes within {} s; last: {last}",
                    window.as_secs()
                ),
                action: "slot failed; no more restarts until `rusk restart`".into(),
                incarnation: None,
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            },
            RecordKind::BackingOff { delay, crashes } => NannyRecord {
                slot,
                cause: EventCause::CrashLoop,
                observed: format!("{crashes} crashes in a row"),
                action: format!("back off {} ms before restarting", delay.as_millis()),
                incarnation: None,
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ExitStatus, RestartCause, EXIT_CONNECTION_LOST};
    use super::*;
    use rusk_proto::Incarnation;
    use std::time::Duration;

    fn wire(what: RecordKind) -> NannyRecord {
        NannyRecord::from(&Record { slot: 2, what })
    }

    fn exited(code: i32) -> RestartCause {
        RestartCause::Exited(ExitStatus {
            code: Some(code),
            signal: None,
        })
    }

    #[test]
    fn a_detection_carries_the_cause_and_the_old_incarnation() {
        assert_eq!(
            wire(RecordKind::Detected {
                cause: exited(1),
                incarnation: Some(Incarnation(7)),
                pid: Some(4242),
                action: "restart".into(),
            }),
            NannyRecord {
                slot: 2,
                cause: EventCause::Crash,
                observed: "worker exited: exit code 1".into(),
                action: "restart".into(),
                incarnation: Some(7),
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            }
        );
    }

    #[test]
    fn a_recovery_carries_both_incarnations_and_its_durations() {
        assert_eq!(
            wire(RecordKind::Recovered {
                cause: RestartCause::SchedulerRequest {
                    silent_for: Duration::from_millis(3000),
                },
                old_incarnation: Some(Incarnation(7)),
                new_incarnation: Incarnation(9),
                detection: Duration::from_millis(3000),
                recovery: Duration::from_millis(120),
            }),
            NannyRecord {
                slot: 2,
                cause: EventCause::Heartbeat,
                observed: "scheduler: no heartbeat for 3000 ms".into(),
                action: "restarted".into(),
                incarnation: Some(7),
                new_incarnation: Some(9),
                detection_ms: Some(3000),
                recovery_ms: Some(120),
            }
        );
    }

    #[test]
    fn a_crash_loop_names_its_window_and_what_happens_next() {
        assert_eq!(
            wire(RecordKind::Failed {
                crashes: 6,
                window: Duration::from_secs(60),
                last: exited(1),
            }),
            NannyRecord {
                slot: 2,
                cause: EventCause::CrashLoop,
                observed: "6 crashes within 60 s; last: worker exited: exit code 1".into(),
                action: "slot failed; no more restarts until `rusk restart`".into(),
                incarnation: None,
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            }
        );
        assert_eq!(
            wire(RecordKind::BackingOff {
                delay: Duration::from_millis(250),
                crashes: 2,
            }),
            NannyRecord {
                slot: 2,
                cause: EventCause::CrashLoop,
                observed: "2 crashes in a row".into(),
                action: "back off 250 ms before restarting".into(),
                incarnation: None,
                new_incarnation: None,
                detection_ms: None,
                recovery_ms: None,
            }
        );
    }

    #[test]
    fn each_restart_cause_has_its_event_cause() {
        let causes = [
            (exited(1), EventCause::Crash),
            (exited(EXIT_CONNECTION_LOST), EventCause::Connection),
            (
                RestartCause::Exited(ExitStatus {
                    code: None,
                    signal: Some(9),
                }),
                EventCause::Crash,
            ),
            (
                RestartCause::Watchdog {
                    silent_for: Duration::from_secs(2),
                    nanny_stalled: Duration::ZERO,
                    state: None,
                },
                EventCause::Watchdog,
            ),
            (RestartCause::StartTimeout, EventCause::StartTimeout),
            (
                RestartCause::SchedulerRequest {
                    silent_for: Duration::from_secs(2),
                },
                EventCause::Heartbeat,
            ),
            (
                RestartCause::Memory { rss: 2, limit: 1 },
                EventCause::Memory,
            ),
            (RestartCause::Operator, EventCause::Operator),
            (
                RestartCause::SpawnFailed("no such file".into()),
                EventCause::SpawnFailed,
            ),
        ];
        for (restart, event) in causes {
            assert_eq!(restart.kind(), event, "{restart}");
        }
    }
}
