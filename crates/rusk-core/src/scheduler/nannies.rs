//! Nannies: their registration, slot reports and records, and the operator's `rusk restart` /
//! `rusk stop-nanny` requests routed to them.
use super::*;

impl Scheduler {
    pub(super) fn nanny_by_name(&self, name: &str) -> Option<NannyId> {
        self.nannies
            .iter()
            .filter(|(_, n)| n.info.name == name)
            .map(|(id, _)| *id)
            .max() // the newest connection of that name
    }

    pub(super) fn on_nanny_joined(&mut self, nanny: NannyId, info: NannyInfo) {
        self.resume.nannies.remove(&info.name);
        self.journal(crate::journal::Record::Nanny {
            info: info.clone(),
            slots: Vec::new(),
        });
        self.nannies.insert(
            nanny,
            Nanny {
                info,
                slots: BTreeMap::new(),
            },
        );
        self.out.push(Command::ToNanny {
            nanny,
            msg: SchedulerToNanny::Welcome,
        });
    }

    pub(super) fn on_nanny_message(
        &mut self,
        now: Duration,
        nanny: NannyId,
        msg: NannyToScheduler,
    ) {
        let Some(n) = self.nannies.get_mut(&nanny) else {
            return;
        };
        match msg {
            NannyToScheduler::Register(_) => {}
            NannyToScheduler::Slots(reports) => {
                for r in reports {
                    n.slots.insert(r.slot, r);
                }
                let record = crate::journal::Record::Nanny {
                    info: n.info.clone(),
                    slots: n.slots.values().cloned().collect(),
                };
                self.journal(record);
            }
            NannyToScheduler::Record(NannyRecord {
                slot,
                cause,
                observed,
                action,
                incarnation,
                new_incarnation,
                detection_ms,
                recovery_ms,
            }) => {
                let r = EventRecord {
                    seq: 0,
                    time_unix_ms: 0,
                    source: EventSource::Nanny,
                    host: n.info.host.clone(),
                    nanny: Some(n.info.name.clone()),
                    slot: Some(slot),
                    worker: Some(format!("{}/{slot}", n.info.name)),
                    incarnation,
                    new_incarnation,
                    cause,
                    observed,
                    action,
                    detection_ms,
                    recovery_ms,
                };
                self.record(now, r);
            }
        }
    }

    /// A nanny's connection closed. If the nanny died, its workers died with it (they watch
    /// their parent), so their own connections close at once and their work is recovered
    /// through the usual path; if only the connection broke, its workers are healthy and keep
    /// serving. Either way nothing is dropped on this signal alone: no false positive.
    pub(super) fn on_nanny_left(&mut self, now: Duration, nanny: NannyId, reason: String) {
        let Some(n) = self.nannies.remove(&nanny) else {
            return;
        };
        let workers = self
            .workers
            .values()
            .filter(|w| w.info.nanny.as_deref() == Some(n.info.name.as_str()))
            .count();
        self.record(
            now,
            EventRecord {
                seq: 0,
                time_unix_ms: 0,
                source: EventSource::Scheduler,
                host: n.info.host.clone(),
                nanny: Some(n.info.name.clone()),
                slot: None,
                worker: None,
                incarnation: None,
                new_incarnation: None,
                cause: EventCause::NannyGone,
                observed: format!("nanny connection closed ({reason})"),
                action: format!(
                    "{workers} of its worker(s) still connected; a dead nanny's workers exit with it and are recovered as their connections close"
                ),
                detection_ms: None,
                recovery_ms: None,
            },
        );
    }

    /// `rusk restart`.
    pub(super) fn on_restart(&mut self, target: RestartTarget) -> Result<String, String> {
        match target {
            RestartTarget::All => {
                let mut ids: Vec<NannyId> = self.nannies.keys().copied().collect();
                ids.sort_unstable();
                for nanny in &ids {
                    self.out.push(Command::ToNanny {
                        nanny: *nanny,
                        msg: SchedulerToNanny::OperatorRestart { slot: None },
                    });
                }
                Ok(format!(
                    "asked {} nanny(ies) to restart all their workers",
                    ids.len()
                ))
            }
            RestartTarget::Worker(id) => {
                // A live worker by its id, or a slot (`nanny/slot`) whatever its state.
                let by_worker = self
                    .workers
                    .values()
                    .find(|w| w.info.name == id)
                    .map(|w| (w.info.nanny.clone(), w.info.slot));
                let (nanny, slot) = match by_worker {
                    Some((Some(n), Some(s))) => (n, s),
                    Some(_) => {
                        return Err(format!(
                            "worker {id:?} has no nanny; restart its process yourself"
                        ))
                    }
                    None => match id
                        .rsplit_once('/')
                        .and_then(|(n, s)| Some((n.to_string(), s.parse::<u32>().ok()?)))
                    {
                        Some(x) => x,
                        None => {
                            return Err(format!(
                                "no worker or slot named {id:?} (see `rusk status`)"
                            ))
                        }
                    },
                };
                let Some(nid) = self.nanny_by_name(&nanny) else {
                    return Err(format!(
                        "no worker or slot named {id:?}: nanny {nanny:?} is not connected"
                    ));
                };
                if slot >= self.nannies[&nid].info.nworkers {
                    return Err(format!(
                        "no worker or slot named {id:?}: nanny {nanny:?} has no slot {slot}"
                    ));
                }
                self.out.push(Command::ToNanny {
                    nanny: nid,
                    msg: SchedulerToNanny::OperatorRestart { slot: Some(slot) },
                });
                Ok(format!("asked nanny {nanny} to restart slot {slot}"))
            }
        }
    }

    pub(super) fn on_stop_nanny(&mut self, name: Option<String>) -> Result<String, String> {
        let mut ids: Vec<NannyId> = self
            .nannies
            .iter()
            .filter(|(_, n)| name.as_deref().is_none_or(|want| n.info.name == want))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Err(match name {
                Some(n) => format!("no nanny named {n:?} is connected"),
                None => "no nanny is connected".into(),
            });
        }
        for nanny in &ids {
            self.out.push(Command::ToNanny {
                nanny: *nanny,
                msg: SchedulerToNanny::Stop,
            });
        }
        Ok(format!(
            "asked {} nanny(ies) to stop their workers for good",
            ids.len()
        ))
    }
}
