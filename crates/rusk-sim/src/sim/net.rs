//! The in-memory network.
//!
//! Worker↔scheduler and nanny↔scheduler links behave like TCP: each direction delivers batches
//! in the order they were sent (a packet is never delivered before an earlier one of the same
//! direction), after a random latency, so traffic of different links interleaves freely.
//! Injected faults on a link: a delay (which holds back everything behind it, as TCP would), a
//! duplicate delivered right after the original, or a lost packet, which on TCP means the
//! connection broke: both ends see it close (a worker then exits, a nanny reconnects).
//!
//! Fetches (worker→peer and client→worker) are independent connections: the request reaches
//! the peer's data server after a latency and the reply comes back after another. A dead peer
//! refuses the connection, a vanished or frozen one does not answer, and the requester gives
//! up after `fetch_timeout`. Client↔scheduler links are ordered and never faulted: the client
//! is not under test.
use super::{Death, Ev, LifeId, LifeState, Sim};
use crate::trace::{Msg, Node, What};
use bytes::Bytes;
use rand::Rng;
use rusk_core::worker;
use rusk_proto::msg::{ClientToScheduler, SchedulerToClient, SchedulerToWorker, WorkerToScheduler};
use rusk_proto::{ClientId, GraphId, TaskRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Latency of one packet, in microseconds: a LAN with some jitter.
const LATENCY_US_MIN: u64 = 200;
const LATENCY_US_MAX: u64 = 3_000;
/// Extra latency of a delayed packet, in milliseconds: up to about half the TTL, so some
/// delays alone make the scheduler drop a worker.
const DELAY_MS_MIN: u64 = 20;
const DELAY_MS_MAX: u64 = 800;

#[derive(Default)]
pub(crate) struct Net {
    pub(crate) fetches: BTreeMap<u64, Fetch>,
    next_fetch: u64,
    client_last_to_sched: BTreeMap<ClientId, Duration>,
    client_last_to_client: BTreeMap<ClientId, Duration>,
}

/// One fetch connection.
pub(crate) struct Fetch {
    pub(crate) requester: Requester,
    pub(crate) peer: Arc<str>,
    pub(crate) tasks: Vec<TaskRef>,
    /// The requester has seen an outcome (data, refusal or timeout).
    pub(crate) resolved: bool,
    /// That outcome was a reply (later copies of it are duplicates).
    replied: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Requester {
    Worker(LifeId),
    Client {
        graph: GraphId,
        output: usize,
    },
    /// A shared-keys client fetching the value of `task`.
    Shared {
        client: ClientId,
        task: TaskRef,
    },
}

enum PacketFault {
    None,
    Drop,
    Duplicate,
    Delay(Duration),
}

impl Sim {
    pub(crate) fn latency(&mut self) -> Duration {
        Duration::from_micros(self.rng.gen_range(LATENCY_US_MIN..=LATENCY_US_MAX))
    }

    fn packet_fault(&mut self, carries_task_done: bool) -> PacketFault {
        if self.dup_next_task_done && carries_task_done {
            self.dup_next_task_done = false;
            return PacketFault::Duplicate;
        }
        if !self.faults_active() {
            return PacketFault::None;
        }
        let p = self.plan.clone();
        let r: f64 = self.rng.gen();
        if r < p.p_drop {
            PacketFault::Drop
        } else if r < p.p_drop + p.p_dup {
            PacketFault::Duplicate
        } else if r < p.p_drop + p.p_dup + p.p_delay {
            PacketFault::Delay(Duration::from_millis(
                self.rng.gen_range(DELAY_MS_MIN..=DELAY_MS_MAX),
            ))
        } else {
            PacketFault::None
        }
    }

    /// When a packet sent now on an ordered stream whose last packet arrives at `last` arrives.
    pub(crate) fn arrival(&mut self, extra: Duration, last: Duration) -> Duration {
        (self.now + self.latency() + extra).max(last)
    }

    /// Like [`Sim::arrival`] for a worker link, which `reorder_within_links` unorders.
    fn link_arrival(&mut self, extra: Duration, last: Duration) -> Duration {
        if self.config.reorder_within_links {
            self.now + self.latency() + extra
        } else {
            self.arrival(extra, last)
        }
    }

    /// Draw a fault for a packet of a link; returns the extra delay and whether to send it
    /// twice, or `None` when the packet is lost (and with it the connection).
    pub(crate) fn draw_packet_fault(&mut self) -> Option<(Duration, bool)> {
        self.counted_fault(false)
    }

    fn counted_fault(&mut self, carries_task_done: bool) -> Option<(Duration, bool)> {
        match self.packet_fault(carries_task_done) {
            PacketFault::None => Some((Duration::ZERO, false)),
            PacketFault::Delay(d) => {
                self.counts.delays += 1;
                Some((d, false))
            }
            PacketFault::Duplicate => {
                self.counts.duplicates += 1;
                Some((Duration::ZERO, true))
            }
            PacketFault::Drop => None,
        }
    }

    /// Apply a packet fault to a worker link; `None` when the packet was lost and with it the
    /// connection.
    fn faulted(&mut self, life: LifeId, carries_task_done: bool) -> Option<(Duration, bool)> {
        let r = self.counted_fault(carries_task_done);
        if r.is_none() {
            self.counts.link_breaks += 1;
            let node = self.lives[life].node();
            self.note(What::Note(format!(
                "fault: packet lost, {node}'s connection breaks"
            )));
            self.break_link(life);
        }
        r
    }

    pub(crate) fn send_to_sched(&mut self, life: LifeId, batch: Vec<WorkerToScheduler>) {
        if !self.lives[life].link_open {
            return;
        }
        let carries_done = batch
            .iter()
            .any(|m| matches!(m, WorkerToScheduler::TaskDone { .. }));
        let Some((extra, twice)) = self.faulted(life, carries_done) else {
            return;
        };
        let (last, link) = (self.lives[life].last_to_sched, self.lives[life].link);
        let at = self.link_arrival(extra, last);
        self.lives[life].last_to_sched = at;
        if twice {
            self.push(
                at,
                Ev::ToSched {
                    life,
                    link,
                    batch: batch.clone(),
                },
            );
        }
        self.push(at, Ev::ToSched { life, link, batch });
    }

    pub(crate) fn send_to_worker(&mut self, life: LifeId, batch: Vec<SchedulerToWorker>) {
        if !self.lives[life].link_open {
            return;
        }
        let Some((extra, twice)) = self.faulted(life, false) else {
            return;
        };
        let (last, link) = (self.lives[life].last_to_worker, self.lives[life].link);
        let at = self.link_arrival(extra, last);
        self.lives[life].last_to_worker = at;
        if twice {
            self.push(
                at,
                Ev::ToWorker {
                    life,
                    link,
                    batch: batch.clone(),
                },
            );
        }
        self.push(at, Ev::ToWorker { life, link, batch });
    }

    pub(crate) fn on_to_worker(
        &mut self,
        life: LifeId,
        link: u32,
        batch: Vec<SchedulerToWorker>,
    ) -> Result<(), crate::error::FailureKind> {
        let l = &self.lives[life];
        // After a scheduler crash, what it sent before dying still arrives (`draining`); what
        // an earlier connection carried never reaches a later one (the worker's shell drops
        // an old connection's reads).
        if !(l.link_open || l.draining) || l.state != LifeState::Running || link != l.link {
            return Ok(());
        }
        self.note(What::Deliver {
            from: Node::Scheduler,
            to: l.node(),
            inc: l.incarnation,
            msgs: batch.iter().map(Msg::of_scheduler).collect(),
        });
        let events = batch
            .into_iter()
            .map(worker::Event::FromScheduler)
            .collect();
        self.worker_handle(life, events)
    }

    // === client links ===

    pub(crate) fn client_send(
        &mut self,
        client: ClientId,
        msg: ClientToScheduler,
        model: Option<usize>,
    ) {
        let Some(epoch) = self
            .clients
            .get(&client)
            .map_or(Some(self.crash.epoch), |c| c.connected.then_some(c.epoch))
        else {
            // No connection (the scheduler died): it reconnects and claims its graphs then.
            return;
        };
        let at = self.client_arrival(client);
        self.push(
            at,
            Ev::ClientToSched {
                client,
                msg,
                model,
                epoch,
            },
        );
    }

    /// The client closes its connection: the scheduler sees it leave after everything it
    /// sent before.
    pub(crate) fn client_leave(&mut self, client: ClientId) {
        let at = self.client_arrival(client);
        self.push(at, Ev::ClientLeaves { client });
    }

    /// When what `client` sends now reaches the scheduler (its link is ordered).
    fn client_arrival(&mut self, client: ClientId) -> Duration {
        let last = self
            .net
            .client_last_to_sched
            .get(&client)
            .copied()
            .unwrap_or_default();
        let at = self.arrival(Duration::ZERO, last);
        self.net.client_last_to_sched.insert(client, at);
        at
    }

    /// When the last message the scheduler sent to `client` arrives.
    pub(crate) fn last_to_client(&self, client: ClientId) -> Duration {
        self.net
            .client_last_to_client
            .get(&client)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn send_to_client(&mut self, client: ClientId, msg: SchedulerToClient) {
        let last = self
            .net
            .client_last_to_client
            .get(&client)
            .copied()
            .unwrap_or_default();
        let at = self.arrival(Duration::ZERO, last);
        self.net.client_last_to_client.insert(client, at);
        self.push(at, Ev::ToClient { client, msg });
    }

    // === fetches ===

    pub(crate) fn start_fetch(
        &mut self,
        requester: Requester,
        peer: Arc<str>,
        tasks: Vec<TaskRef>,
    ) {
        let id = self.net.next_fetch;
        self.net.next_fetch += 1;
        let by = self.requester_node(requester);
        self.note(What::Fetch {
            id,
            by,
            peer: peer.clone(),
            what: "start",
        });
        let target = self.addresses.get(&peer).map(|&l| self.lives[l].state);
        self.net.fetches.insert(
            id,
            Fetch {
                requester,
                peer,
                tasks,
                resolved: false,
                replied: false,
            },
        );
        let lat = self.latency();
        let timeout = self.now + self.config.fetch_timeout;
        self.push(timeout, Ev::FetchTimeout { fetch: id });
        if self.faults_active() && self.rng.gen_bool(self.plan.p_fetch_fail) {
            self.counts.fetch_failures += 1;
            self.push(self.now + lat, Ev::FetchRefused { fetch: id });
            return;
        }
        match target {
            Some(LifeState::Running | LifeState::Frozen) => {
                self.push(self.now + lat, Ev::DataRequest { fetch: id })
            }
            // A vanished host answers nothing; the requester times out.
            Some(LifeState::Gone(Death::Silent)) => {}
            Some(LifeState::Gone(_)) | None => {
                self.push(self.now + lat * 2, Ev::FetchRefused { fetch: id })
            }
        }
    }

    fn requester_node(&self, r: Requester) -> Node {
        match r {
            Requester::Worker(l) => self.lives[l].node(),
            Requester::Client { .. } => Node::Client(super::MAIN_CLIENT.0),
            Requester::Shared { client, .. } => Node::Client(client.0),
        }
    }

    /// A request reaches the peer's data server (a frozen peer's waits in its inbox).
    pub(crate) fn on_data_request(&mut self, fetch: u64) -> Result<(), crate::error::FailureKind> {
        let Some(f) = self.net.fetches.get(&fetch) else {
            return Ok(());
        };
        let tasks = f.tasks.clone();
        let target = self.addresses.get(&f.peer).copied();
        match target.map(|l| (l, self.lives[l].state)) {
            Some((life, LifeState::Running)) => self.worker_handle(
                life,
                vec![worker::Event::PeerRequest {
                    request: fetch,
                    tasks,
                }],
            ),
            Some((_, LifeState::Frozen)) => unreachable!("routed to the frozen worker's inbox"),
            Some((_, LifeState::Gone(Death::Silent))) => Ok(()),
            Some((_, LifeState::Gone(_))) | None => {
                let lat = self.latency();
                self.push(self.now + lat, Ev::FetchRefused { fetch });
                Ok(())
            }
        }
    }

    /// The peer's data server answered (`Command::ReplyPeer`).
    pub(crate) fn reply_fetch(&mut self, fetch: u64, items: Vec<(TaskRef, Option<Bytes>)>) {
        let lat = self.latency();
        if self.faults_active() && self.rng.gen_bool(self.plan.p_dup) {
            self.counts.duplicates += 1;
            let lat2 = self.latency();
            self.push(
                self.now + lat2,
                Ev::DataReply {
                    fetch,
                    items: items.clone(),
                    duplicate: true,
                },
            );
        }
        self.push(
            self.now + lat,
            Ev::DataReply {
                fetch,
                items,
                duplicate: false,
            },
        );
    }

    /// A fetch's outcome reaches the requester: data (`items`), or failure (`None`: refused
    /// or timed out). The first outcome counts; a second copy of a reply is delivered again
    /// to a worker, whose core must ignore it.
    pub(crate) fn on_fetch_outcome(
        &mut self,
        fetch: u64,
        items: Option<Vec<(TaskRef, Option<Bytes>)>>,
        duplicate: bool,
    ) -> Result<(), crate::error::FailureKind> {
        let Some(f) = self.net.fetches.get_mut(&fetch) else {
            return Ok(());
        };
        let first = !f.resolved;
        let again = f.resolved && f.replied && items.is_some();
        if !first && !again {
            return Ok(());
        }
        f.resolved = true;
        f.replied |= items.is_some();
        let (requester, peer, tasks) = (f.requester, f.peer.clone(), f.tasks.clone());
        let by = self.requester_node(requester);
        let what = match (&items, first) {
            (Some(_), true) if duplicate => "reply (the duplicate first)",
            (Some(_), true) => "reply",
            (Some(_), false) => "duplicate reply",
            (None, _) => "failed",
        };
        self.note(What::Fetch {
            id: fetch,
            by,
            peer: peer.clone(),
            what,
        });
        match requester {
            Requester::Worker(life) => {
                if self.lives[life].state != LifeState::Running {
                    return Ok(());
                }
                let ev = match items {
                    Some(items) => worker::Event::Fetched { peer, items },
                    None => worker::Event::FetchFailed { peer, tasks },
                };
                self.worker_handle(life, vec![ev])
            }
            Requester::Client { graph, output } => {
                if !first {
                    return Ok(());
                }
                let data = items.and_then(|items| {
                    items
                        .into_iter()
                        .find(|(t, _)| tasks.contains(t))
                        .and_then(|(_, d)| d)
                });
                self.client_fetch_done(graph, output, data)
            }
            Requester::Shared { task, .. } => {
                if !first {
                    return Ok(());
                }
                let data = items.and_then(|items| {
                    items
                        .into_iter()
                        .find(|(t, _)| *t == task)
                        .and_then(|(_, d)| d)
                });
                self.shared_fetch_done(task, data)
            }
        }
    }
}
