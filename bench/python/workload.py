"""One side (rusk or Dask) of the Python benchmark: run with the benchmark venv's interpreter
(bench/.venv/bin/python, which has rusk, dask, distributed and numpy), print nothing on stdout,
write the timings as JSON to --out. bench/python/suite.py runs it for each side and compares.

  workload.py --system rusk|dask --bench throughput --out F.json [--reps 5]
              [--only map,tree,...] [--reps-for NAME=N] [--rusk-env KEY=VALUE]
      the cluster: 2 worker processes x 1 thread (rusk.Client(n_workers=2,
      threads_per_worker=1) / distributed.LocalCluster(n_workers=2, threads_per_worker=1,
      processes=True)); then each benchmark, warmed up once (not map100k and uneven: the
      benchmarks before them warm the same paths, and a warm-up would double their time) and
      timed --reps times (--reps-for map100k=1 overrides that for one benchmark):
        map      client.map(noop, range(10,000)) then client.gather of the 10,000 futures
        tree     a binary tree reduction over 4,096 dask.delayed leaves (8,191 tasks),
                 dask.compute(root, scheduler=client.get); also the client's part of it: from
                 dask.compute until the graph has been submitted (rusk: Client._submit_graph
                 returned; Dask: Client._graph_to_futures returned), instrumented here by
                 wrapping that method on the client instance
        array    da.random.random((20000, 20000), chunks=(1000, 1000)).sum(),
                 dask.compute(s, scheduler=client.get)
        persist  x = client.persist(da.random.random((8000, 8000), chunks=(1000, 1000))), waited
                 for (not timed), then 10 reductions over x one after the other, each
                 dask.compute(r, scheduler=client.get): the figure is the total of the 10
        map100k  client.map(noop, range(100,000), pure=False) then client.gather
                 (--map-big N: another size; the suite's --quick takes 20,000)
        uneven   client.map(sleep, durations, pure=False) of 1,000 tasks sleeping 1-100 ms
                 (random.Random(UNEVEN_SEED): the same list on both sides), then gather: the
                 makespan (map call to gathered list) and each task's completion latency (map
                 call to the moment as_completed yields its future), p50 and p99
        scatter  client.scatter of a 1 GiB float64 numpy array (hash=False), until the future
                 is returned; checked by a task that returns the array's nbytes. Recorded as
                 missing when the client has no scatter method.

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
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tasks  # noqa: E402

N_MAP = 10_000
N_MAP_BIG = 100_000
N_LEAVES = 4_096
ARRAY_SHAPE = (20_000, 20_000)
ARRAY_CHUNKS = (1_000, 1_000)
PERSIST_SHAPE = (8_000, 8_000)  # 512 MB in 64 chunks of 8 MB; the 10 reductions take Dask ~1-2 s
PERSIST_CHUNKS = (1_000, 1_000)
N_UNEVEN = 1_000
UNEVEN_MS = (1, 100)
UNEVEN_SEED = 10
SCATTER_BYTES = 1 << 30
PROBE_SLEEP = 0.05
PROBE_TIMEOUT = 2.0


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- the two systems behind one small interface ---


class RuskSide:
    name = "rusk"

    def __init__(self, hang_timeout=None, extra_env=()):
        import rusk

        env = {"RUSK_LOG": "warn"}
        if hang_timeout:
            env["RUSK_EXECUTOR_HANG_TIMEOUT"] = hang_timeout
        for item in extra_env:
            key, _, value = item.partition("=")
            env[key] = value
        self.rusk = rusk
        self.client = rusk.Client(n_workers=2, threads_per_worker=1, env=env)
        self.get = self.client.get
        # The moment the last graph was submitted: Client._submit_graph (which client.get calls
        # once the Dask graph is converted) returned. Wrapped on this instance only.
        self.submitted_at = None
        submit_graph = self.client._submit_graph

        def timed_submit_graph(*args, **kwargs):
            out = submit_graph(*args, **kwargs)
            self.submitted_at = time.perf_counter()
            return out

        self.client._submit_graph = timed_submit_graph

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

    def persisted_futures(self, coll):
        return [v for v in dict(coll.__dask_graph__()).values() if isinstance(v, self.rusk.Future)]

    def wait_persisted(self, coll):
        futures = self.persisted_futures(coll)
        assert futures, "persist: no futures in the persisted collection's graph"
        self.rusk.wait(futures)

    def as_completed(self, futures):
        return self.rusk.as_completed(futures)

    def can_scatter(self):
        return hasattr(self.client, "scatter")

    def scatter(self, data):
        return self.client.scatter(data, hash=False)

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
        # As on the rusk side: the moment client.get had sent the graph (_graph_to_futures
        # returned: the update-graph message is queued on the client's batched stream).
        self.submitted_at = None
        graph_to_futures = self.client._graph_to_futures

        def timed_graph_to_futures(*args, **kwargs):
            out = graph_to_futures(*args, **kwargs)
            self.submitted_at = time.perf_counter()
            return out

        self.client._graph_to_futures = timed_graph_to_futures

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

    def wait_persisted(self, coll):
        self.distributed.wait(coll)

    def as_completed(self, futures):
        return self.distributed.as_completed(futures)

    def can_scatter(self):
        return True

    def scatter(self, data):
        return self.client.scatter(data, hash=False)

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
        return RuskSide(hang_timeout=args.hang_timeout, extra_env=args.rusk_env)
    return DaskSide(worker_ttl=args.worker_ttl, extra_config=args.dask_config)


# --- throughput: map, tree, array ---


def bench_map(side, n=N_MAP):
    items = list(range(n))
    t0 = time.perf_counter()
    futures = side.map(tasks.noop, items)
    t1 = time.perf_counter()
    results = side.gather(futures)
    t2 = time.perf_counter()
    assert results == items, "map: wrong results"
    del futures, results
    return t2 - t0, {"submit_s": t1 - t0, "gather_s": t2 - t1}


def bench_map100k(side):
    return bench_map(side, N_MAP_BIG)  # N_MAP_BIG: --map-big


def tree_graph():
    import dask

    level = [dask.delayed(tasks.inc)(i) for i in range(N_LEAVES)]
    while len(level) > 1:
        level = [dask.delayed(tasks.add)(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def bench_tree(side):
    import dask

    root = tree_graph()  # fresh keys every run (delayed calls are impure)
    side.submitted_at = None
    t0 = time.perf_counter()
    (value,) = dask.compute(root, scheduler=side.get)
    t1 = time.perf_counter()
    assert value == N_LEAVES * (N_LEAVES + 1) // 2, "tree: wrong result %r" % (value,)
    extra = {}
    if side.submitted_at is not None:
        # The client's part: converting and submitting the graph (dask.compute's own work, the
        # conversion to the system's tasks, sending them); the rest is running it and fetching
        # the result.
        extra = {"client_s": side.submitted_at - t0, "client_share": (side.submitted_at - t0) / (t1 - t0)}
    return t1 - t0, extra


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


def reductions(x):
    """10 different reductions over x: (name, collection, check of the value)."""
    n = x.size
    return [
        ("sum", x.sum(), lambda v: abs(v / n - 0.5) < 1e-2),
        ("mean", x.mean(), lambda v: abs(v - 0.5) < 1e-2),
        ("std", x.std(), lambda v: abs(v - 0.2887) < 1e-2),
        ("var", x.var(), lambda v: abs(v - 1 / 12) < 1e-2),
        ("max", x.max(), lambda v: 0.99 < v < 1),
        ("min", x.min(), lambda v: 0 <= v < 0.01),
        ("sum(axis=0)", x.sum(axis=0), lambda v: v.shape == (x.shape[1],)),
        ("mean(axis=1)", x.mean(axis=1), lambda v: v.shape == (x.shape[0],)),
        ("max(axis=0)", x.max(axis=0), lambda v: v.shape == (x.shape[1],)),
        ("argmin(axis=1)", x.argmin(axis=1), lambda v: v.shape == (x.shape[0],)),
    ]


def bench_persist(side):
    import dask
    import dask.array as da

    x = da.random.random(PERSIST_SHAPE, chunks=PERSIST_CHUNKS)  # a new seed every run
    t0 = time.perf_counter()
    x = side.client.persist(x)
    side.wait_persisted(x)
    t1 = time.perf_counter()
    each = {}
    for name, r, check in reductions(x):
        t = time.perf_counter()
        (value,) = dask.compute(r, scheduler=side.get)
        each[name] = time.perf_counter() - t
        assert check(value), "persist: %s gave %r" % (name, value)
    total = time.perf_counter() - t1
    del x
    return total, {"persist_s": t1 - t0, "each_s": each}


def uneven_durations():
    rng = random.Random(UNEVEN_SEED)
    return [rng.randint(*UNEVEN_MS) / 1000 for _ in range(N_UNEVEN)]


def percentile(values, q):
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def bench_uneven(side):
    durations = uneven_durations()
    t0 = time.perf_counter()
    futures = side.map(tasks.sleep, durations)
    latencies = []
    for _ in side.as_completed(futures):
        latencies.append(time.perf_counter() - t0)
    results = side.gather(futures)
    t1 = time.perf_counter()
    assert results == durations, "uneven: wrong results"
    assert len(latencies) == len(durations), "uneven: %d completions" % len(latencies)
    del futures, results
    return t1 - t0, {
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "busy_lower_bound_s": sum(durations) / 2,
    }


_SCATTER_DATA = []


def bench_scatter(side):
    import numpy as np

    if not side.can_scatter():
        raise NotImplementedError("the client has no scatter method")
    if not _SCATTER_DATA:
        _SCATTER_DATA.append(np.full(SCATTER_BYTES // 8, 1.0))  # made once, outside the clock
    data = _SCATTER_DATA[0]
    t0 = time.perf_counter()
    fut = side.scatter(data)
    t1 = time.perf_counter()
    nbytes = side.submit(tasks.nbytes, fut).result()
    assert nbytes == SCATTER_BYTES, "scatter: the worker has %r bytes" % (nbytes,)
    side.cancel([fut])
    del fut
    time.sleep(0.5)  # let the worker drop the gigabyte before the next run
    return t1 - t0, {}


BENCHES = {
    "map": bench_map,
    "tree": bench_tree,
    "array": bench_array,
    "persist": bench_persist,
    "map100k": bench_map100k,
    "uneven": bench_uneven,
    "scatter": bench_scatter,
}
NO_WARMUP = {"map100k", "uneven"}


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
    reps_for = {}
    for item in args.reps_for:
        key, _, value = item.partition("=")
        reps_for[key] = int(value)
    try:
        for name in args.only.split(","):
            fn = BENCHES[name]
            try:
                if name not in NO_WARMUP:
                    fn(side)  # warm-up
            except NotImplementedError as e:
                log("%s %s: not measured: %s" % (args.system, name, e))
                out["benches"][name] = {"missing": str(e)}
                continue
            times, extras = [], []
            for i in range(reps_for.get(name, args.reps)):
                dt, extra = fn(side)
                times.append(dt)
                extras.append(extra)
                log("%s %s run %d: %.3f s %s" % (args.system, name, i + 1, dt, extra or ""))
            res = summary(times)
            for k in extras[0] if extras else ():
                if isinstance(extras[0][k], (int, float)):
                    # submit_s -> submit_median_s, client_share -> client_share_median
                    med = k[:-2] + "_median_s" if k.endswith("_s") else k + "_median"
                    res[med] = statistics.median(e[k] for e in extras)
            res["extras"] = extras
            if name == "map100k":
                res["n"] = N_MAP_BIG
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
    global N_MAP_BIG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=["rusk", "dask"], required=True)
    ap.add_argument("--bench", choices=["throughput", "hang"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default=",".join(BENCHES), help="throughput benchmarks to run "
                    "(comma-separated, in this order; default: all of %(default)s)")
    ap.add_argument("--reps-for", action="append", default=[], metavar="NAME=N",
                    help="timed runs of one throughput benchmark (default: --reps)")
    ap.add_argument("--map-big", type=int, default=N_MAP_BIG,
                    help="map100k: the number of tasks (default %(default)s)")
    ap.add_argument("--rusk-env", action="append", default=[], metavar="KEY=VALUE",
                    help="rusk: an environment variable for the cluster's processes "
                    "(rusk.Client(env=...)), e.g. a scheduler switch")
    ap.add_argument("--cap", type=float, default=120.0, help="hang: give up on a run after this")
    ap.add_argument("--worker-ttl", help="dask: distributed.scheduler.worker-ttl (default: Dask's)")
    ap.add_argument("--dask-config", action="append", default=[], metavar="KEY=VALUE",
                    help="dask: another dask.config setting (a string value), e.g. "
                    "distributed.scheduler.worker-saturation=inf")
    ap.add_argument("--hang-timeout", help="rusk: RUSK_EXECUTOR_HANG_TIMEOUT (default: rusk's)")
    args = ap.parse_args()
    N_MAP_BIG = args.map_big
    out = run_throughput(args) if args.bench == "throughput" else run_hang(args)
    out["args"] = {k: v for k, v in vars(args).items() if k != "out"}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
