//! `rusk status` as a table: one row per worker and one per nanny (each naming its host),
//! the nanny's slots under it, then task counts and graphs. `--json` prints the snapshot as is.
use rusk_proto::msg::StatusSnapshot;
use std::fmt::Write;

/// The human form of `s`, one line per row, ending with a newline.
pub fn format(s: &StatusSnapshot) -> String {
    let mut o = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(o, "{} worker(s)", s.workers.len());
    let _ = writeln!(
        o,
        "{:<24} {:<16} {:>6} {:>8} {:>8} {:<9} {:>8} {:>8} {:>8} {:>6} {:>8} {:>6} {:>8} {:>9} {:>8}  address",
        "worker",
        "host",
        "incarn",
        "pid",
        "threads",
        "state",
        "restarts",
        "assigned",
        "memory",
        "hb ms",
        "rss MiB",
        "lag ms",
        "mem MiB",
        "spill MiB",
        "pool MiB"
    );
    for w in &s.workers {
        let _ = writeln!(
            o,
            "{:<24} {:<16} {:>6} {:>8} {:>8} {:<9} {:>8} {:>8} {:>8} {:>6} {:>8} {:>6} {:>8} {:>9} {:>8}  {}",
            w.id,
            w.host,
            w.incarnation,
            w.pid,
            w.nthreads,
            w.state,
            w.restarts,
            w.tasks.get("assigned").copied().unwrap_or(0),
            w.tasks.get("memory").copied().unwrap_or(0),
            w.heartbeat_age_ms,
            w.vitals.rss_bytes >> 20,
            w.vitals.loop_lag_ms,
            w.stored_bytes >> 20,
            w.spilled_bytes >> 20,
            w.vitals.reuse_pool_bytes >> 20,
            w.address
        );
        if !w.resources.is_empty() {
            let r: Vec<String> = w
                .resources
                .iter()
                .map(|(n, a)| format!("{n}={a}"))
                .collect();
            let _ = writeln!(o, "{:<24} resources: {}", "", r.join(", "));
        }
        if let Some(why) = &w.vitals.unhealthy {
            let _ = writeln!(o, "{:<24} unhealthy: {why}", "");
        }
        if let Some(why) = &w.paused {
            let _ = writeln!(o, "{:<24} {why}", "");
        }
    }
    if !s.nannies.is_empty() {
        let _ = writeln!(o, "{} nann{}", s.nannies.len(), plural_y(s.nannies.len()));
        let _ = writeln!(
            o,
            "{:<24} {:<16} {:>8} {:>6}",
            "nanny", "host", "pid", "slots"
        );
    }
    for n in &s.nannies {
        let _ = writeln!(
            o,
            "{:<24} {:<16} {:>8} {:>6}",
            n.name,
            n.host,
            n.pid,
            n.slots.len()
        );
        for slot in &n.slots {
            let _ = writeln!(
                o,
                "  slot {:<3} {:<12} pid {:<8} incarnation {:<6} restarts {:<4} {}",
                slot.slot,
                slot.state,
                slot.pid.map_or("-".to_string(), |p| p.to_string()),
                slot.incarnation.map_or("-".to_string(), |i| i.to_string()),
                slot.restarts,
                slot.last_cause.as_deref().unwrap_or("")
            );
        }
    }
    let tasks: Vec<String> = s.tasks.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(o, "tasks: {}", tasks.join(" "));
    for g in &s.graphs {
        let _ = writeln!(
            o,
            "graph g{}: {}/{} done, {} erred",
            g.graph, g.done, g.total, g.erred
        );
    }
    o
}

fn plural_y(n: usize) -> &'static str {
    if n == 1 {
        "y"
    } else {
        "ies"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusk_proto::msg::{NannyStatus, SlotReport, WorkerStatus};

    fn worker(id: &str, host: &str, address: &str) -> WorkerStatus {
        WorkerStatus {
            id: id.into(),
            host: host.into(),
            incarnation: 3,
            pid: 4321,
            state: "running".into(),
            address: address.into(),
            nthreads: 2,
            tasks: Default::default(),
            stored_results: 0,
            stored_bytes: 0,
            spilled_bytes: 0,
            spilled_results: 0,
            spills_total: 0,
            paused: None,
            heartbeat_age_ms: 12,
            nanny: None,
            slot: None,
            restarts: 0,
            vitals: Default::default(),
            resources: Default::default(),
        }
    }

    /// The words of the first line that starts with `first`.
    fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&first))
            .unwrap_or_else(|| panic!("no row {first} in:\n{text}"))
    }

    #[test]
    fn each_worker_and_each_nanny_names_its_host_in_a_column() {
        let s = StatusSnapshot {
            workers: vec![
                worker("alpha-1", "alpha", "10.0.0.1:4000"),
                worker("n0/0", "beta.example.org", "10.0.0.2:4000"),
            ],
            nannies: vec![NannyStatus {
                name: "n0".into(),
                host: "beta.example.org".into(),
                pid: 77,
                slots: vec![SlotReport {
                    slot: 0,
                    state: "running".into(),
                    pid: Some(4321),
                    incarnation: Some(3),
                    restarts: 1,
                    last_cause: Some("crash".into()),
                }],
            }],
            ..Default::default()
        };
        let text = format(&s);
        let header = row(&text, "worker");
        assert_eq!(header[1], "host", "{text}");
        assert_eq!(row(&text, "alpha-1")[1], "alpha", "{text}");
        let supervised = row(&text, "n0/0");
        assert_eq!(supervised[1], "beta.example.org", "{text}");
        assert_eq!(supervised.last(), Some(&"10.0.0.2:4000"), "{text}");
        assert_eq!(row(&text, "nanny"), ["nanny", "host", "pid", "slots"]);
        assert_eq!(row(&text, "n0"), ["n0", "beta.example.org", "77", "1"]);
        assert!(text.contains("1 nanny\n"), "{text}");
        assert_eq!(row(&text, "slot")[1..3], ["0", "running"], "{text}");
    }

    #[test]
    fn no_nanny_section_without_nannies() {
        let s = StatusSnapshot {
            workers: vec![worker("w", "h", "127.0.0.1:1")],
            ..Default::default()
        };
        let text = format(&s);
        assert!(!text.contains("nann"), "{text}");
        assert_eq!(row(&text, "w")[1], "h");
    }
}
