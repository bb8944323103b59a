#!/usr/bin/env python3
"""Recovery benchmark, Dask side: the same four faults against Dask distributed.

Run it with the benchmark's venv (`bench/.venv/bin/python`, with `distributed` installed), as a
script (the blocking task below is shipped to the worker by value, which cloudpickle does for
functions of `__main__`).

For each fault and each run: a fresh cluster on 127.0.0.1, started with the CLI like a user
would: `dask scheduler --no-dashboard`, the cut-able proxy in front of it, and
`dask worker tcp://PROXY --nanny --nworkers 1 --nthreads 1 --no-dashboard` (a nanny with one
worker process), so the nanny and its worker reach the scheduler through the proxy. Every
DASK_* variable is removed from the environment; `--worker-ttl 5s` sets
DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL=5s for the scheduler (otherwise Dask's default, 5
minutes). The driver's Client talks to the scheduler directly.

A probe (`client.submit(os.getpid, pure=False).result()`) runs once on the healthy cluster (its
time is the baseline and its answer the worker's pid); after a random 0.5-1.0 s, plus a random
0..`--phase-spread` s (the suite passes the TTL, 5 s, so that the fault falls at a random phase
of the scheduler's TTL check, which runs every TTL from the scheduler's start), the fault is
injected at t0 and a probe is submitted at once. The recovery time is the moment its result is
back minus t0; the pid it returns must be a new worker process. Faults:

    kill9    kill -9 of the worker process (the nanny's child)
    sigstop  SIGSTOP of the worker process
    block    a task that holds the GIL (libc sleep(600) called through ctypes.PyDLL, which does
             not release the GIL) freezes the worker's event loop with its threads. The task
             writes time.monotonic() to a file right before it blocks: that is t0. The driver
             then cancels that future (so it is not retried on the new worker) and submits the
             probe.
    cut      the proxy closes the worker process's connections to the scheduler (the nanny's
             are left alone); both processes stay healthy.

A run that has not recovered `--cap` seconds after t0 counts as ">= cap"; a case whose runs
hit the cap `--stop-after-capped` times is not repeated further.

Where the time goes, per run: the scheduler log's `Worker failed to heartbeat` (the TTL check
found the worker silent; it then asks the nanny to restart it), `Remove worker` (the old worker
gone) and `Register worker` (the new one) lines, as offsets from t0 (log times have 1 ms
resolution).
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (FAULTS, ProcessGroup, Proxy, capped, gave_up, log,  # noqa: E402
                    recovered, run_case, summarize, wait_for, write_result)

import dask  # noqa: E402
import distributed  # noqa: E402
from distributed import Client  # noqa: E402

BIN = os.path.dirname(sys.executable)


def hold_gil(marker, seconds):
    """Runs on the worker: note the time, then sleep in C with the GIL held, which freezes the
    worker's event loop (and every other thread of the process)."""
    import ctypes
    import time as t
    with open(marker + ".tmp", "w") as f:
        f.write(repr(t.monotonic()))
    os.rename(marker + ".tmp", marker)
    ctypes.PyDLL(None).sleep(seconds)


def clean_env(ttl, workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    # Scratch space next to the run's other files (nothing to do with recovery).
    env["DASK_TEMPORARY_DIRECTORY"] = workdir
    if ttl:
        env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = ttl
    return env


class DaskCluster:
    def __init__(self, workdir, ttl):
        self.dir = workdir
        self.group = ProcessGroup()
        self.client = None
        try:
            self.start(ttl)
        except BaseException:
            self.close()
            raise

    def start(self, ttl):
        env = clean_env(ttl, self.dir)
        sf = os.path.join(self.dir, "scheduler.json")
        self.sched_log = os.path.join(self.dir, "scheduler.log")
        with open(self.sched_log, "w") as err:
            self.started = time.monotonic()
            self.group.start([os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", "0", "--no-dashboard",
                              "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sf],
                             stderr=err, stdout=subprocess.DEVNULL, env=env)
        def address():  # tcp://127.0.0.1:PORT, once the file is whole (not written atomically)
            try:
                with open(sf) as f:
                    return json.load(f)["address"]
            except (OSError, ValueError, KeyError):
                return None

        address = wait_for(address, 30, what="the scheduler file")
        self.proxy = Proxy(self.group, address.split("://", 1)[1], self.dir)
        with open(os.path.join(self.dir, "worker.log"), "w") as err:
            self.nanny = self.group.start(
                [os.path.join(BIN, "dask"), "worker", f"tcp://{self.proxy.address}", "--nanny",
                 "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                 "--dashboard-address", "127.0.0.1:0", "--name", "n0",
                 "--local-directory", self.dir],
                stderr=err, stdout=subprocess.DEVNULL, env=env)
        self.client = Client(address, timeout=30)
        self.client.wait_for_workers(1, timeout=60)

    def probe(self, deadline):
        """Run os.getpid on the cluster. Returns (pid, None), or (None, why) with why "cap"
        when the deadline (monotonic) passes first, "nanny exited" when the `dask worker`
        process (the nanny) is gone, since nothing can bring a worker back then, or an error
        message."""
        fut = self.client.submit(os.getpid, pure=False)
        try:
            while True:
                try:
                    return fut.result(timeout=max(0.001, min(0.2, deadline - time.monotonic()))), \
                        None
                except (TimeoutError, distributed.TimeoutError):
                    if self.nanny.poll() is not None:
                        return None, "nanny exited"
                    if time.monotonic() >= deadline:
                        return None, "cap"
                except Exception as e:
                    return None, f"probe failed: {type(e).__name__}: {e}"
        finally:
            fut.release()

    def log_times(self, needle, after_wall):
        """Wall-clock times (s) of scheduler log lines containing `needle`, after `after_wall`
        (less 10 ms: the log has millisecond resolution)."""
        out = []
        with open(self.sched_log) as f:
            for line in f:
                if needle not in line:
                    continue
                try:
                    stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                except ValueError:
                    continue
                t = stamp.timestamp()  # local time, like the log
                if t >= after_wall - 0.01:
                    out.append(t)
        return out

    def close(self):
        if self.client is not None:
            try:
                self.client.close(timeout=5)
            except Exception:
                pass
            self.client = None
        self.group.kill()


def one_run(fault, ttl, phase_spread, cap_s, rng):
    workdir = tempfile.mkdtemp(prefix=f"dask-recovery-{fault}-")
    c = DaskCluster(workdir, ttl)
    try:
        t = time.monotonic()
        pid, why = c.probe(t + 30)
        if pid is None:
            raise RuntimeError(f"the healthy cluster does not run the probe: {why}")
        baseline = time.monotonic() - t
        # The scheduler checks the TTL every TTL, counted from its start: spreading the fault
        # over one more period puts it at a random phase of that check, as in a long-running
        # cluster (otherwise every run would hit the same point of the period).
        time.sleep(rng.uniform(0.5, 1.0) + rng.uniform(0, phase_spread))

        extra = {}
        if fault == "kill9":
            t0w, t0 = time.time(), time.monotonic()
            os.kill(pid, signal.SIGKILL)
        elif fault == "sigstop":
            t0w, t0 = time.time(), time.monotonic()
            os.kill(pid, signal.SIGSTOP)
        elif fault == "cut":
            t0w, t0 = time.time(), time.monotonic()
            extra["connections_cut"] = c.proxy.cut_pid(pid)
        elif fault == "block":
            marker = os.path.join(workdir, "blocked")
            submitted = time.monotonic()
            blocker = c.client.submit(hold_gil, marker, 600, pure=False)
            wait_for(lambda: os.path.exists(marker), 30, interval=0.005,
                     what="the GIL-holding task to start")
            with open(marker) as f:
                t0 = float(f.read())
            t0w = time.time() - (time.monotonic() - t0)
            extra["block_started_after_submit_s"] = t0 - submitted
            c.client.cancel(blocker)  # so it is not retried on the new worker
        else:
            raise ValueError(fault)

        new_pid, why = c.probe(t0 + cap_s)
        t1 = time.monotonic()
        if why == "cap":
            return capped(baseline_s=baseline, **extra)
        if why == "nanny exited":
            return gave_up(why, baseline_s=baseline, **extra)
        if why:
            raise RuntimeError(why)
        run = recovered(t1 - t0, baseline_s=baseline, **extra)
        run["fault_after_scheduler_start_s"] = t0 - c.started
        if new_pid == pid:
            run["same_process"] = True  # served by the old worker process, not a new one
        detected = c.log_times("Worker failed to heartbeat", t0w)
        if detected:
            run["ttl_expired_s"] = detected[0] - t0w
        removed = c.log_times("Remove worker", t0w)
        registered = c.log_times("Register worker", t0w)
        if removed:
            run["removed_s"] = removed[0] - t0w
        if registered:
            run["registered_s"] = registered[0] - t0w
        return run
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker-ttl", default=None,
                    help="e.g. 5s (DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL); default: Dask's")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cap", type=float, default=60,
                    help="seconds before a run counts as not recovered")
    ap.add_argument("--stop-after-capped", type=int, default=2)
    ap.add_argument("--phase-spread", type=float, default=0,
                    help="wait a further random 0..S seconds before the fault (use the TTL, "
                         "so the fault falls at a random phase of the TTL check)")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    args = ap.parse_args()

    ttl_default = dask.config.get("distributed.scheduler.worker-ttl")
    label = f"Dask ttl={args.worker_ttl}" if args.worker_ttl else \
        f"Dask default (ttl={ttl_default})"
    result = {"system": "dask", "label": label, "worker_ttl": args.worker_ttl or ttl_default,
              "version": f"distributed {distributed.__version__}, dask {dask.__version__}, "
                         f"Python {sys.version.split()[0]}",
              "runs_planned": args.runs, "cases": {}}
    for i, fault in enumerate(f for f in args.faults.split(",") if f):
        log(f"{label}: {fault}, up to {args.runs} run(s), cap {args.cap} s")
        runs = run_case(f"{label} {fault}",
                        lambda cap, rng: one_run(fault, args.worker_ttl, args.phase_spread,
                                                 cap, rng),
                        args.runs, args.cap, args.stop_after_capped, seed=args.seed + i)
        result["cases"][fault] = {"summary": summarize(runs, args.cap), "runs": runs}
        write_result(args.out, result)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
