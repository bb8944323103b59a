"""Shared pieces of the recovery benchmark (stdlib only): the cut-able proxy, process groups,
the repetition loop with its cap, and the JSON result format.

Clocks: every duration is measured with time.monotonic() (CLOCK_MONOTONIC, shared by all the
processes of the machine); time.time() is only used to line up with timestamps that rusk and
Dask write in their own logs and events.
"""
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The four faults, in the order they are reported.
FAULTS = ["kill9", "sigstop", "block", "cut"]
FAULT_TITLES = {
    "kill9": "kill -9",
    "sigstop": "SIGSTOP",
    "block": "blocked event loop",
    "cut": "cut connection",
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def wait_for(predicate, timeout, interval=0.01, what="condition"):
    """Poll `predicate` every `interval` s until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ProcessGroup:
    """Processes of one test cluster, all in one new process group so that tearing the cluster
    down (SIGKILL to the group) also ends the workers the nannies started, stopped or wedged
    ones included. Only processes started here are ever signalled."""

    def __init__(self):
        self.pgid = None
        self.procs = []

    def start(self, argv, **kw):
        # The first process leads a new group (same session), the others join it.
        kw["process_group"] = 0 if self.pgid is None else self.pgid
        p = subprocess.Popen(argv, **kw)
        if self.pgid is None:
            self.pgid = p.pid
        self.procs.append(p)
        return p

    def kill(self):
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.pgid = None
        self.procs = []


class Proxy:
    """bench/recovery/proxy.py in its own process, forwarding 127.0.0.1:port to `target`."""

    def __init__(self, group, target, workdir, python=sys.executable):
        self.control = os.path.join(workdir, "proxy.sock")
        if os.path.exists(self.control):
            os.unlink(self.control)
        self.proc = group.start(
            [python, os.path.join(HERE, "proxy.py"), "--target", target,
             "--control", self.control],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.address = f"127.0.0.1:{self.port}"

    def command(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.control)
            s.sendall((line + "\n").encode())
            return s.makefile().readline().strip()

    def cut_pid(self, pid):
        """Close the proxied connections of process `pid`; returns how many were closed."""
        return int(self.command(f"cut pid {pid}").split()[1])


def recovered(seconds, **details):
    return {"outcome": "recovered", "seconds": seconds, **details}


def capped(**details):
    """Not recovered within the cap."""
    return {"outcome": "capped", "seconds": None, **details}


def gave_up(reason, **details):
    """Cannot recover any more (for instance the nanny itself has exited), so the run stops
    early instead of waiting for the cap."""
    return {"outcome": "never", "seconds": None, "reason": reason, **details}


def summarize(runs, cap_s):
    """Median, worst and best of a case's runs. A run that hit the cap or can never recover
    counts as infinite: the worst is then None, and so is the median when the middle run was
    one of them. Runs that failed for another reason (outcome `error`) are left out and
    counted."""
    inf = float("inf")
    count = {k: sum(1 for r in runs if r["outcome"] == k)
             for k in ("recovered", "capped", "never", "error")}
    times = sorted(r["seconds"] for r in runs if r["outcome"] == "recovered")
    ordered = times + [inf] * (count["capped"] + count["never"])
    n = len(ordered)
    out = {"n": n, **count, "cap_s": cap_s, "median_s": None, "worst_s": None,
           "best_s": times[0] if times else None}
    if n:
        lo, hi = ordered[(n - 1) // 2], ordered[n // 2]
        out["median_s"] = None if hi == inf else (lo + hi) / 2
        out["worst_s"] = None if hi == inf or ordered[-1] == inf else ordered[-1]
    return out


def run_case(name, one_run, runs, cap_s, stop_after_capped, seed):
    """Repeat `one_run(cap_s, rng)` up to `runs` times; each run returns one of the dicts made
    by recovered(), capped(), gave_up(). A case whose runs hit the cap (or fail)
    `stop_after_capped` times is not repeated further: each such run costs the whole cap."""
    rng = random.Random(seed)
    results = []
    costly = 0
    for i in range(runs):
        t = time.monotonic()
        try:
            r = one_run(cap_s, rng)
        except Exception as e:  # a broken run is reported, not hidden
            r = {"outcome": "error", "seconds": None, "error": f"{type(e).__name__}: {e}"}
        r["run"] = i + 1
        r["load1"] = os.getloadavg()[0]  # the machine is shared: keep how busy it was
        results.append(r)
        shown = f"{r['seconds']:.3f} s" if r["outcome"] == "recovered" else \
            f">= cap ({cap_s} s)" if r["outcome"] == "capped" else \
            f"never ({r.get('reason')})" if r["outcome"] == "never" else \
            f"error ({r.get('error')})"
        log(f"  {name} run {i + 1}/{runs}: {shown}  [{time.monotonic() - t:.1f} s wall]")
        if r["outcome"] in ("capped", "error"):
            costly += 1
            if costly >= stop_after_capped and i + 1 < runs:
                log(f"  {name}: {costly} run(s) hit the cap of {cap_s} s or failed; "
                    "not repeating further")
                break
    return results


def write_result(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
