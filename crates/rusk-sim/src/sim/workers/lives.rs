//! Worker processes' lives: started (by a nanny or an outside supervisor), ended (a crash, a
//! signal, a vanished host, a killer task), cut off from the scheduler (a broken link, a drop:
//! the process exits, or with a `--scheduler-lost-timeout` keeps its results and reconnects,
//! `Sim::on_sched_lost` in `sim/crash.rs`), frozen and thawed. What a running life does is in
//! the parent module.
use super::*;

impl Sim {
    /// The outside supervisor restarts a slot without a nanny.
    pub(crate) fn on_restart(&mut self, slot: u32) -> Result<(), FailureKind> {
        let s = &self.slots[slot as usize];
        if s.life.is_some() || s.sup.is_some() {
            return Ok(());
        }
        self.start_process(slot, None).map(|_| ())
    }

    /// A new process of `slot` (started by nanny `parent`, if any): a new core connects and
    /// registers.
    pub(crate) fn start_process(
        &mut self,
        slot: u32,
        parent: Option<usize>,
    ) -> Result<LifeId, FailureKind> {
        let s = &mut self.slots[slot as usize];
        let number = s.lives;
        s.lives += 1;
        let sup = s.sup;
        let reuse = s.last_address.clone().filter(|_| self.rng.gen_bool(0.4));
        let address = reuse.unwrap_or_else(|| Arc::from(format!("w{slot}:{}", 7000 + number)));
        let threads = self.rng.gen_range(1..=self.config.threads_max.max(1));
        let pid = self.next_pid;
        self.next_pid += 1;
        let (name, host, nanny, nanny_slot) = match sup {
            Some(sup) => {
                let nanny = self.hosts[sup.host].name.to_string();
                (
                    format!("{nanny}/{}", sup.index),
                    format!("host-{nanny}"),
                    Some(nanny),
                    Some(sup.index),
                )
            }
            None => (format!("w{slot}"), format!("host{slot}"), None, None),
        };
        let info = WorkerInfo {
            name,
            host,
            pid,
            nthreads: threads,
            data_address: address.to_string(),
            nanny,
            slot: nanny_slot,
            // GPU = 1 or 2 by slot: every task's ask fits, and the amounts bound concurrency.
            resources: [(
                crate::workload::GPU_RESOURCE.to_string(),
                crate::workload::GPU_DECLARED_MIN + (slot % 2) as f64,
            )]
            .into_iter()
            .collect(),
            held: Vec::new(),
            running: Vec::new(),
        };
        let mut core = WorkerCore::new(WorkerConfig {
            info,
            dispatched_per_thread_max: self.rng.gen_range(1..=3),
            heartbeat_interval: self.config.heartbeat_interval,
            // No memory limit: the simulated store never spills (spilling is covered by the
            // store's own unit tests and the end-to-end tests).
            memory: rusk_core::memory::MemoryConfig::default(),
        });
        let start = core.start(self.now);
        let life = self.lives.len();
        self.lives.push(Life {
            slot,
            number,
            pid,
            parent,
            state: LifeState::Running,
            core: Some(core),
            inbox: VecDeque::new(),
            tick_at: None,
            threads,
            threads_busy: 0,
            exec_queue: VecDeque::new(),
            exit_on_thaw: None,
            link: 0,
            lost_on_thaw: false,
            ping_at: None,
            last_ping: self.now,
            prev_ping: self.now,
            told_registered: false,
            incarnation: None,
            incarnations: Vec::new(),
            first_told: None,
            last_told: None,
            link_open: true,
            flush_to_sched: false,
            last_to_sched: Duration::ZERO,
            last_to_worker: Duration::ZERO,
            sched_forgot: false,
            draining: false,
            sched_epoch: self.crash.epoch,
            retry: Duration::ZERO,
        });
        self.pids.insert(pid, life);
        let s = &mut self.slots[slot as usize];
        s.life = Some(life);
        s.last_address = Some(address.clone());
        self.addresses.insert(address.clone(), life);
        self.counts.restarts += 1;
        let node = self.lives[life].node();
        self.note(What::Note(format!(
            "{node} (pid {pid}) starts at {address} with {threads} threads"
        )));
        if self.crash.down {
            // No scheduler listens: the shell retries its connection with back-off, and
            // registers once it gets through (`WorkerReconnect`).
            let l = &mut self.lives[life];
            l.link_open = false;
            l.retry = Duration::from_millis(100);
            let at = self.now + l.retry;
            self.push(at, Ev::WorkerReconnect { life });
        } else {
            self.carry_out_worker(life, start)?;
        }
        self.reschedule_worker_tick(life);
        self.schedule_ping(life, self.now);
        Ok(life)
    }

    /// End a process now. The kernel closes its connection (unless its host vanished), so the
    /// scheduler sees it leave a little later; its nanny's `wait()` returns at once, or, for a
    /// slot without a nanny, the outside supervisor restarts it after a while.
    pub(crate) fn kill_life(&mut self, life: LifeId, death: Death) {
        if !self.lives[life].is_alive() {
            return;
        }
        let close_delay = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
        let status = death.exit_status(&mut self.rng);
        let now = self.now;
        let l = &mut self.lives[life];
        if l.link_open {
            l.link_open = false;
            if death == Death::Silent {
                l.flush_to_sched = false;
            } else {
                // The kernel flushes what was sent, then closes.
                l.flush_to_sched = true;
                let at = (now + close_delay).max(l.last_to_sched);
                self.push(
                    at,
                    Ev::LinkClosed {
                        life,
                        inc: self.lives[life].incarnation,
                        reason: "connection reset (process died)",
                    },
                );
            }
        }
        let l = &mut self.lives[life];
        l.state = LifeState::Gone(death);
        l.core = None;
        l.inbox.clear();
        l.tick_at = None;
        l.ping_at = None;
        l.exec_queue.clear();
        l.threads_busy = 0;
        let (node, slot, pid, parent) = (l.node(), l.slot, l.pid, l.parent);
        self.exec.jobs.retain(|_, j| j.life != life);
        if self.slots[slot as usize].life == Some(life) {
            self.slots[slot as usize].life = None;
        }
        self.note(What::Note(format!("{node} (pid {pid}) is gone: {death:?}")));
        match (self.slots[slot as usize].sup, parent) {
            (Some(sup), Some(nanny)) => {
                if let Some(status) = status {
                    self.push(
                        now,
                        Ev::NannyEvent {
                            nanny,
                            ev: nanny::Event::Exited {
                                slot: sup.index,
                                pid,
                                status,
                            },
                        },
                    );
                }
            }
            _ => {
                let at = now
                    + Duration::from_millis(self.rng.gen_range(RESTART_MS_MIN..=RESTART_MS_MAX));
                self.push(at, Ev::Restart { slot });
            }
        }
    }

    /// The connection to the scheduler broke while both ends live (a lost packet, a
    /// partition): both ends see it close; the worker exits when it notices.
    pub(crate) fn break_link(&mut self, life: LifeId) {
        let l = &mut self.lives[life];
        if !l.link_open || !l.is_alive() {
            return;
        }
        l.link_open = false;
        l.flush_to_sched = false;
        let close_delay = Duration::from_micros(self.rng.gen_range(1_000..=50_000));
        self.push(
            self.now + close_delay,
            Ev::LinkClosed {
                life,
                inc: self.lives[life].incarnation,
                reason: "connection broke",
            },
        );
        self.notice_link_loss(life, Death::LinkBroke);
    }

    /// The scheduler said `DropWorker`: it closes the connection; the process (frozen or not)
    /// exits when it notices.
    pub(crate) fn on_drop_worker(&mut self, life: LifeId) {
        let late = self.rng.gen_bool(self.config.late_delivery_after_drop);
        let l = &mut self.lives[life];
        l.sched_forgot = true;
        if l.link_open {
            l.link_open = false;
            l.flush_to_sched = late;
            self.notice_link_loss(life, Death::Dropped);
        }
    }

    /// A worker that lost its scheduler exits (`EXIT_CONNECTION_LOST`): shortly if it runs,
    /// when it thaws if it is frozen. With a `--scheduler-lost-timeout` (`workers_reconnect`)
    /// it keeps its results and running tasks and reconnects instead (`on_sched_lost`).
    fn notice_link_loss(&mut self, life: LifeId, death: Death) {
        if self.workers_reconnect {
            let l = &mut self.lives[life];
            match l.state {
                LifeState::Running => {
                    // What the scheduler sent before the close may still arrive.
                    l.draining = true;
                    let epoch = l.sched_epoch;
                    let at =
                        self.now + Duration::from_micros(self.rng.gen_range(0..=NOTICE_US_MAX));
                    self.push(at, Ev::SchedLost { life, epoch });
                }
                LifeState::Frozen => l.lost_on_thaw = true,
                LifeState::Gone(_) => {}
            }
            return;
        }
        match self.lives[life].state {
            LifeState::Running => {
                let at = self.now + Duration::from_micros(self.rng.gen_range(0..=NOTICE_US_MAX));
                self.push(at, Ev::ProcessExit { life, death });
            }
            LifeState::Frozen => {
                self.lives[life].exit_on_thaw.get_or_insert(death);
            }
            LifeState::Gone(_) => {}
        }
    }

    /// SIGTERM: the worker dies of it shortly; a frozen one when it thaws.
    pub(crate) fn terminate(&mut self, life: LifeId) {
        match self.lives[life].state {
            LifeState::Running => {
                let at = self.now + Duration::from_micros(self.rng.gen_range(1..=TERM_US_MAX));
                self.push(
                    at,
                    Ev::ProcessExit {
                        life,
                        death: Death::Terminated,
                    },
                );
            }
            LifeState::Frozen => {
                self.lives[life]
                    .exit_on_thaw
                    .get_or_insert(Death::Terminated);
            }
            LifeState::Gone(_) => {}
        }
    }

    pub(crate) fn freeze_life(&mut self, life: LifeId, d: Duration) {
        assert!(
            d <= Duration::from_millis(crate::workload::FREEZE_MS_MAX),
            "freezes are bounded (time-limited tasks rely on it)"
        );
        let l = &mut self.lives[life];
        if l.state != LifeState::Running {
            return;
        }
        l.state = LifeState::Frozen;
        l.tick_at = None;
        l.ping_at = None;
        let node = l.node();
        self.counts.freezes += 1;
        self.note(What::Note(format!("{node} freezes for {d:?}")));
        self.push(self.now + d, Ev::Thaw { life });
    }

    /// A frozen life resumes: it exits if it lost its connection or got SIGTERM meanwhile,
    /// else it handles everything that reached it, in order.
    pub(crate) fn thaw(&mut self, life: LifeId) -> Result<(), FailureKind> {
        let l = &mut self.lives[life];
        if l.state != LifeState::Frozen {
            return Ok(());
        }
        l.state = LifeState::Running;
        if let Some(death) = l.exit_on_thaw.take() {
            let node = l.node();
            self.note(What::Note(format!("{node} thaws and exits ({death:?})")));
            self.kill_life(life, death);
            return Ok(());
        }
        let inbox = std::mem::take(&mut l.inbox);
        let lost = std::mem::take(&mut l.lost_on_thaw);
        let node = l.node();
        self.note(What::Note(format!(
            "{node} thaws with {} queued events",
            inbox.len()
        )));
        for ev in inbox {
            self.dispatch(ev)?;
        }
        if lost && self.lives[life].state == LifeState::Running {
            // It notices now that its connection closed while it was stopped.
            let l = &mut self.lives[life];
            l.draining = true;
            let epoch = l.sched_epoch;
            self.push(self.now, Ev::SchedLost { life, epoch });
        }
        self.reschedule_worker_tick(life);
        self.schedule_ping(life, self.now);
        Ok(())
    }
}
