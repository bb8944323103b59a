//! An executor process: the script file, spawning (with its reader, writer, stderr forwarder
//! and waiter tasks), and its exit (with the Python stacks of a hung one).
use super::*;
use rusk_net::segment::SegmentWriter;

/// How long to wait for a hung executor's stacks (SIGUSR1, faulthandler) before SIGKILL.
const STACKS_WAIT: Duration = Duration::from_millis(300);
/// Bytes of the stacks quoted in a task's error.
const STACKS_MAX_BYTES: usize = 8192;
/// Bytes of an executor's recent stderr quoted when it dies.
const STDERR_TAIL_BYTES: usize = 1500;
/// How long, after an executor's exit, to wait for the rest of its stderr (faulthandler's
/// report of a crash): well under `executor::EXIT_GRACE`, so that its exit is seen before the
/// pool gives up waiting for it.
const STDERR_DRAIN_WAIT: Duration = Duration::from_millis(50);
/// Buffer of a pipe's reader and writer: many small frames per system call.
const PIPE_BUFFER_BYTES: usize = 1 << 16;

impl Manager {
    /// Write the script (once per content) and start an executor with its pipe tasks.
    pub(super) fn spawn(&mut self, exec: ExecId) -> Result<u32> {
        let script = ensure_script(&self.work_dir)?;
        let stack_file =
            self.work_dir
                .join(format!("executor-{}-{}.stacks", std::process::id(), exec.0));
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg("-u")
            .arg(&script)
            .env("RUSK_WORKER_PID", std::process::id().to_string())
            .env("RUSK_EXECUTOR_STACK_FILE", &stack_file)
            .env("RUSK_UPLOADS_DIR", super::uploads_dir(&self.work_dir))
            .env("RUSK_CLAIMS_DIR", self.claims.path())
            // Task code has no business with the cluster's secret: it gets the task credential,
            // which opens client connections only (`rusk.get_client()`).
            .env_remove("RUSK_TOKEN")
            .env_remove("RUSK_TOKEN_FILE")
            .env_remove("RUSK_TLS")
            .env_remove("RUSK_TLS_CA")
            .env_remove("RUSK_TLS_CERT")
            .env_remove("RUSK_TLS_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(c) = &self.cluster {
            cmd.env("RUSK_SCHEDULER_ADDRESS", &c.address)
                .env("RUSK_TASK_TOKEN", &c.task_token);
            if let Some(tls) = &c.tls {
                cmd.env("RUSK_TLS", tls);
            }
        }
        let parent = std::process::id() as i32;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Its own process group, so that killing it takes its children along.
                libc::setpgid(0, 0);
                // It dies with the worker.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Inherit nothing but the pipes (the worker's nanny socket is inheritable).
                // Best effort: kernels before 5.11 lack close_range.
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                );
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the worker exited"));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start the Python executor with {:?} (set the interpreter with --python or RUSK_PYTHON)",
                self.python
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let activity = Arc::new(AtomicU64::new(0));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let (kill, kill_rx) = oneshot::channel();
        tokio::spawn(write_frames(stdin, writer_rx));
        let stamped = Stamped {
            inner: stdout,
            activity: activity.clone(),
            epoch: self.epoch,
        };
        tokio::spawn(read_frames(
            ExecLink {
                exec,
                pid,
                writer: writer.clone(),
                stderr_tail: stderr_tail.clone(),
                grants: FxHashMap::default(),
            },
            stamped,
            self.ev_tx.clone(),
        ));
        let forwarder = tokio::spawn(forward_stderr(stderr, stderr_tail.clone()));
        tokio::spawn(wait_child(
            exec,
            child,
            kill_rx,
            forwarder,
            stderr_tail,
            self.ev_tx.clone(),
        ));
        self.execs.insert(
            exec,
            ExecIo {
                pid,
                writer,
                activity,
                kill: Some(kill),
                stack_file,
                unstarted: FxHashMap::default(),
                mapped: FxHashMap::default(),
            },
        );
        Ok(pid)
    }
}

/// An executor's output, stamping the time of every read: pings are consumed by the decoder
/// and never reach the core, so this is how the core learns an executor is alive.
struct Stamped<R> {
    inner: R,
    activity: Arc<AtomicU64>,
    epoch: Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for Stamped<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = this.epoch.elapsed().as_millis() as u64 + 1;
            this.activity.store(ms, Ordering::Relaxed);
        }
        r
    }
}

/// Where the embedded script is written: named by a hash of its content, so workers of
/// different versions sharing a work dir never run each other's.
fn ensure_script(work_dir: &Path) -> Result<PathBuf> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in SCRIPT.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let path = work_dir.join(format!("rusk-executor-{h:016x}.py"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create work dir {}", work_dir.display()))?;
    let tmp = work_dir.join(format!(
        ".rusk-executor-{h:016x}.py.{}.tmp",
        std::process::id()
    ));
    std::fs::write(&tmp, SCRIPT).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Frames to the executor, flushed once per batch of what is waiting.
async fn write_frames(
    stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<ToExecutor>,
) {
    let mut sink = FramedWrite::with_capacity(stdin, ExecutorCodec, PIPE_BUFFER_BYTES);
    sink.set_backpressure_boundary(PIPE_BUFFER_BYTES);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if sink.feed(item).await.is_err() {
                return; // the executor is gone; its exit is reported by `wait_child`
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// What the reader of an executor's output needs to know of it.
struct ExecLink {
    exec: ExecId,
    pid: u32,
    writer: mpsc::UnboundedSender<ToExecutor>,
    /// Cleared when a task starts, so that a death quotes what that task wrote.
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    /// Result segments granted to running tasks (`A`), by job: the executor writes the value
    /// into it through `/proc/<worker pid>/fd/<fd>`, then answers `R` kind 3. Dropped (freed)
    /// with any other answer of that job, or with this link when the executor dies.
    grants: FxHashMap<u64, SegmentWriter>,
}

impl ExecLink {
    /// A task's request for a segment of `size` bytes to write its result into: one of this
    /// worker's (warm memory from the segment pool when it has some, see
    /// `rusk_net::segment`), or a refusal, after which the executor writes a memfd of its own.
    fn grant(&mut self, id: u64, body: &[u8]) -> Result<(), String> {
        let size = match <[u8; 8]>::try_from(body) {
            Ok(b) => u64::from_be_bytes(b),
            Err(_) => return Err("a malformed segment request".into()),
        };
        let granted = if size < segment::INLINE_VALUE_MAX as u64 || self.grants.contains_key(&id) {
            None // small values go inline; one grant per task at a time
        } else {
            usize::try_from(size)
                .ok()
                .and_then(|len| SegmentWriter::create(len).ok())
        };
        let answer = granted
            .as_ref()
            .map(|s| (s.raw_fd() as u32, s.len() as u64));
        if let Some(s) = granted {
            self.grants.insert(id, s);
        }
        let _ = self.writer.send(ToExecutor::Grant {
            id,
            segment: answer,
        });
        Ok(())
    }

    /// The value of an `R` frame: inline, in the segment granted to the task (kind 3), or the
    /// executor's sealed memfd, mapped here at once (then the executor is told to close its fd
    /// with `F`).
    fn result_value(&mut self, id: u64, mut body: Bytes) -> Result<Bytes, String> {
        let granted = self.grants.remove(&id);
        match body.first() {
            Some(3) if body.len() == 9 => {
                body.advance(1);
                let len = body.get_u64();
                let Some(s) = granted else {
                    return Err("a result in a segment that was not granted".into());
                };
                if len != s.len() as u64 {
                    return Err(format!(
                        "a result of {len} bytes in a granted segment of {}",
                        s.len()
                    ));
                }
                s.finish()
                    .map_err(|e| format!("cannot map the granted result segment: {e}"))
            }
            Some(0) => {
                body.advance(1);
                Ok(body)
            }
            Some(1) if body.len() == 13 => {
                body.advance(1);
                let fd = body.get_u32();
                let len = body.get_u64() as usize;
                let path = PathBuf::from(format!("/proc/{}/fd/{fd}", self.pid));
                let value = segment::adopt_path(&path, len).map_err(|e| {
                    format!("cannot map the result segment {}: {e}", path.display())
                })?;
                let _ = self.writer.send(ToExecutor::ResultMapped(id));
                Ok(value)
            }
            _ => Err("a malformed result frame".into()),
        }
    }

    /// The event a frame means, or what is wrong with it.
    fn event(&mut self, f: Frame) -> Result<Option<FromExec>, String> {
        let (exec, job) = (self.exec, JobId(f.id));
        if f.kind == b'A' {
            self.grant(f.id, &f.body)?;
            return Ok(None);
        }
        if matches!(f.kind, b'E' | b'X') || (f.kind == b'R' && f.body.first() == Some(&2)) {
            // Answered without the segment it may have been granted: freed.
            self.grants.remove(&f.id);
        }
        if f.kind == b'U' {
            if !f.body.len().is_multiple_of(4) {
                return Err("a malformed unmapped frame".into());
            }
            let fds = f
                .body
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as RawFd)
                .collect();
            return Ok(Some(FromExec::Unmapped { exec, fds }));
        }
        if f.kind == b'R' && f.body.first() == Some(&2) {
            let input = match f.body.len() {
                5 => u32::from_be_bytes([f.body[1], f.body[2], f.body[3], f.body[4]]) as usize,
                _ => return Err("a malformed result frame".into()),
            };
            return Ok(Some(FromExec::ResultIsInput { exec, job, input }));
        }
        Ok(Some(FromExec::Core(match f.kind {
            b'P' => return Ok(None),
            b'H' => {
                let hello: serde_json::Value = serde_json::from_slice(&f.body).unwrap_or_default();
                let error = hello
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(String::from);
                if error.is_none() {
                    info!(
                        pid = self.pid,
                        python = hello["python"].as_str().unwrap_or("?"),
                        cloudpickle = hello["cloudpickle"].as_str().unwrap_or("?"),
                        executable = hello["executable"].as_str().unwrap_or("?"),
                        "python executor ready"
                    );
                }
                Event::Hello { exec, error }
            }
            b'S' => {
                self.stderr_tail.lock().expect("not poisoned").clear();
                Event::Started { exec, job }
            }
            b'W' => Event::Seceded { exec, job },
            b'J' => Event::Rejoined { exec, job },
            b'R' => Event::Answered {
                exec,
                job,
                answer: Answer::Value(self.result_value(f.id, f.body)?),
            },
            b'E' => Event::Answered {
                exec,
                job,
                answer: Answer::Error(parse_error(f.body)),
            },
            b'X' => Event::Answered {
                exec,
                job,
                answer: Answer::Skipped,
            },
            other => return Err(format!("unknown frame kind {:?}", other as char)),
        })))
    }
}

async fn read_frames(
    mut link: ExecLink,
    stdout: Stamped<tokio::process::ChildStdout>,
    ev: mpsc::UnboundedSender<FromExec>,
) {
    let mut frames = FramedRead::with_capacity(stdout, ExecutorCodec, PIPE_BUFFER_BYTES);
    let error = loop {
        let frame = match frames.next().await {
            None => break None,
            Some(Err(e)) => break Some(e.to_string()),
            Some(Ok(f)) => f,
        };
        match link.event(frame) {
            Ok(Some(e)) => {
                let _ = ev.send(e);
            }
            Ok(None) => {}
            Err(e) => break Some(e),
        }
    };
    let _ = ev.send(FromExec::Core(Event::Closed {
        exec: link.exec,
        error,
    }));
}

async fn forward_stderr(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<Vec<u8>>>) {
    // Like the worker's own logs, straight to its stderr.
    use std::io::Write;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = std::io::stderr().write_all(&buf[..n]);
        let mut t = tail.lock().expect("not poisoned");
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL_BYTES {
            let cut = t.len() - STDERR_TAIL_BYTES;
            t.drain(..cut);
        }
    }
}

async fn wait_child(
    exec: ExecId,
    mut child: tokio::process::Child,
    mut kill: oneshot::Receiver<Option<PathBuf>>,
    forwarder: tokio::task::JoinHandle<()>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    ev: mpsc::UnboundedSender<FromExec>,
) {
    let pid = child.id();
    let done = tokio::select! {
        s = child.wait() => Ok(s),
        k = &mut kill => Err(k.ok().flatten()),
    };
    let mut stacks = None;
    let by_kill = done.is_err();
    let status = match done {
        Ok(s) => s,
        Err(capture) => {
            if let (Some(pid), Some(path)) = (pid, capture) {
                // faulthandler writes every thread's Python stack from its signal handler,
                // even while a C call holds the GIL.
                // SAFETY: plain syscall on our own, not yet reaped, child.
                unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
                tokio::time::sleep(STACKS_WAIT).await;
                stacks = std::fs::read(&path).ok().and_then(|b| {
                    let text = String::from_utf8_lossy(&b[..b.len().min(STACKS_MAX_BYTES)])
                        .trim()
                        .to_string();
                    (!text.is_empty()).then_some(text)
                });
            }
            if let Some(pid) = pid {
                // Not reaped yet, so the group is still ours.
                // SAFETY: plain syscall.
                unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let exit = match status {
        Ok(s) => describe_exit(s),
        Err(e) => Exit::WaitFailed(e.to_string()),
    };
    // Killed by us, not dead of something else just before.
    let killed = by_kill
        && matches!(
            exit,
            Exit::Signal {
                signal: libc::SIGKILL,
                ..
            }
        );
    if let Some(st) = &stacks {
        warn!(pid = ?pid, stacks = %st, "python stacks of the executor before it was killed");
    }
    // The last words on stderr (faulthandler's report of a crash) come after the exit: read
    // them to the end, unless a surviving child of the executor holds the pipe open.
    let _ = tokio::time::timeout(STDERR_DRAIN_WAIT, forwarder).await;
    let stderr_tail = {
        let t = stderr_tail.lock().expect("not poisoned");
        String::from_utf8_lossy(&t).into_owned()
    };
    let _ = ev.send(FromExec::Core(Event::Exited {
        exec,
        exit,
        killed,
        stacks,
        stderr_tail,
    }));
}

fn describe_exit(s: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(signal)) => Exit::Signal {
            signal,
            name: signal_name(signal),
        },
        _ => Exit::Other,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}
