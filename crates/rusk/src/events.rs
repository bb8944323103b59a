//! `rusk events`: the recovery log as the scheduler keeps it (its own detections and every
//! nanny's restarts), as text or JSON lines, optionally following new events.
use crate::client::Client;
use crate::config::ClusterArgs;
use anyhow::Result;
use rusk_proto::msg::EventRecord;
use std::time::{Duration, UNIX_EPOCH};

/// How often `--follow` asks for new events.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

pub async fn run(cluster: ClusterArgs, json: bool, follow: bool) -> Result<()> {
    let cluster = cluster.resolve()?;
    let mut c = Client::connect(&cluster).await?;
    let mut since = 0;
    loop {
        let (records, next) = c.events(since).await?;
        for r in &records {
            if json {
                println!("{}", serde_json::to_string(r)?);
            } else {
                println!("{}", format_record(r));
            }
        }
        since = next;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
    }
}

pub fn format_record(r: &EventRecord) -> String {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.time_unix_ms));
    let place = match (&r.nanny, r.slot) {
        (Some(n), Some(s)) => format!("{n}/{s}"),
        (Some(n), None) => n.clone(),
        _ => r.worker.clone().unwrap_or_else(|| "-".into()),
    };
    let inc = match (r.incarnation, r.new_incarnation) {
        (Some(a), Some(b)) => format!(" incarnation {a}->{b}"),
        (Some(a), None) => format!(" incarnation {a}"),
        (None, Some(b)) => format!(" incarnation ->{b}"),
        (None, None) => String::new(),
    };
    let mut timing = String::new();
    if let Some(d) = r.detection_ms {
        timing.push_str(&format!(" detected after {d} ms;"));
    }
    if let Some(rc) = r.recovery_ms {
        timing.push_str(&format!(" recovered in {rc} ms;"));
    }
    format!(
        "{time} #{seq} [{source}] {host} {place}{inc} cause={cause}: {observed} -> {action};{timing}",
        seq = r.seq,
        source = r.source,
        host = if r.host.is_empty() { "-" } else { r.host.as_str() },
        cause = r.cause,
        observed = r.observed,
        action = r.action,
    )
    .trim_end_matches(';')
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_proto::msg::{EventCause, EventSource};

    fn record() -> EventRecord {
        EventRecord {
            seq: 7,
            time_unix_ms: 1_700_000_000_000,
            source: EventSource::Nanny,
            host: "beta.example.org".into(),
            nanny: Some("n0".into()),
            slot: Some(1),
            worker: Some("n0/1".into()),
            incarnation: Some(3),
            new_incarnation: Some(4),
            cause: EventCause::Crash,
            observed: "exit code 1".into(),
            action: "restarted".into(),
            detection_ms: Some(2),
            recovery_ms: Some(40),
        }
    }

    #[test]
    fn a_record_names_its_host_then_where_on_it() {
        assert_eq!(
            format_record(&record()),
            "2023-11-14T22:13:20.000Z #7 [nanny] beta.example.org n0/1 incarnation 3->4 \
             cause=crash: exit code 1 -> restarted; detected after 2 ms; recovered in 40 ms"
        );
        let unknown = EventRecord {
            host: String::new(),
            nanny: None,
            slot: None,
            worker: None,
            ..record()
        };
        assert!(
            format_record(&unknown).contains("[nanny] - - incarnation"),
            "{}",
            format_record(&unknown)
        );
    }
}
