//! The nanny↔scheduler link: a nanny's connection (registration, keepalives, messages both
//! ways, breaks and their notice), and stale operator requests injected into it.
use super::*;

impl Sim {
    pub(super) fn nanny_send(&mut self, nanny: usize, msgs: Vec<NannyToScheduler>) {
        let n = &mut self.nannies[nanny];
        match n.conn {
            Some(c) if self.nanny_conns[&c].open => self.send_nanny_to_sched(c, msgs),
            Some(_) => {} // written into a connection that broke: lost
            None => {
                n.queued.extend(msgs);
                while n.queued.len() > QUEUED_MAX {
                    n.queued.pop_front();
                }
            }
        }
    }

    pub(crate) fn on_nanny_connect(&mut self, nanny: usize) {
        let n = &self.nannies[nanny];
        if !n.alive || n.conn.is_some() {
            return;
        }
        if self.crash.down {
            // Refused: no scheduler listens. Back off and try again.
            let n = &mut self.nannies[nanny];
            let retry = n.retry;
            n.retry = (n.retry * 2).min(RECONNECT_MAX);
            self.push(self.now + retry, Ev::NannyConnect { nanny });
            return;
        }
        let conn = NannyId(self.next_nanny_conn);
        self.next_nanny_conn += 1;
        self.nanny_conns.insert(
            conn,
            NannyConn {
                nanny,
                open: true,
                flush_to_sched: false,
                joined: false,
                left: false,
                last_to_sched: Duration::ZERO,
                last_to_nanny: Duration::ZERO,
            },
        );
        let host = &self.hosts[n.host];
        let info = NannyInfo {
            name: host.name.to_string(),
            host: format!("host-{}", host.name),
            pid: n.pid,
            nworkers: host.slots.len() as u32,
            nthreads: self.config.threads_max,
        };
        let n = &mut self.nannies[nanny];
        n.conn = Some(conn);
        n.retry = RECONNECT_MIN;
        let mut hello = vec![
            NannyToScheduler::Register(info),
            NannyToScheduler::Slots(n.core.statuses().iter().map(slot_report).collect()),
        ];
        hello.extend(n.queued.drain(..));
        let name = self.nanny_name(nanny);
        self.note(What::Note(format!("{name} connects as {conn}")));
        self.send_nanny_to_sched(conn, hello);
    }

    fn send_nanny_to_sched(&mut self, conn: NannyId, batch: Vec<NannyToScheduler>) {
        let Some((extra, twice)) = self.draw_packet_fault() else {
            self.counts.nanny_link_breaks += 1;
            self.note(What::Note(format!("fault: packet lost, {conn} breaks")));
            self.break_nanny_link(conn);
            return;
        };
        let last = self.nanny_conns[&conn].last_to_sched;
        let at = self.arrival(extra, last);
        self.nanny_conns
            .get_mut(&conn)
            .expect("exists")
            .last_to_sched = at;
        if twice {
            let batch = batch.clone();
            self.push(at, Ev::NannyToSched { conn, batch });
        }
        self.push(at, Ev::NannyToSched { conn, batch });
    }

    /// Scheduler → nanny, on the connection the scheduler named.
    pub(crate) fn send_sched_to_nanny(&mut self, conn: NannyId, batch: Vec<SchedulerToNanny>) {
        self.send_sched_to_nanny_after(conn, batch, Duration::ZERO);
    }

    fn send_sched_to_nanny_after(
        &mut self,
        conn: NannyId,
        batch: Vec<SchedulerToNanny>,
        late: Duration,
    ) {
        if !self.nanny_conns.get(&conn).is_some_and(|c| c.open) {
            return;
        }
        let Some((extra, twice)) = self.draw_packet_fault() else {
            self.counts.nanny_link_breaks += 1;
            self.note(What::Note(format!("fault: packet lost, {conn} breaks")));
            self.break_nanny_link(conn);
            return;
        };
        let last = self.nanny_conns[&conn].last_to_nanny;
        let at = self.arrival(extra + late, last);
        self.nanny_conns
            .get_mut(&conn)
            .expect("exists")
            .last_to_nanny = at;
        if twice {
            let batch = batch.clone();
            self.push(at, Ev::ToNanny { conn, batch });
        }
        self.push(at, Ev::ToNanny { conn, batch });
    }

    /// The connection breaks while both ends live: each end notices after a while.
    pub(crate) fn break_nanny_link(&mut self, conn: NannyId) {
        let Some(c) = self.nanny_conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        c.flush_to_sched = false;
        let d1 = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
        let d2 = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
        self.push(
            self.now + d1,
            Ev::NannyLinkClosed {
                conn,
                reason: "connection broke",
            },
        );
        self.push(self.now + d2, Ev::NannyLinkDown { conn });
    }

    /// The scheduler's shell sees a nanny connection close.
    pub(crate) fn on_nanny_link_closed(
        &mut self,
        conn: NannyId,
        reason: &'static str,
    ) -> Result<(), FailureKind> {
        let c = self.nanny_conns.get_mut(&conn).expect("exists");
        if c.left {
            return Ok(());
        }
        c.left = true;
        if !c.joined {
            return Ok(()); // never registered: the scheduler never knew it
        }
        self.note(What::Note(format!(
            "sched sees nanny {conn} leave: {reason}"
        )));
        self.sched_step(rusk_core::scheduler::Event::NannyLeft {
            nanny: conn,
            reason: reason.to_string(),
        })
    }

    /// The nanny notices its connection is gone and tries again after a back-off.
    pub(crate) fn on_nanny_link_down(&mut self, conn: NannyId) {
        let nanny = self.nanny_conns[&conn].nanny;
        let n = &mut self.nannies[nanny];
        if !n.alive || n.conn != Some(conn) {
            return;
        }
        n.conn = None;
        let retry = n.retry;
        n.retry = (n.retry * 2).min(RECONNECT_MAX);
        self.push(self.now + retry, Ev::NannyConnect { nanny });
    }

    /// A nanny packet reaches the scheduler's shell: the first message of a connection is its
    /// `Register`, the rest go to the core.
    pub(crate) fn on_nanny_to_sched(
        &mut self,
        conn: NannyId,
        batch: Vec<NannyToScheduler>,
    ) -> Result<(), FailureKind> {
        let c = &self.nanny_conns[&conn];
        if c.left || !(c.open || c.flush_to_sched) {
            return Ok(()); // lost with the connection
        }
        let nanny = c.nanny;
        let name = self.nanny_name(nanny);
        self.note(What::Note(format!(
            "{name} -> sched [{conn}]: {} messages",
            batch.len()
        )));
        for msg in batch {
            let joined = self.nanny_conns[&conn].joined;
            match msg {
                NannyToScheduler::Register(info) if !joined => {
                    self.nanny_conns.get_mut(&conn).expect("exists").joined = true;
                    self.sched_step(rusk_core::scheduler::Event::NannyJoined {
                        nanny: conn,
                        info,
                    })?;
                }
                NannyToScheduler::Register(_) => {} // a duplicate: the shell ignores it
                _ if !joined => {}
                msg => {
                    self.sched_step(rusk_core::scheduler::Event::NannyMessage { nanny: conn, msg })?
                }
            }
        }
        Ok(())
    }

    /// A scheduler packet reaches a nanny (over its current connection).
    pub(crate) fn on_to_nanny(
        &mut self,
        conn: NannyId,
        batch: Vec<SchedulerToNanny>,
    ) -> Result<(), FailureKind> {
        let c = &self.nanny_conns[&conn];
        let nanny = c.nanny;
        if !c.open || !self.nannies[nanny].alive || self.nannies[nanny].conn != Some(conn) {
            return Ok(());
        }
        let name = self.nanny_name(nanny);
        self.note(What::Note(format!("sched -> {name} [{conn}]: {batch:?}")));
        let nworkers = self.hosts[self.nannies[nanny].host].slots.len() as u32;
        for msg in batch {
            match msg {
                SchedulerToNanny::Welcome => {}
                SchedulerToNanny::RestartWorker {
                    slot,
                    incarnation,
                    silent_for_ms,
                } => self.nanny_step(
                    nanny,
                    nanny::Event::SchedulerRestart {
                        slot,
                        incarnation: Incarnation(incarnation),
                        silent_for: Duration::from_millis(silent_for_ms),
                    },
                )?,
                SchedulerToNanny::OperatorRestart { slot } => {
                    let slots: Vec<u32> = match slot {
                        Some(s) => vec![s],
                        None => (0..nworkers).collect(),
                    };
                    for slot in slots {
                        self.nanny_step(nanny, nanny::Event::OperatorRestart { slot })?;
                    }
                }
                SchedulerToNanny::Stop => self.nanny_step(nanny, nanny::Event::Shutdown)?,
            }
        }
        Ok(())
    }

    /// A `RestartWorker` for `incarnation` of `slot`, as if the scheduler sent it (late,
    /// perhaps twice): a stale request must change nothing.
    pub(crate) fn inject_stale_restart(
        &mut self,
        slot: u32,
        incarnation: Incarnation,
        late: Duration,
    ) {
        let Some(sup) = self.slots[slot as usize].sup else {
            return;
        };
        let Some(conn) = self.hosts[sup.host]
            .nanny
            .and_then(|n| self.nannies[n].conn)
        else {
            return;
        };
        self.counts.stale_restart_requests += 1;
        self.note(What::Note(format!(
            "fault: stale RestartWorker for {incarnation} of {} in {late:?}",
            self.slot_name(slot)
        )));
        let msg = SchedulerToNanny::RestartWorker {
            slot: sup.index,
            incarnation: incarnation.0,
            silent_for_ms: self.rng.gen_range(1_000..=5_000),
        };
        self.send_sched_to_nanny_after(conn, vec![msg], late);
    }
}
