//! Task runners: everything that runs task code off the worker's event loop. Builtins run on
//! task threads, `cmd` tasks as child processes (the command runner, `run_command`), Python tasks
//! in the executor pool of `crate::python_exec`.
use super::faults::run_effect;
use super::puts::Puts;
use super::Local;
use crate::python_exec::{PythonOptions, PythonPool, Report};
use bytes::Bytes;
use rusk_core::builtins;
use rusk_proto::graph::{Builtin, TaskKind};
use rusk_proto::msg::TaskError;
use rusk_proto::{AttemptId, TaskRef};
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{error, warn};

/// Bytes of a failed command's stderr quoted in its error.
const STDERR_TAIL_BYTES: usize = 2048;

/// Kill switches of running command tasks.
type RunningCommands = Arc<Mutex<FxHashMap<(TaskRef, AttemptId), oneshot::Sender<()>>>>;

struct Job {
    task: TaskRef,
    attempt: AttemptId,
    op: Builtin,
    args: Vec<String>,
    inputs: Vec<Bytes>,
}

/// Runs tasks off the event loop: builtins on `nthreads` threads, commands as child processes
/// (at most `nthreads` at once), Python tasks in `nthreads` executor processes.
///
/// A builtin thread cannot be killed. When a builtin attempt is abandoned while running (its
/// time limit passed), the thread is retired after that job and a replacement thread takes its
/// place at once, so capacity stays the same. Too many stuck threads means a sick worker: past
/// `ABANDONED_THREADS_MAX` the worker exits and its nanny restarts it.
pub(super) struct Executor {
    jobs: crossbeam_channel::Sender<Job>,
    job_rx: crossbeam_channel::Receiver<Job>,
    pool: Arc<Pool>,
    commands: Arc<Semaphore>,
    fault_injection: bool,
    work_dir: PathBuf,
    local: mpsc::UnboundedSender<Local>,
    running_commands: RunningCommands,
    python: PythonPool,
    puts: Puts,
}

/// Builtin attempts running on task threads, and those whose thread must retire.
#[derive(Default)]
struct Pool {
    running: Mutex<rustc_hash::FxHashSet<(TaskRef, AttemptId)>>,
    retiring: Mutex<rustc_hash::FxHashSet<(TaskRef, AttemptId)>>,
    threads: std::sync::atomic::AtomicU32,
}

/// Stuck task threads tolerated (abandoned builtins still running) before the worker gives up
/// and exits for a restart.
const ABANDONED_THREADS_MAX: usize = 64;

/// Exit code of a worker with too many stuck task threads.
const EXIT_STUCK_THREADS: i32 = 71;

/// How long a task thread waits for "the scheduler knows I started" before running a builtin
/// that may take the process down.
const STARTED_ACK_TIMEOUT: Duration = Duration::from_secs(1);

impl Executor {
    pub(super) fn start(
        nthreads: u32,
        fault_injection: bool,
        work_dir: PathBuf,
        local: mpsc::UnboundedSender<Local>,
        python: PythonOptions,
        puts: Puts,
    ) -> Executor {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<Job>();
        let to_loop = local.clone();
        let python = PythonPool::start(python, nthreads, work_dir.clone(), move |r| {
            let _ = to_loop.send(match r {
                Report::Started { task, attempt } => Local::Started {
                    task,
                    attempt,
                    ack: None,
                },
                Report::Seceded { task, attempt } => Local::Seceded { task, attempt },
                Report::Rejoined { task, attempt } => Local::Rejoined { task, attempt },
                Report::Finished {
                    task,
                    attempt,
                    result,
                } => Local::Finished {
                    task,
                    attempt,
                    result,
                },
                Report::Event(e) => Local::Report(e),
            });
        });
        let e = Executor {
            jobs,
            job_rx,
            pool: Arc::default(),
            commands: Arc::new(Semaphore::new(nthreads.max(1) as usize)),
            fault_injection,
            work_dir,
            local,
            running_commands: Arc::default(),
            python,
            puts,
        };
        for _ in 0..nthreads.max(1) {
            e.spawn_thread();
        }
        e
    }

    fn spawn_thread(&self) {
        let i = self
            .pool
            .threads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (rx, local, pool) = (self.job_rx.clone(), self.local.clone(), self.pool.clone());
        std::thread::Builder::new()
            .name(format!("rusk-task-{i}"))
            .spawn(move || task_thread(rx, local, pool))
            .expect("spawning a task thread");
    }

    pub(super) fn execute(
        &self,
        task: TaskRef,
        attempt: AttemptId,
        kind: Arc<TaskKind>,
        inputs: Vec<Bytes>,
    ) {
        match &*kind {
            TaskKind::Builtin { op, args } => {
                if op.is_fault_injection() && !self.fault_injection {
                    let _ = self.local.send(Local::Finished {
                        task,
                        attempt,
                        result: Err(TaskError {
                            message: format!(
                                "builtin {:?} is for fault injection; this worker was not started with --enable-fault-injection",
                                op.name()
                            ),
                            exit_code: None,
                            detail: None,
                        }),
                    });
                    return;
                }
                // A pure builtin on small inputs takes microseconds: run here, on the event
                // loop, rather than pay two thread hand-offs (on 2 cores those context switches
                // were the largest cost of 100,000 no-ops). Larger inputs go to a task thread,
                // so the loop is never held long.
                let input_bytes: usize = inputs.iter().map(Bytes::len).sum::<usize>()
                    + args.iter().map(String::len).sum::<usize>();
                if input_bytes <= INLINE_BUILTIN_INPUT_MAX {
                    if let Some(result) = builtins::run_pure(*op, args, &inputs) {
                        let _ = self.local.send(Local::Finished {
                            task,
                            attempt,
                            result,
                        });
                        return;
                    }
                }
                let _ = self.jobs.send(Job {
                    task,
                    attempt,
                    op: *op,
                    args: args.clone(),
                    inputs,
                });
            }
            TaskKind::Python { payload } => {
                self.python.execute(task, attempt, payload.clone(), inputs);
            }
            TaskKind::Put { token } => {
                let result = self.puts.take(*token).ok_or_else(|| TaskError {
                    message: format!(
                        "the value scattered to this worker (put {token:032x}) is gone: the \
                         worker restarted since, or the task came more than {:?} after it \
                         (PUT_PENDING_TTL); scattered data has no lineage to recompute it from",
                        super::puts::PUT_PENDING_TTL
                    ),
                    exit_code: None,
                    detail: None,
                });
                let _ = self.local.send(Local::Finished {
                    task,
                    attempt,
                    result,
                });
            }
            TaskKind::Adopt { graph, key } => {
                // The value of another graph's key: the input itself (shared, not copied).
                let result = inputs.into_iter().next().ok_or_else(|| TaskError {
                    message: format!("adopting key {key:?} of graph {graph}: no input given"),
                    exit_code: None,
                    detail: None,
                });
                let _ = self.local.send(Local::Finished {
                    task,
                    attempt,
                    result,
                });
            }
            TaskKind::Cmd { argv, env, cwd } => {
                let (kill_tx, kill_rx) = oneshot::channel();
                self.running_commands
                    .lock()
                    .expect("not poisoned")
                    .insert((task, attempt), kill_tx);
                let (argv, env, cwd) = (argv.clone(), env.clone(), cwd.clone());
                let (sem, local, dir, running) = (
                    self.commands.clone(),
                    self.local.clone(),
                    self.work_dir.clone(),
                    self.running_commands.clone(),
                );
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _ = local.send(Local::Started {
                        task,
                        attempt,
                        ack: None,
                    });
                    let result =
                        run_command(&argv, &env, cwd.as_deref(), &inputs, &dir, kill_rx).await;
                    running
                        .lock()
                        .expect("not poisoned")
                        .remove(&(task, attempt));
                    let _ = local.send(Local::Finished {
                        task,
                        attempt,
                        result,
                    });
                });
            }
        }
    }

    pub(super) fn abandon(&self, task: TaskRef, attempt: AttemptId) {
        let command = self
            .running_commands
            .lock()
            .expect("not poisoned")
            .remove(&(task, attempt));
        if let Some(kill) = command {
            let _ = kill.send(()); // dropping the child kills it
            return;
        }
        // A no-op unless it is one of the Python pool's attempts.
        self.python.abandon(task, attempt);
        let key = (task, attempt);
        if !self
            .pool
            .running
            .lock()
            .expect("not poisoned")
            .contains(&key)
        {
            return; // still queued (it will be skipped) or already done
        }
        let stuck = {
            let mut retiring = self.pool.retiring.lock().expect("not poisoned");
            retiring.insert(key);
            retiring.len()
        };
        if stuck > ABANDONED_THREADS_MAX {
            error!(
                stuck,
                "too many task threads stuck in abandoned builtins; exiting for a restart"
            );
            crate::config::exit(EXIT_STUCK_THREADS);
        }
        warn!(%task, "abandoned a running builtin; its thread retires when it returns, a new one takes its place");
        self.spawn_thread();
    }
}

/// Pure builtins whose inputs and arguments add up to at most this many bytes run on the worker's
/// event loop; others on a task thread.
pub const INLINE_BUILTIN_INPUT_MAX: usize = 64 << 10;

fn task_thread(
    rx: crossbeam_channel::Receiver<Job>,
    local: mpsc::UnboundedSender<Local>,
    pool: Arc<Pool>,
) {
    while let Ok(job) = rx.recv() {
        let key = (job.task, job.attempt);
        let pure = builtins::run_pure(job.op, &job.args, &job.inputs);
        let result = match pure {
            // Pure builtins are instant and cannot harm the process: no start report needed.
            Some(r) => r,
            None => {
                pool.running.lock().expect("not poisoned").insert(key);
                let (tx, rx_ack) = std::sync::mpsc::sync_channel(1);
                let may_kill = matches!(job.op, Builtin::Abort | Builtin::AllocMb);
                let _ = local.send(Local::Started {
                    task: job.task,
                    attempt: job.attempt,
                    ack: may_kill.then_some(tx),
                });
                if may_kill {
                    let _ = rx_ack.recv_timeout(STARTED_ACK_TIMEOUT);
                }
                let r = run_effect(job.op, &job.args);
                pool.running.lock().expect("not poisoned").remove(&key);
                r
            }
        };
        let retire = pool.retiring.lock().expect("not poisoned").remove(&key);
        let sent = local.send(Local::Finished {
            task: job.task,
            attempt: job.attempt,
            result,
        });
        if sent.is_err() || retire {
            return;
        }
    }
}

async fn run_command(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&str>,
    inputs: &[Bytes],
    work_dir: &std::path::Path,
    kill: oneshot::Receiver<()>,
) -> Result<Bytes, TaskError> {
    let fail = |message: String| TaskError {
        message,
        exit_code: None,
        detail: None,
    };
    let dir = tempfile::Builder::new()
        .prefix("task-")
        .tempdir_in(work_dir)
        .map_err(|e| {
            fail(format!(
                "cannot create a task directory in {}: {e}",
                work_dir.display()
            ))
        })?;
    // Its stdout goes straight into shared memory: the result is stored without a copy.
    let out_fd = rusk_net::segment::anonymous_file()
        .map_err(|e| fail(format!("cannot create shared memory for the output: {e}")))?;
    let child_out = out_fd
        .try_clone()
        .map_err(|e| fail(format!("cannot create shared memory for the output: {e}")))?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(child_out))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (i, data) in inputs.iter().enumerate() {
        // An input in shared memory is read in place through /proc; a small one is a file.
        let path = match rusk_net::segment::proc_path(data) {
            Some(p) => PathBuf::from(p),
            None => {
                let path = dir.path().join(format!("dep-{i}"));
                tokio::fs::write(&path, data).await.map_err(|e| {
                    fail(format!("cannot write input file {}: {e}", path.display()))
                })?;
                path
            }
        };
        cmd.env(format!("RUSK_DEP_{i}"), &path);
    }
    cmd.env("RUSK_TASK_DIR", dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start {:?}: {e}", argv[0])))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| fail(format!("waiting for {:?} failed: {e}", argv[0])))?,
        _ = kill => return Err(fail("abandoned".into())), // dropping the child kills it
    };
    if output.status.success() {
        return rusk_net::segment::adopt_fd(out_fd)
            .map_err(|e| fail(format!("cannot map the command's output: {e}")));
    }
    let tail_start = output.stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    let stderr = String::from_utf8_lossy(&output.stderr[tail_start..])
        .trim_end()
        .to_string();
    use std::os::unix::process::ExitStatusExt;
    Err(match (output.status.code(), output.status.signal()) {
        (Some(code), _) => TaskError {
            message: format!("{:?} exited with code {code}; stderr: {stderr}", argv[0]),
            exit_code: Some(code),
            detail: None,
        },
        (None, sig) => fail(format!(
            "{:?} was killed by signal {}; stderr: {stderr}",
            argv[0],
            sig.unwrap_or(0)
        )),
    })
}
