"""One side (rusk or Dask) and one shape of the data-plane benchmark; run with the benchmark
venv's interpreter. Prints progress on stderr and writes the timings as JSON to --out after every
run, so that a run the suite has to kill for its time limit still leaves the runs before it.
bench/data/suite.py runs it once per side and shape and compares.

  workload.py --system rusk|dask --shape SHAPE --out F.json [--reps 3] [--warmup 1] [--quick]
  workload.py --system socket --shape socket --out F.json     (the loopback TCP baseline)

The cluster is the one of bench/python/workload.py (RuskSide / DaskSide: 2 worker processes x 1
thread). Shapes (sizes with --quick in brackets):

  rechunk    da.random.random((4000, 4000), chunks=(4000, 100)).rechunk((100, 4000),
             method="tasks").sum(axis=1)                                      [2000, 50]
  rechunk-default  the same with Dask's default method (p2p here), Dask only
  merge      dask.dataframe inner merge of 300,000 x 200,000 rows (12 and 8 partitions made in
             the graph by from_map), shuffle_method="tasks"; sum and count of the result
                                                                              [30,000 x 20,000]
  merge-default    the same with Dask's default shuffle method (p2p here), Dask only
  dot        x.dot(x.T).sum(), x 3000 x 3000 in 500 x 500 chunks              [1500, 250]
  gather     one 200 MB chunk, da.ones((25_000_000,), chunks=-1), returned to the client
  transpose  (x + x.T).sum(), x 4000 x 4000 in 500 x 500 chunks               [2000]
  tsqr       q, r = da.linalg.tsqr(x), x 200,000 x 100 in 10,000-row chunks; (q ** 2).sum(), r
                                                                              [50,000]
  overlap    x.map_overlap(stencil, depth=1, boundary="reflect").sum(), x 4000 x 4000 in
             1000 x 1000 chunks; stencil = a 5-point average                  [2000, 500]
  groupby    dask.dataframe groupby("k").v.agg(["sum", "mean", "count"]), 2,000,000 rows in 16
             partitions made in the graph (from_map), 1,000 keys               [200,000, 4]
  sort       dask.dataframe sort_values("k"), 1,000,000 rows in 8 partitions, k scrambled;
             the sorted frame returned to the client                           [100,000, 4]
  bag        dask.bag word frequencies of 200,000 lines in 16 partitions        [20,000, 4]
  lambdas    dask.compute of 5,000 delayed calls, each of a lambda of its own (a closure made
             in a loop, as user code does)                                     [500]
  transfer   a task on worker A makes a 1 GiB uint8 array, a task on worker B consumes it; the
             time from submitting the consumer to its result [256 MiB]. Meanwhile every worker
             process that may receive it (and its rusk executors) is sampled every 10 ms (its
             footprint, see "process memory" below, and VmRSS, RssAnon, RssFile, RssShmem), with
             VmHWM reset first (/proc/PID/clear_refs): the receiving worker's peak memory.
             Dask pins with workers=[A] / workers=[B]. rusk has no workers= (client.submit has no
             placement argument): its scheduler puts a task on the worker holding most of its
             input bytes when that worker has room. So the rusk cluster runs with
             --assigned-per-thread 1, the producer is made to land on worker A by depending on a
             tiny anchor task that ran there, a task that waits for a file (also depending on
             the anchor) then occupies A's only slot, and the consumer, with no room on A, goes
             to B and fetches the value. Where it ran is checked (its pid) and recorded.
  stored     the memory a worker takes for a stored result of N = 64 MiB [16 MiB] (a uint8
             array from a task, kept): the footprint (see "process memory" below) of the worker
             process and its executors before and 0.5 s after the task finished; every run adds
             one more value.
  socket     no cluster: a forked child sends 1 GiB [256 MiB] over a loopback TCP connection,
             this process receives it into one new buffer (np.empty, recv_into); the time from
             accept to the last byte, the buffer's allocation included.
"""
import argparse
import importlib.util
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import data_tasks  # noqa: E402

GIB = 1 << 30
MIB = 1 << 20

FULL = {
    "rechunk": (4000, 100),
    "merge": (300_000, 200_000, 12, 8),
    "dot": (3000, 500),
    "gather": 25_000_000,
    "transpose": (4000, 500),
    "tsqr": (200_000, 100, 10_000),
    "overlap": (4000, 1000),
    "groupby": (2_000_000, 16),
    "sort": (1_000_000, 8),
    "bag": (200_000, 16),
    "lambdas": 5000,
    "transfer": GIB,
    "stored": 64 * MIB,
    "socket": GIB,
}
QUICK = dict(
    FULL,
    rechunk=(2000, 50),
    merge=(30_000, 20_000, 4, 4),
    dot=(1500, 250),
    transpose=(2000, 500),
    tsqr=(50_000, 100, 10_000),
    overlap=(2000, 500),
    groupby=(200_000, 4),
    sort=(100_000, 4),
    bag=(20_000, 4),
    lambdas=500,
    transfer=256 * MIB,
    stored=16 * MIB,
    socket=256 * MIB,
)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def compute(side, *collections):
    import dask

    return dask.compute(*collections, scheduler=side.get)


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


# --- the array and dataframe shapes: (seconds, extras) per run ---


def shape_rechunk(side, size, method="tasks"):
    import dask.array as da

    n, c = size
    x = da.random.random((n, n), chunks=(n, c))
    s = x.rechunk((c, n), method=method).sum(axis=1)
    dt, (v,) = timed(lambda: compute(side, s))
    assert v.shape == (n,) and abs(v.mean() / n - 0.5) < 0.01, "rechunk: wrong result"
    return dt, {"tasks": len(s.__dask_graph__())}


def shape_merge(side, size, method="tasks"):
    import dask.dataframe as dd

    nl, nr, pl, pr = size
    salt = uuid.uuid4().hex
    left = dd.from_map(data_tasks.make_left, range(pl), args=(nl // pl, nr, salt),
                       meta=data_tasks.make_left(0, 0, nr), enforce_metadata=False)
    right = dd.from_map(data_tasks.make_right, range(pr), args=(nr // pr, salt),
                        meta=data_tasks.make_right(0, 0), enforce_metadata=False)
    m = left.merge(right, on="k", how="inner", shuffle_method=method)
    sx, cy = m["x"].sum(), m["y"].count()
    dt, (vx, vc) = timed(lambda: compute(side, sx, cy))
    assert vc == nl and vx == nl * (nl - 1) / 2, "merge: wrong result %r %r" % (vx, vc)
    return dt, {}


def shape_dot(side, size):
    import dask.array as da

    n, c = size
    x = da.random.random((n, n), chunks=c)
    s = x.dot(x.T).sum()
    dt, (v,) = timed(lambda: compute(side, s))
    assert abs(v / (n ** 3 / 4) - 1) < 0.02, "dot: wrong result"
    return dt, {}


def shape_gather(side, n):
    import dask.array as da

    x = da.ones((n,), chunks=-1)
    dt, (v,) = timed(lambda: compute(side, x))
    assert v.shape == (n,) and v[0] == 1 and v[-1] == 1, "gather: wrong result"
    return dt, {"bytes": int(v.nbytes)}


def shape_transpose(side, size):
    import dask.array as da

    n, c = size
    x = da.random.random((n, n), chunks=c)
    s = (x + x.T).sum()
    dt, (v,) = timed(lambda: compute(side, s))
    assert abs(v / (n * n) - 1) < 0.01, "transpose: wrong result"
    return dt, {}


def shape_tsqr(side, size):
    import dask.array as da

    rows, cols, c = size
    x = da.random.random((rows, cols), chunks=(c, cols))
    q, r = da.linalg.tsqr(x)
    dt, (qq, rv) = timed(lambda: compute(side, (q ** 2).sum(), r))
    assert abs(qq - cols) < 1e-6 * cols and rv.shape == (cols, cols), "tsqr: wrong result"
    return dt, {}


def shape_overlap(side, size):
    import dask.array as da

    n, c = size
    x = da.random.random((n, n), chunks=c)
    s = x.map_overlap(data_tasks.stencil, depth=1, boundary="reflect").sum()
    dt, (v,) = timed(lambda: compute(side, s))
    assert abs(v / (n * n) - 0.5) < 0.01, "overlap: wrong result"
    return dt, {}


def shape_groupby(side, size):
    import dask.dataframe as dd

    rows, parts = size
    salt = uuid.uuid4().hex
    df = dd.from_map(data_tasks.make_keyed, range(parts), args=(rows // parts, 1000, salt),
                     meta=data_tasks.make_keyed(0, 0, 1000), enforce_metadata=False)
    g = df.groupby("k").v.agg(["sum", "mean", "count"])
    dt, (v,) = timed(lambda: compute(side, g))
    assert v.shape == (1000, 3) and v["count"].sum() == rows, "groupby: wrong result"
    return dt, {}


def shape_sort(side, size):
    import dask.dataframe as dd

    rows, parts = size
    salt = uuid.uuid4().hex
    df = dd.from_map(data_tasks.make_shuffled, range(parts), args=(rows // parts, salt),
                     meta=data_tasks.make_shuffled(0, 0), enforce_metadata=False)
    s = df.sort_values("k")
    dt, (v,) = timed(lambda: compute(side, s))
    assert len(v) == rows and v["k"].is_monotonic_increasing, "sort: wrong result"
    return dt, {}


def shape_bag(side, size):
    import dask.bag as db

    lines, parts = size
    salt = uuid.uuid4().hex[:6]
    text = ["the quick brown fox %s jumps over the lazy dog %d" % (salt, i % 100)
            for i in range(lines)]
    b = db.from_sequence(text, npartitions=parts).str.split().flatten().frequencies()
    dt, (v,) = timed(lambda: compute(side, b))
    assert len(v) == 109 and dict(v)["fox"] == lines, "bag: wrong result"
    return dt, {}


def shape_lambdas(side, n):
    import dask

    salt = uuid.uuid4().hex  # new keys each run
    calls = [dask.delayed(lambda i, s=salt: i * 2, pure=False)(i) for i in range(n)]
    dt, v = timed(lambda: compute(side, *calls))
    assert sum(v) == n * (n - 1), "lambdas: wrong result"
    return dt, {}


# --- process memory ---
#
# A worker's memory is its processes' anonymous memory plus the shared-memory objects (memfds,
# /dev/shm files) they hold: rusk keeps large values in memfds that a process may hold without
# mapping them (or map without touching every page), so RSS would not see them, and a worker and
# its executor mapping the same memfd would count it twice. So
#   footprint = sum over the processes of RssAnon
#             + sum over the distinct shared-memory objects they hold open or map of the bytes
#               allocated to each (st_blocks).
# File-backed pages (the binaries and libraries) are left out: they are shared with every other
# process running the same code, and no value lives there. (Pss would share them out, but then
# the figure moves whenever another process mapping libpython starts or exits.)

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def proc_status(pid):
    """{field: bytes} of /proc/PID/status (STATUS_FIELDS), or None if the process is gone."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in STATUS_FIELDS:
                    out[name] = int(rest.split()[0]) * 1024
    except OSError:
        return None
    return out


def _is_shm(path):
    return path.startswith("/memfd:") or path.startswith("/dev/shm/")


def shm_objects(pid):
    """{(dev, inode): allocated bytes} of the shared-memory files a process holds open or maps
    (needs root or the same user)."""
    paths = []
    try:
        fd_dir = "/proc/%d/fd" % pid
        for name in os.listdir(fd_dir):
            try:
                if _is_shm(os.readlink(os.path.join(fd_dir, name))):
                    paths.append(os.path.join(fd_dir, name))
            except OSError:
                pass
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) == 6 and _is_shm(fields[5].strip()):
                    paths.append("/proc/%d/map_files/%s" % (pid, fields[0]))
    except OSError:
        return {}
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return out


def footprint(pids):
    """The memory of a group of processes (see above): {"total", "private" (RssAnon summed),
    "shm", "shm_objects", "VmRSS", "RssAnon", "RssFile", "RssShmem", "per_pid_rss"}."""
    shm = {}
    fields = dict.fromkeys(("VmRSS", "RssAnon", "RssFile", "RssShmem"), 0)
    per_pid = {}
    for pid in pids:
        st = proc_status(pid)
        if st is None:
            continue
        for f in fields:
            fields[f] += st.get(f, 0)
        per_pid[pid] = st.get("VmRSS", 0)
        shm.update(shm_objects(pid))
    shm_bytes = sum(shm.values())
    return dict(fields, total=fields["RssAnon"] + shm_bytes, private=fields["RssAnon"],
                shm=shm_bytes, shm_objects=len(shm), per_pid_rss=per_pid)


def reset_hwm(pid):
    """Reset the process's peak RSS (VmHWM) to its current RSS (needs root or the same user)."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children(pid):
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def group(root):
    """A worker process and its descendants (rusk's executors)."""
    return [root] + children(root)


class Sampler:
    """The footprint of some groups of processes (a worker and its descendants, found again
    every 100 ms) every `interval` seconds, in a thread."""

    def __init__(self, roots, interval=0.01):
        self.roots = list(roots)
        self.interval = interval
        self.samples = []  # (t, {root: footprint})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def _run(self):
        members = {}
        found_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - found_at > 0.1:
                members = {r: group(r) for r in self.roots}
                found_at = now
            snap = {r: footprint(pids) for r, pids in members.items()}
            self.samples.append((now - self.t0, snap))
            self._stop.wait(self.interval)

    def peak(self, root):
        """(t, footprint) of the sample where the group's footprint was highest, or None."""
        best = None
        for t, snap in self.samples:
            fp = snap.get(root)
            if fp and (best is None or fp["total"] > best[1]["total"]):
                best = (t, fp)
        return best


# --- the two placement mechanisms ---


class RuskPlacement:
    """Tasks on a chosen worker of the rusk cluster (see `transfer` in the module docstring)."""

    def __init__(self, side):
        self.client = side.client

    def worker_of_executor(self, pid):
        import psutil

        return psutil.Process(pid).ppid()

    def anchor(self):
        """(anchor future, worker pid): a tiny task and the worker process that ran it."""
        a = self.client.submit(data_tasks.pid, pure=False)
        return a, self.worker_of_executor(a.result())

    def on(self, anchor, fn, *args):
        """`fn(*args, anchor's value)` on the anchor's worker (while it has room)."""
        return self.client.submit(fn, *args, anchor, pure=False)

    def running_workers(self):
        return [w["pid"] for w in self.client.status()["workers"] if w.get("state") == "running"]


class DaskPlacement:
    def __init__(self, side):
        import os as _os

        self.client = side.client
        self.pids = side.client.run(_os.getpid)  # address -> worker pid
        self.addrs = sorted(self.pids)

    def submit(self, addr, fn, *args):
        return self.client.submit(fn, *args, workers=[addr], allow_other_workers=False,
                                  pure=False)


def shape_transfer(side, nbytes, state):
    """One 1 GiB worker-to-worker transfer; see the module docstring."""
    salt = uuid.uuid4().hex
    extra = {}
    if side.name == "rusk":
        pl = state.setdefault("placement", RuskPlacement(side))
        anchor, worker_a = pl.anchor()
        t0 = time.perf_counter()
        prod = pl.on(anchor, data_tasks.make_bytes, nbytes, salt)
        # Wait without fetching the value (as Dask's side does); raise if the producer failed
        # (e.g. a limit on result sizes).
        exc = prod.exception()
        if exc is not None:
            raise exc
        extra["produce_s"] = time.perf_counter() - t0
        flag = os.path.join(tempfile.gettempdir(), "rusk-bench-data-%s" % salt)
        blocker = pl.on(anchor, data_tasks.wait_for_file, flag)
        time.sleep(0.05)
        roots = [w for w in pl.running_workers() if w != worker_a]  # where the consumer may go
        for r in roots:
            for p in group(r):
                reset_hwm(p)
        sampler = Sampler(roots).start()
        try:
            t_submit = time.time()
            t1 = time.perf_counter()
            cons = side.client.submit(data_tasks.consume, prod, t_submit, pure=False)
            cpid, n, t_started = cons.result()
            dt = time.perf_counter() - t1
        finally:
            sampler.stop()
            open(flag, "w").close()
        try:
            blocker.result(timeout=30)
        finally:
            os.unlink(flag)
        worker_b = pl.worker_of_executor(cpid)
        extra.update(producer_worker=worker_a, consumer_worker=worker_b,
                     crossed=worker_a != worker_b)
        del anchor, prod, blocker, cons
    else:
        pl = state.setdefault("placement", DaskPlacement(side))
        a, b = pl.addrs[0], pl.addrs[1]
        worker_a, worker_b = pl.pids[a], pl.pids[b]
        t0 = time.perf_counter()
        prod = pl.submit(a, data_tasks.make_bytes, nbytes, salt)
        side.distributed.wait([prod])
        if prod.status != "finished":
            prod.result()
        extra["produce_s"] = time.perf_counter() - t0
        roots = [worker_b]
        for r in roots:
            reset_hwm(r)
        sampler = Sampler(roots).start()
        try:
            t_submit = time.time()
            t1 = time.perf_counter()
            cons = pl.submit(b, data_tasks.consume, prod, t_submit)
            cpid, n, t_started = cons.result()
            dt = time.perf_counter() - t1
        finally:
            sampler.stop()
        extra.update(producer_worker=worker_a, consumer_worker=worker_b, crossed=cpid == worker_b)
        del prod, cons
    assert n == nbytes, "transfer: the consumer got %d bytes" % n
    extra["consumer_started_s"] = t_started - t_submit  # inputs fetched and loaded by then
    peak = sampler.peak(worker_b)
    if peak:
        t, fp = peak
        fp["per_pid_rss"] = {str(p): v for p, v in fp["per_pid_rss"].items()}
        extra.update(peak=fp, peak_at_s=t)
    extra["hwm_per_pid"] = {str(p): (proc_status(p) or {}).get("VmHWM") for p in group(worker_b)}
    extra["samples"] = len(sampler.samples)
    return dt, extra


def shape_stored(side, nbytes, state):
    """The memory a worker adds for one more stored value of `nbytes` bytes (values are kept)."""
    salt = uuid.uuid4().hex
    keep = state.setdefault("keep", [])
    if side.name == "rusk":
        pl = state.setdefault("placement", RuskPlacement(side))
        anchor, worker = pl.anchor()
        keep.append(anchor)
        time.sleep(0.5)
        before = footprint(group(worker))
        t0 = time.perf_counter()
        fut = pl.on(anchor, data_tasks.make_bytes, nbytes, salt)
        side.rusk.wait([fut])
        if fut.exception() is not None:
            raise fut.exception()
        dt = time.perf_counter() - t0
        time.sleep(0.5)
        after = footprint(group(worker))
        stored = {w["pid"]: w.get("stored_bytes") for w in pl.client.status()["workers"]}
        extra = {"stored_bytes": stored.get(worker)}
    else:
        pl = state.setdefault("placement", DaskPlacement(side))
        addr = pl.addrs[0]
        worker = pl.pids[addr]
        if not keep:
            keep.append(pl.submit(addr, data_tasks.pid))  # warm the worker up
            keep[-1].result()
        time.sleep(0.5)
        before = footprint(group(worker))
        t0 = time.perf_counter()
        fut = pl.submit(addr, data_tasks.make_bytes, nbytes, salt)
        side.distributed.wait([fut])
        if fut.status != "finished":
            fut.result()
        dt = time.perf_counter() - t0
        time.sleep(0.5)
        after = footprint(group(worker))
        extra = {}
    keep.append(fut)
    extra.update(
        worker=worker,
        nbytes=nbytes,
        before=before,
        after=after,
        delta={k: after[k] - before[k] for k in after if k not in ("per_pid_rss",)},
    )
    return dt, extra


# --- the socket baseline ---


def socket_copy(nbytes):
    """Seconds for `nbytes` from a forked child to this process over loopback TCP."""
    import numpy as np

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    child = os.fork()
    if child == 0:
        try:
            data = np.ones(nbytes, dtype=np.uint8)  # made (and touched) before connecting
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(memoryview(data))
            s.close()
        finally:
            os._exit(0)
    try:
        conn, _ = lst.accept()
        t0 = time.perf_counter()
        buf = np.empty(nbytes, dtype=np.uint8)  # not zeroed: the pages are first touched by recv
        view = memoryview(buf)
        got = 0
        while got < nbytes:
            k = conn.recv_into(view[got:], nbytes - got)
            if k == 0:
                raise ConnectionError("socket: the sender closed after %d bytes" % got)
            got += k
        dt = time.perf_counter() - t0
        conn.close()
    finally:
        lst.close()
        os.waitpid(child, 0)
    del view, buf
    return dt, {}


# --- running one shape ---

ARRAY_SHAPES = {
    "rechunk": shape_rechunk,
    "rechunk-default": lambda side, size: shape_rechunk(side, size, method=None),
    "merge": shape_merge,
    "merge-default": lambda side, size: shape_merge(side, size, method=None),
    "dot": shape_dot,
    "gather": shape_gather,
    "transpose": shape_transpose,
    "tsqr": shape_tsqr,
    "overlap": shape_overlap,
    "groupby": shape_groupby,
    "sort": shape_sort,
    "bag": shape_bag,
    "lambdas": shape_lambdas,
}
STATEFUL_SHAPES = {"transfer": shape_transfer, "stored": shape_stored}
SHAPES = sorted(list(ARRAY_SHAPES) + list(STATEFUL_SHAPES) + ["socket"])


def first_line(e):
    text = str(e).strip() or type(e).__name__
    return "%s: %s" % (type(e).__name__, text.splitlines()[0])


def make_side(system, shape):
    # bench/python/workload.py (RuskSide, DaskSide), loaded under another name: this file is
    # called workload.py too.
    spec = importlib.util.spec_from_file_location(
        "python_workload", os.path.join(BENCH, "python", "workload.py"))
    py_workload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(py_workload)
    if system == "rusk":
        if shape == "transfer":
            os.environ["RUSK_ASSIGNED_PER_THREAD"] = "1"  # see the module docstring
        return py_workload.RuskSide()
    return py_workload.DaskSide()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", choices=["rusk", "dask", "socket"], required=True)
    ap.add_argument("--shape", choices=SHAPES, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ap.add_argument("--quick", action="store_true", help="smaller shapes")
    ap.add_argument("--nbytes", type=int, help="another value size for transfer, stored, socket")
    args = ap.parse_args()
    size = (QUICK if args.quick else FULL)[args.shape.replace("-default", "")]
    if args.nbytes and args.shape in ("transfer", "stored", "socket"):
        size = args.nbytes
    out = {"system": args.system, "shape": args.shape, "size": size, "runs_s": [], "extras": [],
           "error": None, "reps": args.reps, "loadavg_start": os.getloadavg()[0]}

    def save():
        with open(args.out + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    save()
    side = None
    state = {}
    phase = "start-up"
    try:
        if args.system == "socket":
            def fn():
                return socket_copy(size)
        else:
            t = time.perf_counter()
            side = make_side(args.system, args.shape)
            out["startup_s"] = time.perf_counter() - t
            out["version"] = side.version()
            # Import what the shapes use in every worker process (4 tasks over 2 workers).
            side.gather(side.map(data_tasks.warm_imports, range(4)))
            if args.shape in ARRAY_SHAPES:
                def fn():
                    return ARRAY_SHAPES[args.shape](side, size)
            else:
                def fn():
                    return STATEFUL_SHAPES[args.shape](side, size, state)
        phase = "warm-up"
        for i in range(args.warmup):
            dt, extra = fn()
            log("%s %s warm-up %d: %.3f s" % (args.system, args.shape, i + 1, dt))
        phase = "run"
        for i in range(args.reps):
            dt, extra = fn()
            out["runs_s"].append(dt)
            out["extras"].append(extra)
            save()
            short = {k: v for k, v in extra.items() if not isinstance(v, dict)}
            log("%s %s run %d: %.3f s %s" % (args.system, args.shape, i + 1, dt, short or ""))
    except Exception as e:  # a failing shape is a figure (MISS), not a crash
        out["error"] = first_line(e)
        out["error_phase"] = phase
        log("%s %s failed: %s" % (args.system, args.shape, out["error"]))
    finally:
        state.clear()
        if side is not None:
            side.close()
    out["loadavg_end"] = os.getloadavg()[0]
    if out["runs_s"]:
        out["median_s"] = statistics.median(out["runs_s"])
        out["min_s"], out["max_s"] = min(out["runs_s"]), max(out["runs_s"])
    save()


if __name__ == "__main__":
    main()
