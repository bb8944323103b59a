#!/usr/bin/env python3
"""Recovery benchmark, rusk side (stdlib only).

For each fault and each run: a fresh cluster on 127.0.0.1 (`rusk scheduler`, the cut-able
proxy, `rusk nanny --nworkers 1 --enable-fault-injection` joined through the proxy), default
settings (every RUSK_* variable is removed from the environment). A probe task runs once to
check the worker (its time is kept as the healthy baseline), then after a random 0.5-1.0 s
(so the fault falls at a random phase of the heartbeat and watchdog periods) the fault is
injected at t0 and a probe graph is submitted at once:

    {"tasks": [{"key": "p", "cmd": ["sh", "-c", "echo $PPID"]}]}

`rusk submit --wait` returns when the probe has run; the recovery time is that moment minus t0.
The probe prints the pid of the worker that ran it, which must be a new process (the run counts
as failed otherwise). A run stops at the cap (`--cap`, 30 s) or, counted as "never", when the
nanny process has exited. Faults:

    kill9    kill -9 of the worker process
    sigstop  SIGSTOP of the worker process
    block    a `block_loop` task (60 s) wedges the worker's event loop. t0 is the timestamp of
             the line the worker logs right before it wedges (the nanny's stderr, polled every
             5 ms); the submitting client is then stopped, which cancels that graph so the hung
             task is not retried on the new worker, and the probe is submitted.
    cut      the proxy closes the worker's connection(s) to the scheduler (the nanny's
             connection is left alone); both processes stay healthy.

Where the time goes, per run: `rusk events --json` (the first event about the fault, and the
nanny's `restarted` event with its `detection_ms`/`recovery_ms`) and the scheduler's log line
`worker joined` of the new incarnation, all as offsets from t0 (wall clock).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (FAULTS, ProcessGroup, Proxy, capped, gave_up, log,  # noqa: E402
                    recovered, run_case, summarize, wait_for, write_result)

PROBE = {"tasks": [{"key": "p", "cmd": ["sh", "-c", "echo $PPID"]}]}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BLOCK = {"tasks": [{"key": "wedge", "builtin": "block_loop", "args": ["60"]}]}


def clean_env():
    """The environment without any RUSK_* variable: default settings everywhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RUSK_")}


class RuskCluster:
    def __init__(self, rusk, workdir):
        self.rusk = rusk
        self.dir = workdir
        self.sf = os.path.join(workdir, "scheduler.json")
        self.group = ProcessGroup()
        try:
            self.start()
        except BaseException:
            self.group.kill()
            raise

    def start(self):
        rusk, workdir = self.rusk, self.dir
        env = clean_env()
        self.sched_log = os.path.join(workdir, "scheduler.log")
        with open(self.sched_log, "w") as err:
            self.group.start([rusk, "scheduler", "--listen", "127.0.0.1:0",
                              "--scheduler-file", self.sf], stderr=err, env=env)
        wait_for(lambda: os.path.exists(self.sf), 10, what="the scheduler file")
        with open(self.sf) as f:
            info = json.load(f)
        self.proxy = Proxy(self.group, info["address"], workdir)
        nanny_env = dict(env, RUSK_TOKEN=info["token"])
        self.nanny_log = os.path.join(workdir, "nanny.log")
        with open(self.nanny_log, "w") as err:
            self.nanny = self.group.start([rusk, "nanny", "--scheduler", self.proxy.address,
                              "--nworkers", "1", "--name", "n0", "--enable-fault-injection"],
                             stderr=err, env=nanny_env)
        self.worker = wait_for(self.running_worker, 15, interval=0.02, what="the worker")

    def cli(self, *args, timeout=10):
        r = subprocess.run([self.rusk, *args, "--scheduler-file", self.sf],
                           capture_output=True, text=True, timeout=timeout, env=clean_env())
        if r.returncode != 0:
            raise RuntimeError(f"rusk {args[0]} failed: {r.stderr.strip()[-500:]}")
        return r.stdout

    def status(self):
        return json.loads(self.cli("status", "--json"))

    def events(self):
        return [json.loads(line) for line in self.cli("events", "--json").splitlines() if line]

    def running_worker(self, other_than=None):
        for w in self.status()["workers"]:
            if w["slot"] == 0 and w["state"] == "running" and w["incarnation"] != other_than:
                return w
        return None

    def submit(self, graph, name):
        path = os.path.join(self.dir, name + ".json")
        with open(path, "w") as f:
            json.dump(graph, f)
        return subprocess.Popen([self.rusk, "submit", path, "--scheduler-file", self.sf,
                                 "--wait", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=clean_env())

    def probe(self, deadline):
        """Run the probe graph. Returns (pid of the worker that ran it, None), or (None, why)
        with why "cap" when the deadline (monotonic) passes first, "nanny exited" when the
        nanny is gone (nothing can bring the worker back then), or an error message."""
        p = self.submit(PROBE, "probe")
        try:
            while True:
                try:
                    out, err = p.communicate(
                        timeout=max(0.0, min(0.2, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if self.nanny.poll() is not None:
                        return None, "nanny exited"
                    if time.monotonic() >= deadline:
                        return None, "cap"
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        if p.returncode != 0:
            return None, f"probe failed: {err.strip()[-300:]}"
        return int(json.loads(out)["p"].strip()), None

    @staticmethod
    def log_line_time(path, *needles):
        """Wall-clock time (s) of the first line of log `path` containing every needle."""
        with open(path) as f:
            for line in f:
                line = ANSI.sub("", line)
                if all(n in line + " " for n in needles):
                    stamp = line.split()[0]
                    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) \
                        .timestamp()
        return None

    def joined_at(self, incarnation):
        """Wall-clock time (s) of the scheduler's `worker joined` line of this incarnation."""
        return self.log_line_time(self.sched_log, "worker joined",
                                  f"incarnation=i{incarnation} ")

    def close(self):
        self.group.kill()


def one_run(rusk, fault, cap_s, rng):
    workdir = tempfile.mkdtemp(prefix=f"rusk-recovery-{fault}-")
    c = RuskCluster(rusk, workdir)
    try:
        t = time.monotonic()
        pid, why = c.probe(t + 10)
        if pid is None:
            raise RuntimeError(f"the healthy cluster does not run the probe: {why}")
        baseline = time.monotonic() - t
        old = c.running_worker()
        assert old["pid"] == pid, (old, pid)
        time.sleep(rng.uniform(0.5, 1.0))

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
            submitted = time.monotonic()
            blocker = c.submit(BLOCK, "block")
            # The worker logs this line right before it wedges its event loop; its timestamp
            # is t0. (`rusk status` cannot tell: the running count comes from heartbeats.)
            stamp = wait_for(lambda: c.log_line_time(c.nanny_log, "block_loop: wedging"), 10,
                             interval=0.005, what="the block_loop task to start")
            t0w = stamp
            t0 = time.monotonic() - (time.time() - stamp)
            extra["block_started_after_submit_s"] = t0 - submitted
            blocker.terminate()  # cancels its graph: the hung task is not retried
            blocker.communicate()
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
        if new_pid == pid:
            raise RuntimeError("the probe ran on the old worker process")
        run = recovered(t1 - t0, baseline_s=baseline, **extra)

        # Where the time went: events and the scheduler log, as offsets from t0.
        new = wait_for(lambda: c.running_worker(other_than=old["incarnation"]), 5,
                       what="the new incarnation in the status")
        events = c.events()
        if events:
            run["first_event_s"] = min(e["time_unix_ms"] for e in events) / 1000 - t0w
            run["first_event"] = f'{events[0]["source"]}: {events[0]["cause"]}: ' \
                                 f'{events[0]["observed"]}'
        for e in events:
            if e.get("action") == "restarted" and e.get("new_incarnation") == new["incarnation"]:
                run["restarted_s"] = e["time_unix_ms"] / 1000 - t0w
                run["detection_ms"] = e["detection_ms"]
                run["recovery_ms"] = e["recovery_ms"]
                run["cause"] = e["cause"]
        joined = c.joined_at(new["incarnation"])
        if joined is not None:
            run["joined_s"] = joined - t0w
        run["events"] = events
        return run
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rusk", required=True, help="the rusk binary")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cap", type=float, default=30, help="seconds before a run counts as "
                    "not recovered")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    args = ap.parse_args()

    # A private copy of the binary: the nanny starts workers from its own executable, and a
    # rebuild of target/release/rusk during the benchmark must not pull it from under it.
    keep = tempfile.mkdtemp(prefix="rusk-recovery-bin-")
    rusk = os.path.join(keep, "rusk")
    shutil.copy2(args.rusk, rusk)
    version = subprocess.run([rusk, "--version"], capture_output=True, text=True).stdout.strip()
    result = {"system": "rusk", "label": "rusk", "version": version, "runs_planned": args.runs,
              "cases": {}}
    try:
        for i, fault in enumerate(f for f in args.faults.split(",") if f):
            log(f"rusk: {fault}, {args.runs} run(s)")
            runs = run_case(f"rusk {fault}", lambda cap, rng: one_run(rusk, fault, cap, rng),
                            args.runs, args.cap, stop_after_capped=3, seed=args.seed + i)
            result["cases"][fault] = {"summary": summarize(runs, args.cap), "runs": runs}
            write_result(args.out, result)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
