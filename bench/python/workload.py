"""One side (rusk or Dask) of the Python benchmark: run with the benchmark venv's interpreter
(bench/.venv/bin/python, which has rusk, dask, distributed and numpy), print nothing on stdout,
write the timings as JSON to --out. bench/python/suite.py runs it for each side and compares.

  workload.py --system rusk|dask --bench throughput --out F.json [--reps 5]
      the cluster: 2 worker processes x 1 thread (rusk.Client(n_workers=2,
      threads_per_worker=1) / distributed.LocalCluster(n_workers=2, threads_per_worker=1,
      processes=True)); then, each warmed up once and timed --reps times:
        map    client.map(noop, range(10,000)) then client.gather of the 10,000 futures
        tree   a binary tree reduction over 4,096 dask.delayed leaves (8,191 tasks),
               dask.compute(root, scheduler=client.get)
        array  da.random.random((20000, 20000), chunks=(1000, 1000)).sum(),
               dask.compute(s, scheduler=client.get)

  workload.py --system rusk|dask --bench hang --out F.json [--reps 5] [--cap 120]
              [--worker-ttl 5s] [--hang-timeout 5s]
      submit one task that holds the GIL for 600 s (tasks.hang) and time, from the submission:
        detected   until its future is done (an error)
        recovered  until, after that, two probe tasks submitted together (one client.map call;
                   each sleeps 50 ms and returns the pid of the process that ran it) come back
                   from two different processes: both slots run tasks again.
      A run that has not recovered within --cap seconds counts as ">= cap"; the cluster is then
      replaced. Once more than half the runs are capped the median is known (">= cap") and the
      remaining runs are skipped.
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tasks  # noqa: E402

N_MAP = 10_000
N_LEAVES = 4_096
ARRAY_SHAPE = (20_000, 20_000)
ARRAY_CHUNKS = (1_000, 1_000)
PROBE_SLEEP = 0.05
PROBE_TIMEOUT = 2.0


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- the two systems behind one small interface ---


class RuskSide:
    name = "rusk"

    def __init__(self, hang_timeout=None):
        import rusk

        env = {"RUSK_LOG": "warn"}
        if hang_timeout:
            env["RUSK_EXECUTOR_HANG_TIMEOUT"] = hang_timeout
        self.rusk = rusk
        self.client = rusk.Client(n_workers=2, threads_per_worker=1, env=env)
        self.get = self.client.get

    def version(self):
        import dask

        return "rusk %s (dask %s for the graphs)" % (self.rusk.__version__, dask.__version__)

    def map(self, fn, items):
        return self.client.map(fn, items, pure=False)

    def gather(self, futures, timeout=None):
        return self.client.gather(futures, timeout=timeout)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_done(self, fut, timeout):
        """True once the future is done; False after `timeout` seconds."""
        try:
            self.rusk.wait([fut], timeout=timeout)
        except TimeoutError:
            return False
        return fut.done()

    def failed(self, fut):
        return fut.exception() is not None

    def cancel(self, futures):
        self.client.cancel(futures)

    def close(self):
        self.client.close()


class DaskSide:
    name = "dask"

    def __init__(self, worker_ttl=None, extra_config=()):
        import dask
        import distributed

        cfg = {
            # No re-runs of a task whose worker died: the equivalent of the rusk hang task's
            # retries=0 (Dask's default, 3, would run the hang on the next worker too).
            "distributed.scheduler.allowed-failures": 0,
        }
        if worker_ttl:
            cfg["distributed.scheduler.worker-ttl"] = worker_ttl
        for item in extra_config:
            key, _, value = item.partition("=")
            cfg[key] = value
        dask.config.set(cfg)
        self.distributed = distributed
        self.cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
        self.client = distributed.Client(self.cluster)
        self.client.wait_for_workers(2)
        self.get = self.client.get

    def version(self):
        import dask

        return "distributed %s, dask %s" % (self.distributed.__version__, dask.__version__)

    def map(self, fn, items):
        return self.client.map(fn, items, pure=False)

    def gather(self, futures, timeout=None):
        if timeout is not None:
            self.distributed.wait(futures, timeout=timeout)
        return self.client.gather(futures)

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_done(self, fut, timeout):
        try:
            self.distributed.wait([fut], timeout=timeout)
        except (TimeoutError, self.distributed.TimeoutError):
            return False
        return fut.done()

    def failed(self, fut):
        return fut.status == "error"

    def cancel(self, futures):
        self.client.cancel(futures)

    def close(self):
        pids = []
        try:
            import psutil

            pids = [p.pid for p in psutil.Process().children(recursive=True)]
        except Exception:
            pass
        try:
            self.client.close(timeout=10)
            self.cluster.close(timeout=10)
        except Exception as e:
            log("dask: close: %r" % (e,))
        _kill_leftovers(pids)


def _kill_leftovers(pids):
    """SIGKILL the processes with these pids (children this process started) if still alive."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def make_side(args):
    if args.system == "rusk":
        return RuskSide(hang_timeout=args.hang_timeout)
    return DaskSide(worker_ttl=args.worker_ttl, extra_config=args.dask_config)


# --- throughput: map, tree, array ---


def bench_map(side):
    items = list(range(N_MAP))
    t0 = time.perf_counter()
    futures = side.map(tasks.noop, items)
    t1 = time.perf_counter()
    results = side.gather(futures)
    t2 = time.perf_counter()
    assert results == items, "map: wrong results"
    del futures, results
    return t2 - t0, {"submit_s": t1 - t0, "gather_s": t2 - t1}


def tree_graph():
    import dask

    level = [dask.delayed(tasks.inc)(i) for i in range(N_LEAVES)]
    while len(level) > 1:
        level = [dask.delayed(tasks.add)(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def bench_tree(side):
    import dask

    root = tree_graph()  # fresh keys every run (delayed calls are impure)
    t0 = time.perf_counter()
    (value,) = dask.compute(root, scheduler=side.get)
    t1 = time.perf_counter()
    assert value == N_LEAVES * (N_LEAVES + 1) // 2, "tree: wrong result %r" % (value,)
    return t1 - t0, {}


def bench_array(side):
    import dask
    import dask.array as da

    total = da.random.random(ARRAY_SHAPE, chunks=ARRAY_CHUNKS).sum()  # a new seed every run
    t0 = time.perf_counter()
    (value,) = dask.compute(total, scheduler=side.get)
    t1 = time.perf_counter()
    n = ARRAY_SHAPE[0] * ARRAY_SHAPE[1]
    assert abs(value / n - 0.5) < 1e-3, "array: mean %r" % (value / n,)
    return t1 - t0, {}


BENCHES = {"map": bench_map, "tree": bench_tree, "array": bench_array}


def summary(times):
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs_s": times,
    }


def run_throughput(args):
    out = {"system": args.system, "benches": {}}
    t = time.perf_counter()
    side = make_side(args)
    out["startup_s"] = time.perf_counter() - t
    out["version"] = side.version()
    try:
        for name in args.only.split(","):
            fn = BENCHES[name]
            fn(side)  # warm-up
            times, extras = [], []
            for i in range(args.reps):
                dt, extra = fn(side)
                times.append(dt)
                extras.append(extra)
                log("%s %s run %d: %.3f s %s" % (args.system, name, i + 1, dt, extra or ""))
            res = summary(times)
            for k in extras[0] if extras else ():
                res[k.replace("_s", "_median_s")] = statistics.median(e[k] for e in extras)
            out["benches"][name] = res
    finally:
        side.close()
    return out


# --- hang ---


def capacity_back(side, deadline):
    """Submit two probes in one request (client.map) until two different processes answer;
    False at `deadline`. (One map call, not two submit calls: rusk's scheduler places tasks
    that arrive one at a time on the same worker while it has queue room, busy or not.)"""
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        futures = side.map(tasks.probe, [PROBE_SLEEP] * 2)
        left = max(0.01, min(PROBE_TIMEOUT, deadline - time.monotonic()))
        try:
            pids = side.gather(futures, timeout=left)
        except Exception:
            side.cancel(futures)
            continue
        if len(set(pids)) == 2:
            return attempts
    return False


def one_hang(side, cap):
    t0 = time.monotonic()
    deadline = t0 + cap
    fut = side.submit(tasks.hang, 600)
    if not side.wait_done(fut, cap):
        return {"outcome": "capped"}
    detected = time.monotonic() - t0
    ok = side.failed(fut)
    attempts = capacity_back(side, deadline)
    if not attempts:
        return {"outcome": "capped", "detected_s": detected}
    return {
        "outcome": "recovered",
        "detected_s": detected,
        "recovered_s": time.monotonic() - t0,
        "hang_failed": ok,
        "probe_attempts": attempts,
    }


def run_hang(args):
    out = {"system": args.system, "cap_s": args.cap, "runs": []}
    side = make_side(args)
    out["version"] = side.version()
    try:
        # Warm-up: the task module imported and (rusk) the executors started.
        t = time.monotonic()
        if not capacity_back(side, time.monotonic() + 60):
            raise RuntimeError("the cluster does not run two probes at once")
        out["baseline_probe_s"] = time.monotonic() - t
        capped = 0
        for i in range(args.reps):
            run = one_hang(side, args.cap)
            out["runs"].append(run)
            log("%s hang run %d: %s" % (args.system, i + 1, run))
            if run["outcome"] != "recovered":
                capped += 1
                if capped * 2 > args.reps:
                    log("%s hang: %d of %d runs capped: the median is >= the cap" % (args.system, capped, args.reps))
                    break
                # The cluster still has a hung worker: start over with a fresh one.
                side.close()
                side = make_side(args)
                if not capacity_back(side, time.monotonic() + 60):
                    raise RuntimeError("the new cluster does not run two probes at once")
            elif not capacity_back(side, time.monotonic() + 60):
                raise RuntimeError("the cluster did not stay healthy after run %d" % (i + 1))
    finally:
        side.close()
    rec = [r["recovered_s"] for r in out["runs"] if r["outcome"] == "recovered"]
    det = [r["detected_s"] for r in out["runs"] if "detected_s" in r]
    n = len(out["runs"])
    capped = n - len(rec)
    # Capped runs count as infinitely long: the median is then a time or ">= cap" (None).
    m = statistics.median(sorted(rec) + [float("inf")] * capped) if n else float("inf")
    out["median_s"] = None if m == float("inf") else m
    out["capped_runs"] = capped
    out["detected_median_s"] = statistics.median(det) if det and len(det) == n else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=["rusk", "dask"], required=True)
    ap.add_argument("--bench", choices=["throughput", "hang"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="map,tree,array", help="throughput benchmarks to run")
    ap.add_argument("--cap", type=float, default=120.0, help="hang: give up on a run after this")
    ap.add_argument("--worker-ttl", help="dask: distributed.scheduler.worker-ttl (default: Dask's)")
    ap.add_argument("--dask-config", action="append", default=[], metavar="KEY=VALUE",
                    help="dask: another dask.config setting (a string value), e.g. "
                    "distributed.scheduler.worker-saturation=inf")
    ap.add_argument("--hang-timeout", help="rusk: RUSK_EXECUTOR_HANG_TIMEOUT (default: rusk's)")
    args = ap.parse_args()
    out = run_throughput(args) if args.bench == "throughput" else run_hang(args)
    out["args"] = {k: v for k, v in vars(args).items() if k != "out"}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
