"""The data plane seen from Python, with real processes, real signals and real results.

- A 2 GiB numpy chunk is produced on one worker, consumed on the other (streamed worker to
  worker, mapped in place by the consumer's executor) and gathered by the client as a
  read-only view of shared memory.
- Two workers limited to 1 GiB each hold about 3 GB of results: they spill, keep running (no
  restart) and every result, spilled or not, is still right. (The nanny's memory guard counts
  private memory only: stored values are shared memory and spilled ones mapped files.)
- ``kill -9`` of an executor while it writes a large result into its segment: the task is
  retried and nothing leaks on the worker.
- ``kill -9`` of a worker while it streams a large value (to the client, or to another worker):
  the value is recomputed and the results are right.
- A silent but computing executor is left alone past the hang timeout; one stuck in a C call
  holding the GIL is killed and its error carries its Python stack.

The tests marked ``heavy`` move gigabytes through shared memory (up to about 6 GiB of RAM at
once, in the first one); they run by default (``-m "not heavy"`` leaves them out).
"""

import gc
import os
import signal
import subprocess
import threading
import time

import pytest

import rusk
from conftest import wait_until

np = pytest.importorskip("numpy")

GIB = 1 << 30
MIB = 1 << 20

heavy = pytest.mark.heavy


# === helpers: processes and their shared-memory segments ===


def memfd_fds(pid, name):
    """``{fd: link}`` of the fds of ``pid`` that are memfds called ``name``
    (``/memfd:rusk-result (deleted)``)."""
    out = {}
    base = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(base)
    except FileNotFoundError:
        return out
    for fd in fds:
        try:
            link = os.readlink("%s/%s" % (base, fd))
        except OSError:
            continue
        if link.startswith("/memfd:%s" % name):
            out[int(fd)] = link
    return out


def memfd_maps(pid, name):
    """Mappings of memfds called ``name`` in ``pid`` (one line per mapping)."""
    try:
        with open("/proc/%d/maps" % pid) as f:
            return [line for line in f if "/memfd:%s" % name in line]
    except FileNotFoundError:
        return []


def segments(pid):
    """Counts of a worker's segment fds and mappings, by memfd name."""
    return {
        "result_fds": len(memfd_fds(pid, "rusk-result")),
        "value_fds": len(memfd_fds(pid, "rusk-value")),
        "result_maps": len(memfd_maps(pid, "rusk-result")),
        "value_maps": len(memfd_maps(pid, "rusk-value")),
    }


def filled_bytes(path):
    """Bytes of a memfd (``/proc/PID/fd/N``) that have memory behind them so far, and its size."""
    st = os.stat(path)
    return st.st_blocks * 512, st.st_size


def executor_pids(worker_pid):
    """The Python executors of a worker: its children running ``rusk-executor-*.py``."""
    pids = set()
    try:
        tids = os.listdir("/proc/%d/task" % worker_pid)
    except FileNotFoundError:
        return []
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (worker_pid, tid)) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    out = []
    for p in sorted(pids):
        try:
            with open("/proc/%d/cmdline" % p, "rb") as f:
                if b"rusk-executor-" in f.read():
                    out.append(p)
        except OSError:
            pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def workers(c):
    return c.status()["workers"]


def worker_by_pid(c, pid):
    (w,) = [w for w in workers(c) if w["pid"] == pid]
    return w


def restart_events(c):
    """Recovery-log records of workers restarted or lost (not pauses or health changes)."""
    quiet = {"paused", "resumed", "unhealthy", "healthy", "joined"}
    return [e for e in c.events() if e["cause"] not in quiet or e.get("new_incarnation")]


# === task functions (run in the executors) ===

# Bytes set to a value other than the fill, at these offsets (as fractions of the length).
PATTERN_AT = (0.0, 0.25, 0.5, 0.75)


def pattern_offsets(n):
    offs = sorted({int(n * f) for f in PATTERN_AT} | {1, 4095, 4096, n - 1})
    return offs


def make_chunk(n, fill, marker=None):
    """``n`` bytes of ``fill`` with ``100 + i`` at the i-th pattern offset. Appends
    ``"executor_pid worker_pid"`` to ``marker`` (one line per attempt)."""
    import numpy as np

    if marker:
        with open(marker, "a") as f:
            f.write("%d %d\n" % (os.getpid(), os.getppid()))
    a = np.full(n, fill, dtype=np.uint8)
    for i, off in enumerate(pattern_offsets(n)):
        a[off] = 100 + i
    return a


def check_chunk(a, n, fill):
    """What is wrong with chunk ``a`` (an empty list when nothing), read 256 MiB at a time."""
    import numpy as np

    problems = []
    if a.dtype != np.uint8 or a.shape != (n,):
        return ["dtype %s shape %s" % (a.dtype, a.shape)]
    offs = pattern_offsets(n)
    for i, off in enumerate(offs):
        if a[off] != 100 + i:
            problems.append("a[%d] = %d, not %d" % (off, a[off], 100 + i))
    odd = 0
    step = 256 * MIB
    for start in range(0, n, step):
        odd += int(np.count_nonzero(a[start : start + step] != fill))
    if odd != len(offs):
        problems.append("%d bytes differ from the fill, not %d" % (odd, len(offs)))
    return problems


def consume_chunk(a, n, fill):
    """Check the chunk where it is used; report where that was and whether it was a copy."""
    return {
        "pid": os.getpid(),
        "worker_pid": os.getppid(),
        "writeable": bool(a.flags.writeable),
        "problems": check_chunk(a, n, fill),
    }


def attempts(marker):
    """``[(executor_pid, worker_pid), ...]``, one per attempt of a task writing ``marker``."""
    try:
        with open(marker) as f:
            return [tuple(int(x) for x in line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def mapped_from(addr, name):
    """The line of this process's maps holding address ``addr``, if it maps a memfd ``name``."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.strip() if "/memfd:%s" % name in line else None
    return None


# === a cluster of two nannies, each with one worker and its own unhealthy-file switch ===


class Split:
    """Workers ``a`` and ``b`` under two nannies, each with its own fault-injection
    "unhealthy" file: the scheduler places no new task on a worker while its file exists,
    which is how a test chooses where a task runs. (Two nannies, because a nanny passes the
    same ``--fault-unhealthy-file`` to all its workers.)"""

    def __init__(self, tmp_path):
        self.flags = {"a": str(tmp_path / "a-unhealthy"), "b": str(tmp_path / "b-unhealthy")}
        self.cluster = rusk.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            nanny_args=["--enable-fault-injection", "--fault-unhealthy-file", self.flags["a"]],
        )
        self.second = None
        self.client = None
        try:
            from rusk._cluster import _child_env, _pdeathsig_setter

            self.second_name = "second-%d" % os.getpid()
            self.second_log = open(os.path.join(str(tmp_path), "nanny-b.log"), "ab")
            self.second = subprocess.Popen(
                [
                    self.cluster.binary,
                    "nanny",
                    "--scheduler-file",
                    self.cluster.scheduler_file,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--name",
                    self.second_name,
                    "--enable-fault-injection",
                    "--fault-unhealthy-file",
                    self.flags["b"],
                ],
                stdin=subprocess.DEVNULL,
                stdout=self.second_log,
                stderr=subprocess.STDOUT,
                env=_child_env(None),
                preexec_fn=_pdeathsig_setter(),
            )
            self.client = rusk.Client(self.cluster)
            self.client.wait_for_workers(2, timeout=30)
        except BaseException:
            self.close()
            raise

    def worker(self, which):
        nanny = self.cluster.nanny_name if which == "a" else self.second_name
        (w,) = [w for w in workers(self.client) if w["nanny"] == nanny and w["state"] != "lost"]
        return w

    def only(self, which):
        """Make ``which`` the only worker that takes new tasks; wait until the scheduler
        sees it."""
        other = "b" if which == "a" else "a"
        open(self.flags[other], "w").close()
        if os.path.exists(self.flags[which]):
            os.remove(self.flags[which])
        wait_until(
            lambda: self.worker(other)["state"] == "unhealthy" and self.worker(which)["state"] == "running",
            timeout=20,
            what="only worker %s healthy" % which,
        )

    def all_healthy(self):
        for f in self.flags.values():
            if os.path.exists(f):
                os.remove(f)

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.second is not None:
            if self.second.poll() is None:
                self.second.send_signal(signal.SIGTERM)
            try:
                self.second.wait(10)
            except Exception:
                self.second.kill()
                self.second.wait()
            self.second_log.close()
        self.cluster.close()


@pytest.fixture
def split(tmp_path):
    s = Split(tmp_path)
    try:
        yield s
    finally:
        s.close()


# === 1. a 2 GiB chunk across workers and to the client ===

BIG = 2 * GIB


@heavy
def test_two_gib_chunk_crosses_workers_and_reaches_the_client_in_place(split, tmp_path):
    c = split.client
    marker = str(tmp_path / "big-attempts")
    # The scheduler puts a task where most of its input bytes are, so the consumer of a chunk
    # would run next to it. To make it cross workers, worker b is unhealthy (fault-injection
    # file) while the chunk is produced, so it lands on a; then a is made unhealthy and b
    # healthy: a keeps serving its results but gets no new task, so the consumer runs on b and
    # streams the 2 GiB from a.
    split.only("a")
    a, b = split.worker("a"), split.worker("b")
    t0 = time.monotonic()
    chunk = c.submit(make_chunk, BIG, 7, marker, key="chunk")
    rusk.wait([chunk], timeout=90)
    produced = time.monotonic() - t0
    assert chunk.status == "finished", chunk.exception()
    assert [w for _, w in attempts(marker)] == [a["pid"]]
    # (heartbeats bring the figures, every 500 ms)
    wait_until(lambda: split.worker("a")["stored_bytes"] >= BIG, timeout=10, what="a reports the chunk")

    split.only("b")
    fetched_before = split.worker("b")["vitals"]["bytes_fetched"]
    t0 = time.monotonic()
    used = c.submit(consume_chunk, chunk, BIG, 7, key="consume").result(90)
    consumed = time.monotonic() - t0
    assert used["problems"] == []
    assert used["worker_pid"] == b["pid"], "the consumer ran on %s, not on b (%s)" % (used, b)
    # Its executor mapped the input in place: a read-only view of the worker's segment.
    assert used["writeable"] is False

    def fetched_by_b():
        n = split.worker("b")["vitals"]["bytes_fetched"] - fetched_before
        return n if n >= BIG else None

    fetched = wait_until(fetched_by_b, timeout=10, what="b reports the 2 GiB it fetched")
    split.all_healthy()

    t0 = time.monotonic()
    arr = chunk.result(90)
    gathered = time.monotonic() - t0
    # Zero copy: a read-only view of the shared memory the client received the value into.
    assert not arr.flags.writeable and not arr.flags.owndata
    where = mapped_from(arr.ctypes.data, "rusk-value")
    assert where, "the gathered array is not in a rusk-value segment"
    assert check_chunk(arr, BIG, 7) == []
    with pytest.raises(ValueError):
        arr[0] = 1
    assert len(attempts(marker)) == 1, "the chunk was computed more than once"
    print(
        "\n2 GiB chunk: produced in %.1f s, streamed to the other worker and checked there in "
        "%.1f s (%d bytes fetched), gathered by the client in %.1f s (%.2f GB/s)"
        % (produced, consumed, fetched, gathered, BIG / gathered / 1e9)
    )


# === 1b. received segments' memory is reused, never while an executor still maps it ===


def stash_chunk(a):
    """Keep a view of the input in the executor after the task (as user code may)."""
    import builtins

    builtins._rusk_test_kept = a
    return int(a.shape[0])


def check_stash(n, fill):
    import builtins

    return check_chunk(builtins._rusk_test_kept, n, fill)


def fork_keeper(a, path, fill):
    """Fork a child that keeps this task's input mapped after the task, and checks it once
    ``path + ".go"`` exists (writing what is wrong to ``path``)."""
    import time

    pid = os.fork()
    if pid == 0:
        try:
            deadline = time.time() + 120
            while not os.path.exists(path + ".go") and time.time() < deadline:
                time.sleep(0.05)
            problems = check_chunk(a, a.shape[0], fill)
            with open(path + ".tmp", "w") as f:
                f.write(repr(problems))
            os.rename(path + ".tmp", path)
        finally:
            os._exit(0)
    return pid


def broadcast_rows(n):
    import numpy as np

    return np.broadcast_to(np.arange(3.0), (n, 3))


@pytest.mark.parametrize("fresh_client", [dict(n_workers=1)], indirect=True)
def test_a_broadcast_array_is_stored_and_sent_as_its_repeated_part(fresh_client):
    """A result with a zero stride (``np.broadcast_to``; every chunk of ``da.ones``) is kept
    as its one repeated part, not copied out to full size (24 MB here, which would need a
    segment), and comes back as the same read-only broadcast view, as from Dask."""
    import numpy as np

    c = fresh_client
    (w,) = workers(c)
    before = segments(w["pid"])
    fut = c.submit(broadcast_rows, 1_000_000)
    arr = fut.result(60)
    assert arr.shape == (1_000_000, 3) and arr.strides == (0, 8) and not arr.flags.writeable
    assert np.array_equal(arr[-1], [0.0, 1.0, 2.0])
    assert segments(w["pid"]) == before, "stored in full"
    # A task taking it gets the same view.
    assert c.submit(lambda a: (a.strides, float(a[:, 2].sum())), fut).result(60) == ((0, 8), 2e6)


def test_received_memory_is_reused_but_never_while_an_executor_maps_it(split, tmp_path):
    """Worker b receives values from a. A freed received segment's memory is written again
    by the next value of its size (fewer distinct segments than values), while the segment a
    task kept a view of is never reused: that view still reads its own bytes at the end."""
    c = split.client
    n = 24 * MIB
    split.only("b")
    b_pid = split.worker("b")["pid"]
    # One executor on b (1 thread): the stash is in the executor that checks it later.
    split.only("a")
    kept = c.submit(make_chunk, n, 1, pure=False)
    assert kept.exception() is None
    split.only("b")
    assert c.submit(stash_chunk, kept, pure=False).result() == n
    del kept  # b's copy now lives only in its executor's mapping
    # Another value, mapped by a child the task forks (the executor's own mapping goes).
    split.only("a")
    forked = c.submit(make_chunk, n, 9, pure=False)
    assert forked.exception() is None
    split.only("b")
    report = str(tmp_path / "forked-child")
    child = c.submit(fork_keeper, forked, report, 9, pure=False).result()
    del forked
    inodes = set()
    for k in range(2, 8):
        split.only("a")
        x = c.submit(make_chunk, n, k, pure=False)
        assert x.exception() is None
        split.only("b")
        r = c.submit(consume_chunk, x, n, k, pure=False).result()
        assert r["worker_pid"] == b_pid and r["problems"] == [], r
        inodes.update(os.stat("/proc/%d/fd/%d" % (b_pid, fd)).st_ino for fd in memfd_fds(b_pid, "rusk-value"))
        del x
    assert c.submit(check_stash, n, 1, pure=False).result() == []
    open(report + ".go", "w").close()
    wait_until(lambda: os.path.exists(report), timeout=60, what="the forked child's check")
    with open(report) as f:
        assert f.read() == "[]", "the forked child's input was overwritten"
    # The memory kept for reuse is reported (and is not counted as results).
    wait_until(
        lambda: split.worker("b")["vitals"]["reuse_pool_bytes"] >= n,
        timeout=10,
        what="worker b's reuse pool in its status",
    )
    split.all_healthy()
    # Six values of the same size went through fewer segments: memory was reused.
    assert len(inodes) < 6, inodes


# === 2. spilling under a memory limit ===

PART_LEN = 12_500_000  # int64: 100 MB
PARTS = 30


def make_part(i):
    import numpy as np

    return np.arange(PART_LEN, dtype=np.int64) + i


def part_sum(a):
    return int(a.sum())


def pair_diff(x, y):
    return int((y - x).sum())


def expected_sum(i):
    return PART_LEN * (PART_LEN - 1) // 2 + i * PART_LEN


def settle_without_restarts(c, futures, timeout, what):
    """Wait for ``futures``; fail at once if a worker is restarted (or lost) meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        restarts = restart_events(c)
        if restarts:
            pytest.fail(
                "%s: workers restarted: %s"
                % (what, ["%s %s: %s" % (e["worker"], e["cause"], e["observed"]) for e in restarts])
            )
        try:
            rusk.wait(futures, timeout=0.5)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise AssertionError("%s: not done within %.0f s" % (what, timeout))


@heavy
@pytest.mark.parametrize("fresh_client", [dict(n_workers=2, memory_limit="1GiB")], indirect=True)
def test_results_over_the_memory_limit_are_spilled_and_all_correct(fresh_client):
    c = fresh_client
    before = {w["id"]: (w["pid"], w["restarts"]) for w in workers(c)}
    t0 = time.monotonic()
    parts = c.map(make_part, range(PARTS), key=["part-%d" % i for i in range(PARTS)])
    settle_without_restarts(c, parts, 100, "producing the parts")
    produced = time.monotonic() - t0
    assert all(p.status == "finished" for p in parts), [p.exception() for p in parts if p.status != "finished"]
    # 3 GB over two 1 GiB workers: more than their spill targets (60 %) hold.
    # (heartbeats bring the figures, every 500 ms)
    wait_until(
        lambda: sum(w["stored_bytes"] + w["spilled_bytes"] for w in workers(c)) >= PARTS * PART_LEN * 8,
        timeout=20,
        what="every part reported held, in memory or on disk",
    )
    snap = workers(c)
    spilled = sum(w["spilled_bytes"] for w in snap)
    assert spilled > 0, snap
    for w in snap:
        # At most the pause threshold (80 % of 1 GiB) in memory, the rest on disk.
        assert w["stored_bytes"] <= 0.8 * GIB, w
    print(
        "\nspill: %d x 100 MB produced in %.1f s; %d bytes spilled (%s)"
        % (
            PARTS,
            produced,
            spilled,
            ", ".join(
                "%s: %d MiB in memory, %d MiB / %d results spilled, %d spills"
                % (w["id"], w["stored_bytes"] >> 20, w["spilled_bytes"] >> 20, w["spilled_results"], w["spills_total"])
                for w in snap
            ),
        )
    )

    # Reduce: a sum per part (spilled parts are mapped back from their files) and a sum of
    # sums; then pairwise differences (two inputs, spilled or not, often on two workers).
    t0 = time.monotonic()
    sums = c.map(part_sum, parts)
    total = c.submit(sum, sums)
    settle_without_restarts(c, sums + [total], 100, "summing the parts")
    assert c.gather(sums) == [expected_sum(i) for i in range(PARTS)]
    assert total.result() == sum(expected_sum(i) for i in range(PARTS))
    diffs = c.map(pair_diff, parts[:-1], parts[1:])
    settle_without_restarts(c, diffs, 100, "differences of pairs of parts")
    assert c.gather(diffs) == [PART_LEN] * (PARTS - 1)
    reduced = time.monotonic() - t0
    # The client gets spilled results too (the first parts were the first spilled).
    t0 = time.monotonic()
    for i in (0, 1, PARTS - 1):
        arr = parts[i].result(60)
        assert np.array_equal(arr, np.arange(PART_LEN, dtype=np.int64) + i)
        del arr
    fetched = time.monotonic() - t0
    # Nobody was restarted: not by the nanny's memory guard, not for anything else.
    after = {w["id"]: (w["pid"], w["restarts"]) for w in workers(c)}
    assert after == before
    assert restart_events(c) == []
    print(
        "reductions in %.1f s; 3 parts gathered in %.1f s; events: %s"
        % (reduced, fetched, sorted({e["cause"] for e in c.events()}))
    )


# === 3. an executor killed while it writes a large result ===

WRITE = 1536 * MIB


def catch_writing(exec_pids, timeout=60):
    """Wait until one of ``exec_pids`` holds a result segment it is still writing (the
    ``rusk-value`` segment its worker granted it, opened through ``/proc``, or a
    ``rusk-result`` of its own); freeze it (SIGSTOP) there and return ``(pid, filled, size)``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in exec_pids:
            fds = list(memfd_fds(pid, "rusk-value")) + list(memfd_fds(pid, "rusk-result"))
            for fd in fds:
                path = "/proc/%d/fd/%d" % (pid, fd)
                try:
                    filled, size = filled_bytes(path)
                except OSError:
                    continue
                # A quarter in: well inside the copy, far from its end.
                if size and size // 4 <= filled < size:
                    os.kill(pid, signal.SIGSTOP)
                    filled, size = filled_bytes(path)
                    return pid, filled, size
        time.sleep(0.001)
    raise AssertionError("no executor was seen writing a result segment")


@heavy
@pytest.mark.parametrize("fresh_client", [dict(n_workers=1)], indirect=True)
def test_executor_killed_while_writing_a_large_result_is_retried_and_leaks_nothing(fresh_client, tmp_path):
    c = fresh_client
    assert c.submit(abs, -1).result(30) == 1  # the executor is up
    (w,) = workers(c)
    worker_pid = w["pid"]
    (first_exec,) = executor_pids(worker_pid)
    before = segments(worker_pid)
    marker = str(tmp_path / "attempts")

    fut = c.submit(make_chunk, WRITE, 3, marker, retries=1, key="written")
    # The executor returned the array and is copying it into the segment its worker granted
    # (fresh memory: the worker has none kept yet): freeze it there
    # (so the kill lands mid-write, whatever the machine's speed), then kill -9 it.
    pid, filled, size = catch_writing([first_exec])
    try:
        assert size >= WRITE and 0 < filled < size
    finally:
        os.kill(pid, signal.SIGKILL)
    arr = fut.result(90)
    assert check_chunk(arr, WRITE, 3) == []
    runs = attempts(marker)
    assert len(runs) == 2 and runs[0][0] == first_exec and runs[1][0] != first_exec, runs
    wait_until(lambda: not alive(first_exec), timeout=10, what="the killed executor gone")
    # The worker was not touched; its executor was replaced.
    w = worker_by_pid(c, worker_pid)
    assert w["restarts"] == 0 and w["vitals"]["executors_replaced"] >= 1
    (new_exec,) = executor_pids(worker_pid)
    # The retry's result was written into a segment the worker granted: the new executor
    # kept no segment open ...
    wait_until(
        lambda: memfd_fds(new_exec, "rusk-result") == {} and memfd_fds(new_exec, "rusk-value") == {},
        timeout=10,
        what="no segment left in the executor",
    )
    # ... and the worker holds exactly one more (that result), none of the killed attempt
    # (its grant was freed with the executor).
    held = segments(worker_pid)
    assert held["value_fds"] == before["value_fds"] + 1, (before, held)
    assert held["value_maps"] == before["value_maps"] + 1, (before, held)
    assert held["result_fds"] == before["result_fds"], (before, held)
    # Released, it is unmapped at once and kept for reuse at most SEGMENT_POOL_IDLE (10 s)
    # unused, then freed: nothing stays behind.
    del arr
    fut.release()
    wait_until(lambda: segments(worker_pid)["value_maps"] == before["value_maps"], timeout=20, what="the result unmapped")
    wait_until(lambda: segments(worker_pid) == before, timeout=30, what="the result's segment freed")
    print(
        "\nexecutor %d killed with %d of %d bytes of its result segment written; retried in %d; "
        "worker segments before %s, holding the result %s, after release %s"
        % (first_exec, filled, size, runs[1][0], before, held, segments(worker_pid))
    )


# === 4. a worker killed while it streams a large value ===

STREAM = 1536 * MIB


def catch_receiving(pid, known, timeout=60, done=None):
    """Wait until process ``pid`` holds a new ``rusk-value`` segment (one not in ``known``)
    that is still being filled; return its path."""
    deadline = time.monotonic() + timeout
    seen = {}
    while time.monotonic() < deadline:
        for fd in memfd_fds(pid, "rusk-value"):
            if fd in known:
                continue
            path = "/proc/%d/fd/%d" % (pid, fd)
            try:
                filled, size = filled_bytes(path)
            except OSError:
                continue
            seen.setdefault(fd, []).append((filled, size))
            # A quarter in: well inside the stream, far from its end.
            if size >= STREAM and size // 4 <= filled < size:
                return path
        if done is not None and done():
            break
        time.sleep(0.001)
    raise AssertionError(
        "no value was seen streaming into %d; segments seen (filled, size): %s"
        % (pid, {fd: (v[:3], v[-3:], len(v)) for fd, v in seen.items()})
    )


def kill_mid_stream(sender_pid, path):
    """Freeze the sender, check the receiver's segment is partly filled, kill -9 the sender."""
    os.kill(sender_pid, signal.SIGSTOP)
    try:
        time.sleep(0.05)  # what was in flight lands
        filled, size = filled_bytes(path)
        assert 0 < filled < size, "the value was not mid-stream: %d of %d bytes" % (filled, size)
    finally:
        os.kill(sender_pid, signal.SIGKILL)
    return filled, size


@heavy
@pytest.mark.parametrize("fresh_client", [dict(n_workers=2)], indirect=True)
def test_worker_killed_while_streaming_to_the_client_is_recomputed(fresh_client, tmp_path):
    c = fresh_client
    marker = str(tmp_path / "attempts")
    fut = c.submit(make_chunk, STREAM, 5, marker, key="streamed")
    rusk.wait([fut], timeout=60)
    ((_, sender),) = attempts(marker)
    victim = worker_by_pid(c, sender)
    me = os.getpid()
    gc.collect()  # values of earlier tests unmapped now, not in the middle of this one
    known = set(memfd_fds(me, "rusk-value"))
    known_maps = len(memfd_maps(me, "rusk-value"))
    out = {}

    def gather():
        try:
            out["value"] = fut.result(110)
        except BaseException as e:  # reported below
            out["error"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=gather)
    th.start()
    try:
        path = catch_receiving(me, known, done=lambda: not th.is_alive())
        filled, size = kill_mid_stream(sender, path)
    except AssertionError as e:
        th.join(115)
        raise AssertionError(
            "%s\ngather after %.1f s: %r\nlogs:\n%s"
            % (e, time.monotonic() - t0, out, c.cluster.logs()[-6000:])
        ) from None
    finally:
        th.join(115)
    took = time.monotonic() - t0
    assert "error" not in out, out.get("error")
    assert check_chunk(out["value"], STREAM, 5) == []
    # The segment the interrupted stream went into is gone: the one new segment is the value,
    # whole, mapped once (Python's mmap keeps a dup of its fd).
    new = set(memfd_fds(me, "rusk-value")) - known
    assert len(new) == 1, new
    filled_new, size_new = filled_bytes("/proc/self/fd/%d" % new.pop())
    assert size_new >= STREAM and filled_new >= size_new, (filled_new, size_new)
    assert len(memfd_maps(me, "rusk-value")) == known_maps + 1
    runs = attempts(marker)
    assert len(runs) == 2 and runs[1][1] != sender, runs
    # The nanny restarted the killed worker in its slot.
    wait_until(
        lambda: any(w["id"] == victim["id"] and w["pid"] != sender for w in workers(c)),
        what="the killed worker restarted",
    )
    causes = [e["cause"] for e in restart_events(c) if e.get("worker") == victim["id"]]
    assert causes, c.events()
    print(
        "\nworker %d killed after streaming %d of %d bytes to the client; value recomputed on %d "
        "and gathered %.1f s after the gather began; events: %s"
        % (sender, filled, size, runs[1][1], took, causes)
    )


@heavy
def test_worker_killed_while_streaming_to_another_worker_is_recomputed(split, tmp_path):
    c = split.client
    marker = str(tmp_path / "attempts")
    split.only("a")
    chunk = c.submit(make_chunk, STREAM, 9, marker, key="chunk")
    rusk.wait([chunk], timeout=60)
    a = split.worker("a")
    assert [w for _, w in attempts(marker)] == [a["pid"]]
    split.only("b")
    b = split.worker("b")
    known = set(memfd_fds(b["pid"], "rusk-value"))
    t0 = time.monotonic()
    used = c.submit(consume_chunk, chunk, STREAM, 9, key="consume")
    path = catch_receiving(b["pid"], known)
    filled, size = kill_mid_stream(a["pid"], path)
    split.all_healthy()
    result = used.result(110)
    took = time.monotonic() - t0
    assert result["problems"] == []
    runs = attempts(marker)
    assert len(runs) == 2 and runs[1][1] != a["pid"], runs
    # b dropped the segment the interrupted stream went into: it holds the chunk once, as
    # its own result (recomputed on b, written into a segment b granted its executor) or
    # fetched again (recomputed on a's successor).
    held = segments(b["pid"])
    assert held["value_fds"] == len(known) + 1 and held["value_maps"] == len(known) + 1, held
    assert held["result_fds"] == 0, held
    assert check_chunk(chunk.result(60), STREAM, 9) == []
    print(
        "\nworker a (%d) killed after streaming %d of %d bytes to worker b; the chunk was "
        "recomputed on %d and the consumer finished %.1f s after it was submitted"
        % (a["pid"], filled, size, runs[1][1], took)
    )


# === 5. busy versus stuck executors ===

HANG_TIMEOUT = 1.0


# About 5 s of one C call (13 ns an item here, unloaded): several hang timeouts.
BUSY_N = 400_000_000


def busy_sum(n):
    """``sum(range(n))``: one C call, the GIL held, no ping, but CPU used all along."""
    t0 = time.monotonic()
    value = sum(range(n))
    return value, time.monotonic() - t0, os.getpid()


def stuck_in_c_holding_the_gil(seconds):
    """A C sleep that keeps the GIL (ctypes.PyDLL does not release it): no ping, no CPU."""
    import ctypes

    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke up"


class CpuTrace:
    """CPU time of some processes, sampled every 50 ms in a thread."""

    def __init__(self, pids):
        self.samples = {p: [] for p in pids}
        self.tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.05):
            for p, out in self.samples.items():
                try:
                    with open("/proc/%d/stat" % p) as f:
                        fields = f.read().rsplit(") ", 1)[1].split()
                    out.append((time.monotonic(), (int(fields[11]) + int(fields[12])) / self.tick))
                except (OSError, IndexError, ValueError):
                    pass

    def stop(self):
        self._stop.set()
        self._thread.join()

    def shares(self):
        """``{pid: [fraction of a core used in each 0.5 s]}``."""
        out = {}
        for p, s in self.samples.items():
            fr = []
            for (t0, c0), (t1, c1) in zip(s[::10], s[10::10]):
                fr.append(round((c1 - c0) / (t1 - t0), 2))
            out[p] = fr
        return out


@pytest.fixture
def hang_1s():
    with rusk.Client(
        n_workers=1,
        threads_per_worker=2,
        env={"RUSK_EXECUTOR_HANG_TIMEOUT": "%gs" % HANG_TIMEOUT},
    ) as c:
        yield c


def test_busy_silent_executor_is_spared_and_a_stuck_one_killed_with_its_stack(hang_1s):
    c = hang_1s
    assert c.gather(c.map(abs, [-1, -2])) == [1, 2]
    (w,) = workers(c)
    execs = set(wait_until(lambda: len(executor_pids(w["pid"])) == 2 and executor_pids(w["pid"]), timeout=20))
    cpu = CpuTrace(execs)
    try:
        busy = c.submit(busy_sum, BUSY_N)
        stuck = c.submit(stuck_in_c_holding_the_gil, 600)
        t0 = time.monotonic()
        with pytest.raises(rusk.TaskError) as info:
            stuck.result(60)
        stuck_after = time.monotonic() - t0
        try:
            value, silent_for, pid = busy.result(120)
        except rusk.TaskError as e:
            # Killed as stuck: show how much CPU it got (on a loaded host, maybe too little).
            raise AssertionError(
                "the busy executor was killed: %s\nCPU share per 0.5 s: %s" % (e, cpu.shares())
            ) from None
    finally:
        cpu.stop()
    assert value == BUSY_N * (BUSY_N - 1) // 2
    # Silent far longer than the hang timeout, in the executor it started in.
    assert silent_for > 2.5 * HANG_TIMEOUT, silent_for
    assert pid in execs
    message = str(info.value)
    assert "Python stacks of the executor when it was killed" in message, message
    assert "stuck_in_c_holding_the_gil" in message, message
    assert stuck_after < 30, stuck_after
    # Only the stuck one was replaced; the worker itself was not touched.
    after = worker_by_pid(c, w["pid"])
    assert after["vitals"]["executors_replaced"] == 1 and after["restarts"] == 0
    assert pid in executor_pids(w["pid"])
    logs = c.cluster.logs()
    assert "silent but computing" in logs
    print(
        "\nbusy: sum(range(%d)) silent for %.1f s (hang timeout %.0f s), not killed; stuck: "
        "killed after %.1f s with the stack:\n%s"
        % (BUSY_N, silent_for, HANG_TIMEOUT, stuck_after, message[message.index("Python stacks") :][:600])
    )
