//! The client side: submit a graph, follow its progress, gather its outputs straight from the
//! workers that hold them (the scheduler never carries task data), and query status.
use crate::config::Cluster;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rusk_net::locate::Locator;
use rusk_net::{self as net, Conn};
use rusk_proto::auth::Role;
use rusk_proto::graph::GraphSpec;
use rusk_proto::msg::{
    ClientToScheduler, EventRecord, GraphProgress, OutputResult, OutputState, SchedulerToClient,
    StatusSnapshot,
};
use rusk_proto::{GraphId, TaskRef};
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;

pub struct Client {
    conn: Conn,
    /// Messages received while waiting for something else.
    backlog: VecDeque<SchedulerToClient>,
    creds: net::Credentials,
    address: String,
}

/// How long a client waiting for a graph keeps trying to get back to a scheduler it lost
/// (one restarted from its journal resumes the graph) before it gives up.
pub const SCHEDULER_LOST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The outcome of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Value(Bytes),
    Failed(String),
}

impl Client {
    pub async fn connect(cluster: &Cluster) -> Result<Client> {
        let creds = cluster.credentials();
        let conn = net::connect(&cluster.address, &creds, Role::Client)
            .await
            .with_context(|| format!("cannot reach the scheduler at {}", cluster.address))?;
        Ok(Client {
            conn,
            backlog: VecDeque::new(),
            creds,
            address: cluster.address.clone(),
        })
    }

    /// Connect again after the scheduler connection dropped, with back-off, for at most
    /// [`SCHEDULER_LOST_TIMEOUT`]. A refusal (another cluster now) ends it at once.
    async fn reconnect(&mut self, why: anyhow::Error) -> Result<()> {
        let since = std::time::Instant::now();
        tracing::warn!(error = %format!("{why:#}"), "lost the scheduler; reconnecting");
        let conn = net::reconnect::reconnect(
            &self.address,
            &self.creds,
            Role::Client,
            SCHEDULER_LOST_TIMEOUT,
            |_, _| {},
        )
        .await
        .map_err(|e| anyhow!(e).context(format!("lost the scheduler ({why:#})")))?;
        self.conn = conn;
        self.backlog.clear();
        tracing::info!(
            away_s = since.elapsed().as_secs_f64(),
            "reconnected to the scheduler"
        );
        Ok(())
    }

    async fn next(&mut self) -> Result<SchedulerToClient> {
        if let Some(m) = self.backlog.pop_front() {
            return Ok(m);
        }
        let batch: Vec<SchedulerToClient> = net::recv(&mut self.conn)
            .await?
            .ok_or_else(|| anyhow!("the scheduler closed the connection"))?;
        self.backlog.extend(batch);
        self.backlog
            .pop_front()
            .ok_or_else(|| anyhow!("empty message batch from the scheduler"))
    }

    async fn send(&mut self, msg: ClientToScheduler) -> Result<()> {
        net::send(&mut self.conn, &vec![msg]).await
    }

    /// Submit a graph; returns its id and task count, or the scheduler's validation error.
    pub async fn submit(&mut self, graph: GraphSpec, detach: bool) -> Result<(GraphId, u64)> {
        self.send(ClientToScheduler::Submit { graph, detach })
            .await?;
        loop {
            match self.next().await? {
                SchedulerToClient::Submitted { graph, tasks } => return Ok((graph, tasks)),
                SchedulerToClient::Rejected { error } => bail!("graph rejected: {error}"),
                SchedulerToClient::Error { message } => bail!("{message}"),
                _ => {}
            }
        }
    }

    /// Wait until every output is finished, then fetch them. `progress` is called with each
    /// progress report.
    pub async fn wait(
        &mut self,
        graph: GraphId,
        mut progress: impl FnMut(&GraphProgress),
    ) -> Result<Vec<(String, Output)>> {
        let mut locator = Locator::new();
        loop {
            let outputs = loop {
                let msg = match self.next().await {
                    Ok(m) => m,
                    Err(e) => {
                        // A scheduler restarted from its journal still has the graph: claim
                        // it again, and it reports the outputs once they are finished.
                        self.reconnect(e).await?;
                        self.send(ClientToScheduler::LocateOutputs { graph })
                            .await?;
                        continue;
                    }
                };
                match msg {
                    SchedulerToClient::Progress(p) if p.graph == graph.0 => progress(&p),
                    SchedulerToClient::GraphFinished { graph: g, outputs } if g == graph => {
                        break outputs
                    }
                    SchedulerToClient::Error { message } => bail!("{message}"),
                    _ => {}
                }
            };
            let e = match self.gather(&outputs).await {
                Ok(values) => return Ok(values),
                Err(e) => e,
            };
            let delay = match locator.failed() {
                Ok(delay) => delay,
                Err(gave_up) => return Err(e.context(format!("outputs {gave_up}"))),
            };
            tracing::warn!(error = %format!("{e:#}"), attempt = locator.attempts(), "fetching outputs failed; asking the scheduler again");
            tokio::time::sleep(delay).await;
            self.send(ClientToScheduler::LocateOutputs { graph })
                .await?;
        }
    }

    /// Fetch the ready outputs from their holders, one request per holder.
    async fn gather(&self, outputs: &[OutputState]) -> Result<Vec<(String, Output)>> {
        let mut by_holder: BTreeMap<&str, Vec<TaskRef>> = BTreeMap::new();
        for o in outputs {
            if let OutputResult::Ready { task, holder, .. } = &o.result {
                by_holder.entry(holder.as_str()).or_default().push(*task);
            }
        }
        let mut fetched: BTreeMap<TaskRef, Bytes> = BTreeMap::new();
        for (holder, tasks) in by_holder {
            let data = fetch_from(holder, &self.creds, &tasks).await?;
            for (t, d) in data {
                let d = d.ok_or_else(|| anyhow!("worker {holder} no longer holds output {t}"))?;
                fetched.insert(t, d);
            }
        }
        outputs
            .iter()
            .map(|o| {
                let out = match &o.result {
                    OutputResult::Ready { task, .. } => Output::Value(
                        fetched
                            .get(task)
                            .cloned()
                            .ok_or_else(|| anyhow!("output {} missing", o.key))?,
                    ),
                    OutputResult::Failed { error, .. } => Output::Failed(error.clone()),
                };
                Ok((o.key.clone(), out))
            })
            .collect()
    }

    pub async fn release(&mut self, graph: GraphId) -> Result<()> {
        self.send(ClientToScheduler::ReleaseGraph { graph }).await
    }

    /// Recovery events with sequence number >= `since`; returns them and the next `since`.
    pub async fn events(&mut self, since: u64) -> Result<(Vec<EventRecord>, u64)> {
        self.send(ClientToScheduler::Events { since }).await?;
        loop {
            match self.next().await? {
                SchedulerToClient::Events { records, next } => return Ok((records, next)),
                SchedulerToClient::Error { message } => bail!("{message}"),
                _ => {}
            }
        }
    }

    /// An operator request (`Restart`, `StopNanny`); returns the scheduler's answer.
    pub async fn operator(&mut self, msg: ClientToScheduler) -> Result<String> {
        self.send(msg).await?;
        loop {
            match self.next().await? {
                SchedulerToClient::Done { message } => return Ok(message),
                SchedulerToClient::Error { message } => bail!("{message}"),
                _ => {}
            }
        }
    }

    pub async fn status(&mut self) -> Result<StatusSnapshot> {
        self.send(ClientToScheduler::Status).await?;
        loop {
            if let SchedulerToClient::Status(s) = self.next().await? {
                return Ok(*s);
            }
        }
    }
}

/// Fetch results from one worker's data server.
pub async fn fetch_from(
    address: &str,
    creds: &net::Credentials,
    tasks: &[TaskRef],
) -> Result<Vec<(TaskRef, Option<Bytes>)>> {
    let mut conn = net::connect(address, creds, Role::Peer).await?;
    let mut items = Vec::with_capacity(tasks.len());
    for (n, chunk) in tasks
        .chunks(rusk_net::transfer::TRANSFER_ITEMS_MAX)
        .enumerate()
    {
        items.extend(rusk_net::transfer::fetch_values(&mut conn, n as u64 + 1, chunk).await?);
    }
    Ok(items)
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
pub struct ProgressBar {
    enabled: bool,
    drawn: bool,
}

impl ProgressBar {
    pub fn new() -> ProgressBar {
        ProgressBar {
            enabled: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    pub fn update(&mut self, p: &GraphProgress) {
        if !self.enabled || p.total == 0 {
            return;
        }
        const WIDTH: u64 = 40;
        let filled = (p.done + p.erred) * WIDTH / p.total;
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '.' })
            .collect();
        let erred = if p.erred > 0 {
            format!(", {} erred", p.erred)
        } else {
            String::new()
        };
        eprint!("\r[{bar}] {}/{} tasks{erred}", p.done, p.total);
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}
