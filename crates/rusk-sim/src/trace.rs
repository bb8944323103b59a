//! A bounded log of the last events, printed when a run fails, and a fingerprint of all of them,
//! which two runs of one seed must agree on (that is how determinism is tested).
//!
//! Entries are small summaries (ids, not payloads) so that recording every event stays cheap;
//! they are only formatted when a failure is reported.
use rusk_proto::msg::{SchedulerToWorker, WorkerToScheduler};
use rusk_proto::{AttemptId, ClientId, GraphId, Incarnation, TaskRef};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A participant, as shown in traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    Scheduler,
    /// A worker life: its slot and its life number (which grows with every restart).
    Worker {
        slot: u32,
        life: u32,
    },
    Client(u64),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Scheduler => write!(f, "sched"),
            Node::Worker { slot, life } => write!(f, "w{slot}#{life}"),
            Node::Client(c) => write!(f, "c{c}"),
        }
    }
}

/// A message, reduced to its ids.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Msg {
    Register,
    Heartbeat,
    Done(TaskRef, AttemptId),
    Failed(TaskRef, AttemptId),
    MissingDep(TaskRef, AttemptId, TaskRef),
    Welcome(Incarnation),
    Assign(TaskRef, AttemptId),
    Cancel(TaskRef, AttemptId),
    Started(TaskRef, AttemptId),
    Release(TaskRef, usize),
    Upload(usize),
    Steal(TaskRef, AttemptId),
    StealResponse(TaskRef, AttemptId, bool),
    Replicate(TaskRef, AttemptId),
    Replicated(TaskRef, AttemptId),
}

impl Msg {
    pub(crate) fn of_worker(m: &WorkerToScheduler) -> Msg {
        match m {
            WorkerToScheduler::Register(_) => Msg::Register,
            WorkerToScheduler::Heartbeat(_) | WorkerToScheduler::Event(_) => Msg::Heartbeat,
            WorkerToScheduler::TaskDone { task, attempt, .. } => Msg::Done(*task, *attempt),
            WorkerToScheduler::TaskFailed { task, attempt, .. } => Msg::Failed(*task, *attempt),
            WorkerToScheduler::MissingDep { task, attempt, dep } => {
                Msg::MissingDep(*task, *attempt, *dep)
            }
            WorkerToScheduler::TaskStarted { task, attempt }
            | WorkerToScheduler::TaskSeceded { task, attempt }
            | WorkerToScheduler::TaskRejoined { task, attempt } => Msg::Started(*task, *attempt),
            WorkerToScheduler::StealResponse {
                task,
                attempt,
                stolen,
            } => Msg::StealResponse(*task, *attempt, *stolen),
            WorkerToScheduler::Replicated { task, attempt, .. } => Msg::Replicated(*task, *attempt),
        }
    }

    pub(crate) fn of_scheduler(m: &SchedulerToWorker) -> Msg {
        match m {
            SchedulerToWorker::Welcome { incarnation, .. } => Msg::Welcome(*incarnation),
            SchedulerToWorker::Assign(a) => Msg::Assign(a.task, a.attempt),
            SchedulerToWorker::Cancel { task, attempt } => Msg::Cancel(*task, *attempt),
            SchedulerToWorker::Release { tasks } => Msg::Release(
                tasks.first().copied().unwrap_or(TaskRef {
                    graph: GraphId(0),
                    index: 0,
                }),
                tasks.len(),
            ),
            SchedulerToWorker::Upload { data, .. } => Msg::Upload(data.len()),
            SchedulerToWorker::Steal { task, attempt } => Msg::Steal(*task, *attempt),
            SchedulerToWorker::Replicate { task, attempt, .. } => Msg::Replicate(*task, *attempt),
        }
    }

    fn words(&self) -> [u64; 4] {
        let t = |t: &TaskRef| (t.graph.0 << 32) ^ t.index as u64;
        match self {
            Msg::Register => [1, 0, 0, 0],
            Msg::Heartbeat => [2, 0, 0, 0],
            Msg::Done(a, b) => [3, t(a), b.0, 0],
            Msg::Failed(a, b) => [4, t(a), b.0, 0],
            Msg::MissingDep(a, b, c) => [5, t(a), b.0, t(c)],
            Msg::Welcome(i) => [6, i.0, 0, 0],
            Msg::Assign(a, b) => [7, t(a), b.0, 0],
            Msg::Cancel(a, b) => [8, t(a), b.0, 0],
            Msg::Release(a, n) => [9, t(a), *n as u64, 0],
            Msg::Started(a, b) => [10, t(a), b.0, 0],
            Msg::Upload(n) => [13, *n as u64, 0, 0],
            Msg::Steal(a, b) => [11, t(a), b.0, 0],
            Msg::StealResponse(a, b, s) => [12, t(a), b.0, *s as u64],
            Msg::Replicate(a, b) => [14, t(a), b.0, 0],
            Msg::Replicated(a, b) => [15, t(a), b.0, 0],
        }
    }
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Msg::Register => write!(f, "Register"),
            Msg::Heartbeat => write!(f, "Heartbeat"),
            Msg::Done(t, a) => write!(f, "TaskDone({t},{a})"),
            Msg::Failed(t, a) => write!(f, "TaskFailed({t},{a})"),
            Msg::MissingDep(t, a, d) => write!(f, "MissingDep({t},{a},dep {d})"),
            Msg::Welcome(i) => write!(f, "Welcome({i})"),
            Msg::Assign(t, a) => write!(f, "Assign({t},{a})"),
            Msg::Cancel(t, a) => write!(f, "Cancel({t},{a})"),
            Msg::Release(t, n) => write!(f, "Release({t}..,{n})"),
            Msg::Started(t, a) => write!(f, "TaskStarted({t},{a})"),
            Msg::Upload(n) => write!(f, "Upload({n} bytes)"),
            Msg::Steal(t, a) => write!(f, "Steal({t},{a})"),
            Msg::StealResponse(t, a, s) => write!(f, "StealResponse({t},{a},stolen={s})"),
            Msg::Replicate(t, a) => write!(f, "Replicate({t},{a})"),
            Msg::Replicated(t, a) => write!(f, "Replicated({t},{a})"),
        }
    }
}

/// One traced event.
#[derive(Clone, Debug)]
pub(crate) enum What {
    SchedTick,
    WorkerTick(Node),
    Deliver {
        from: Node,
        to: Node,
        inc: Option<Incarnation>,
        msgs: Vec<Msg>,
    },
    Client(ClientId, &'static str, Option<GraphId>),
    Fetch {
        id: u64,
        by: Node,
        peer: Arc<str>,
        what: &'static str,
    },
    Exec {
        on: Node,
        task: TaskRef,
        attempt: AttemptId,
        what: &'static str,
    },
    /// Rare events (faults, joins, drops, recoveries): text is fine.
    Note(String),
}

impl What {
    fn fold(&self, h: &mut Fnv) {
        let node = |n: &Node| match n {
            Node::Scheduler => 1,
            Node::Worker { slot, life } => ((*slot as u64) << 32) | (*life as u64) << 1,
            Node::Client(c) => 3 + (c << 8),
        };
        match self {
            What::SchedTick => h.word(1),
            What::WorkerTick(n) => {
                h.word(2);
                h.word(node(n));
            }
            What::Deliver { from, to, msgs, .. } => {
                h.word(3);
                h.word(node(from));
                h.word(node(to));
                for m in msgs {
                    for w in m.words() {
                        h.word(w);
                    }
                }
            }
            What::Client(c, s, g) => {
                h.word(c.0);
                h.bytes(s.as_bytes());
                h.word(g.map_or(0, |g| g.0));
            }
            What::Fetch { id, by, what, .. } => {
                h.word(4);
                h.word(*id);
                h.word(node(by));
                h.bytes(what.as_bytes());
            }
            What::Exec {
                on,
                task,
                attempt,
                what,
            } => {
                h.word(5);
                h.word(node(on));
                h.word(task.graph.0 << 32 | task.index as u64);
                h.word(attempt.0);
                h.bytes(what.as_bytes());
            }
            What::Note(s) => h.bytes(s.as_bytes()),
        }
    }
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::SchedTick => write!(f, "sched tick"),
            What::WorkerTick(n) => write!(f, "{n} tick"),
            What::Deliver {
                from,
                to,
                inc,
                msgs,
            } => {
                write!(f, "{from} -> {to}")?;
                if let Some(i) = inc {
                    write!(f, " [{i}]")?;
                }
                write!(f, ":")?;
                for m in msgs {
                    write!(f, " {m}")?;
                }
                Ok(())
            }
            What::Client(c, s, g) => match g {
                Some(g) => write!(f, "{c}: {s} {g}"),
                None => write!(f, "{c}: {s}"),
            },
            What::Fetch { id, by, peer, what } => {
                write!(f, "fetch #{id} by {by} from {peer}: {what}")
            }
            What::Exec {
                on,
                task,
                attempt,
                what,
            } => write!(f, "{on} exec {task} {attempt}: {what}"),
            What::Note(s) => write!(f, "{s}"),
        }
    }
}

/// FNV-1a, enough to fingerprint a run (std's hasher is not promised stable across releases).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv(pub u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn word(&mut self, w: u64) {
        self.bytes(&w.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The last `capacity` events and a fingerprint of every event so far.
pub(crate) struct Trace {
    entries: VecDeque<(Duration, What)>,
    capacity: usize,
    hash: Fnv,
}

impl Trace {
    pub(crate) fn new(capacity: usize) -> Trace {
        Trace {
            entries: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            hash: Fnv::new(),
        }
    }

    pub(crate) fn record(&mut self, at: Duration, what: What) {
        self.hash.word(at.as_nanos() as u64);
        what.fold(&mut self.hash);
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((at, what));
    }

    pub(crate) fn fingerprint(&self) -> u64 {
        self.hash.0
    }

    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        for (at, what) in &self.entries {
            s.push_str(&format!("  {:>12.6}s  {what}\n", at.as_secs_f64()));
        }
        s
    }
}
