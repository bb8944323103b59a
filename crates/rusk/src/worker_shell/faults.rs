//! The builtins with effects on the worker process: the fault-injection ones (`block_loop`
//! wedges the event loop, `abort` kills the process, `alloc_mb` grows its memory; refused unless
//! the worker runs with `--enable-fault-injection`) and `sleep_ms`.
use super::{Local, OutFrame};
use bytes::Bytes;
use rusk_core::worker::{Command, Event, WorkerCore};
use rusk_net as net;
use rusk_proto::graph::Builtin;
use rusk_proto::msg::{TaskError, WorkerToScheduler};
use rusk_proto::{AttemptId, TaskRef};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

/// Memory kept alive by the `alloc_mb` fault-injection builtin.
static HELD_ALLOCATIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn number_arg(op: Builtin, args: &[String]) -> Result<f64, TaskError> {
    let a = args.first().map(|s| s.trim()).unwrap_or("");
    a.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| TaskError {
            message: format!(
                "{} needs a non-negative number as its first argument, got {a:?}",
                op.name()
            ),
            exit_code: None,
            detail: None,
        })
}

/// Builtins with effects on this process.
pub(super) fn run_effect(op: Builtin, args: &[String]) -> Result<Bytes, TaskError> {
    match op {
        Builtin::SleepMs => {
            let ms = number_arg(op, args)?;
            std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
            Ok(Bytes::new())
        }
        Builtin::Abort => {
            error!("abort builtin: aborting the worker process on purpose");
            crate::config::flush_logs();
            std::process::abort();
        }
        Builtin::AllocMb => {
            // Grow like a leaking task: 16 MiB every 20 ms, every page touched so it counts in
            // RSS, all kept for the life of the process.
            let mb = number_arg(op, args)? as usize;
            let mut left = mb;
            while left > 0 {
                let step = left.min(16);
                let mut v = vec![0u8; step * 1024 * 1024];
                for page in v.chunks_mut(4096) {
                    page[0] = 1;
                }
                HELD_ALLOCATIONS.lock().expect("not poisoned").push(v);
                left -= step;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Bytes::from(format!("{mb}")))
        }
        Builtin::BlockLoop => Err(TaskError {
            message: "block_loop must run on the event loop".into(),
            exit_code: None,
            detail: None,
        }),
        Builtin::Noop | Builtin::Sum | Builtin::Concat | Builtin::Fail => {
            unreachable!("pure builtins are handled by run_pure")
        }
    }
}

/// `block_loop`: deliberately wedge the worker's event loop for `args[0]` seconds (default 10),
/// as a hung loop would. Runs on the loop itself; first makes sure the scheduler knows this
/// attempt is running.
pub(super) async fn block_loop(
    core: &mut WorkerCore,
    start: Instant,
    sched_out: &mpsc::UnboundedSender<OutFrame>,
    local: &mpsc::UnboundedSender<Local>,
    task: TaskRef,
    attempt: AttemptId,
    args: &[String],
) {
    let mut started = Vec::new();
    core.handle_into(
        start.elapsed(),
        Event::Started { task, attempt },
        &mut started,
    );
    core.flush(&mut started);
    let msgs: Vec<WorkerToScheduler> = started
        .into_iter()
        .filter_map(|c| match c {
            Command::ToScheduler(m) => Some(m),
            _ => None,
        })
        .collect();
    let (tx, rx) = oneshot::channel();
    let _ = sched_out.send(OutFrame {
        frame: net::encode(&msgs),
        sent: Some(tx),
    });
    let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
    let secs: f64 = args
        .first()
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(10.0);
    let secs = secs.max(0.0);
    if args.get(1).is_some_and(|a| a.trim() == "kernel") {
        // Stuck in the kernel, like a page fault on a saturated disk: the loop thread waits in
        // vfork(), in uninterruptible sleep (D), until the child exits.
        warn!(
            secs,
            "block_loop: wedging the event loop in the kernel (D state) on purpose"
        );
        wait_in_kernel(secs);
    } else {
        warn!(secs, "block_loop: wedging the event loop on purpose");
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
    let _ = local.send(Local::Finished {
        task,
        attempt,
        result: Ok(Bytes::new()),
    });
}

/// Block this thread in uninterruptible sleep for `secs`: a vfork()ed child sleeps, and the
/// parent thread waits in the kernel (state D) until it exits.
fn wait_in_kernel(secs: f64) {
    let t = libc::timespec {
        tv_sec: secs.trunc() as libc::time_t,
        tv_nsec: (secs.fract() * 1e9) as libc::c_long,
    };
    // SAFETY: the vfork child only makes raw system calls (nanosleep, _exit) and touches
    // nothing of the parent's memory but the timespec it reads.
    unsafe {
        #[allow(deprecated)]
        let pid = libc::vfork();
        if pid == 0 {
            libc::nanosleep(&t, std::ptr::null_mut());
            libc::_exit(0);
        }
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}
