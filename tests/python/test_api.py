"""The futures API against a real local cluster."""

import operator
import os
import pickle
import threading
import time

import pytest

import rusk
from conftest import wait_until


def inc(x):
    return x + 1


def add(*xs, **kw):
    return sum(xs) + sum(kw.values())


def slow_inc(x, delay=0.2):
    time.sleep(delay)
    return x + 1


def whoami(_=None):
    return os.getpid()


def total(obj):
    """Sum every number in nested lists, tuples and dicts."""
    if isinstance(obj, dict):
        return sum(total(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(total(v) for v in obj)
    return obj


class MyError(Exception):
    def __init__(self, message, code):
        super().__init__(message, code)
        self.code = code


def fail(x):
    raise MyError("bad input %r" % (x,), 42)


def deep_failure(x):
    def inner():
        return 1 / (x - x)

    return inner()


# === basics ===


def test_submit_result(client):
    f = client.submit(inc, 1)
    assert f.result(timeout=30) == 2
    assert f.done() and f.status == "finished"
    assert f.exception() is None
    assert "finished" in repr(f)


def test_builtin_and_lambda_and_closure(client):
    k = 10
    assert client.submit(pow, 2, 10).result(30) == 1024
    assert client.submit(lambda x: x * k, 4).result(30) == 40
    assert client.submit(operator.add, "a", "b").result(30) == "ab"


def test_kwargs_and_key(client):
    f = client.submit(add, 1, 2, key="my-add", z=10)
    assert f.key == "my-add"
    assert f.result(30) == 13
    # The same key gives the same task, not a new one.
    g = client.submit(add, 100, key="my-add")
    assert g.key == "my-add" and g.result(30) == 13


def test_large_argument_and_result(client):
    blob = os.urandom(8 << 20)
    f = client.submit(lambda b: b[::-1], blob)
    assert f.result(60) == blob[::-1]


def test_map_and_gather(client):
    futures = client.map(inc, range(100))
    assert len(futures) == 100
    assert client.gather(futures) == list(range(1, 101))
    # Several iterables, like the builtin map; keyword arguments for every call.
    futures = client.map(add, range(10), range(10), z=1)
    assert client.gather(futures) == [2 * i + 1 for i in range(10)]


def test_map_runs_on_every_worker(client):
    pids = set(client.gather(client.map(lambda i: (time.sleep(0.05), os.getpid())[1], range(40))))
    assert len(pids) >= 2


def test_gather_keeps_structure(client):
    a, b, c = client.map(inc, [1, 2, 3])
    out = client.gather({"x": [a, (b, 7)], "y": c, "z": "plain"})
    assert out == {"x": [2, (3, 7)], "y": 4, "z": "plain"}
    assert client.gather(a) == 2


# === dependencies ===


def test_future_arguments_are_dependencies(client):
    x = client.submit(inc, 1)
    y = client.submit(inc, x)
    z = client.submit(add, x, y, w=y)
    assert z.result(30) == 2 + 3 + 3


def test_futures_inside_containers(client):
    a, b, c, d = client.map(inc, [0, 1, 2, 3])  # 1, 2, 3, 4
    f = client.submit(total, [a, (b, {"k": [c, 100]})])
    assert f.result(30) == 1 + 2 + 3 + 100
    g = client.submit(lambda xs, m: (xs, m), (a, a), m={"d": d, "e": [d, 5]})
    assert g.result(30) == ((1, 1), {"d": 4, "e": [4, 5]})


def test_chain_across_workers(client):
    # A long chain: each link's input is fetched from whichever worker computed it.
    f = client.submit(inc, 0)
    for _ in range(50):
        f = client.submit(inc, f)
    assert f.result(60) == 51


def test_tree_reduction(client):
    level = client.map(inc, range(64))
    while len(level) > 1:
        level = [client.submit(add, level[i], level[i + 1]) for i in range(0, len(level), 2)]
    assert level[0].result(60) == sum(range(1, 65))


def test_big_dependency_travels_between_workers(client):
    a = client.submit(lambda: bytes(range(256)) * (1 << 14))  # 4 MiB
    lens = client.map(lambda b, i: len(b) + i, [a] * 8, range(8))
    assert client.gather(lens) == [(1 << 22) + i for i in range(8)]


# === errors ===


def test_exception_keeps_type_and_remote_traceback(client):
    f = client.submit(fail, 7)
    with pytest.raises(MyError) as info:
        f.result(30)
    assert info.value.code == 42
    assert "bad input 7" in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, rusk.RemoteTraceback)
    assert "in fail" in cause.tb and "MyError" in cause.tb
    assert f.status == "error" and f.done()
    assert isinstance(f.exception(), MyError)
    assert "in fail" in f.traceback()


def test_remote_traceback_shows_nested_frames(client):
    f = client.submit(deep_failure, 3)
    with pytest.raises(ZeroDivisionError) as info:
        f.result(30)
    tb = info.value.__cause__.tb
    assert "in deep_failure" in tb and "in inner" in tb


def test_dependents_of_a_failed_task_raise_its_exception(client):
    bad = client.submit(fail, 1)
    dependent = client.submit(inc, bad)
    later = client.submit(inc, dependent)
    with pytest.raises(MyError):
        later.result(30)
    with pytest.raises(MyError):
        client.gather([client.submit(inc, 1), dependent])
    assert client.gather([client.submit(inc, 1), dependent], errors="skip") == [2]
    # A task submitted after its input already failed fails too.
    with pytest.raises(MyError):
        client.submit(inc, bad).result(30)


def test_unpicklable_function_raises_at_submit(client):
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises((TypeError, pickle.PicklingError)):
        client.submit(uses_lock)
    with pytest.raises((TypeError, pickle.PicklingError)):
        client.submit(inc, threading.Lock())
    # The client is still fine.
    assert client.submit(inc, 1).result(30) == 2


def test_unpicklable_result_fails_the_task(client):
    f = client.submit(threading.Lock)
    with pytest.raises(Exception) as info:
        f.result(30)
    assert "pickle" in str(info.value).lower()
    assert "_thread.lock" in str(info.value) and "inside one task" in str(info.value)
    assert client.submit(inc, 2).result(30) == 3


def make_generator(n):
    return (i * i for i in range(n))


def test_a_generator_result_is_stored_as_the_list_of_its_items(client):
    gen = client.submit(make_generator, 4)
    assert gen.result(30) == [0, 1, 4, 9]
    # Two dependents each see every item (a shared generator would be consumed by the first).
    assert client.gather([client.submit(sum, gen), client.submit(len, gen)]) == [14, 4]
    # map/filter objects that pickle are left as they are.
    assert list(client.submit(map, abs, [-1, -2]).result(30)) == [1, 2]


def test_retries(client, tmp_path):
    marker = str(tmp_path / "attempts")

    def flaky():
        with open(marker, "a") as fh:
            fh.write("x")
        with open(marker) as fh:
            n = len(fh.read())
        if n < 3:
            raise RuntimeError("attempt %d fails" % n)
        return n

    assert client.submit(flaky, retries=2).result(60) == 3
    os.remove(marker)
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        client.submit(flaky, retries=1, pure=False).result(60)


def test_pure_calls_have_deterministic_keys_and_run_once(client, tmp_path):
    marker = str(tmp_path / "runs")

    def counted(x, scale=1):
        with open(marker, "a") as fh:
            fh.write("%r:%r\n" % (x, scale))
        return x * scale

    a = client.submit(counted, 3, scale=2)
    b = client.submit(counted, 3, scale=2)
    assert a.key == b.key and a.key.startswith("counted-")
    assert client.submit(counted, 3, scale=3).key != a.key
    assert client.submit(counted, 3.0, scale=2).key != a.key
    assert client.submit(counted, "3", scale=2).key != a.key
    assert client.submit(counted, np_array_or_list(), scale=2).key == client.submit(counted, np_array_or_list(), scale=2).key
    assert a.result() == b.result() == 6
    fs = client.map(counted, [1, 2, 3, 1], scale=2)
    assert fs[0].key == fs[3].key and len({f.key for f in fs}) == 3
    assert client.gather(fs) == [2, 4, 6, 2]
    assert client.map(counted, [1], scale=2)[0].key == fs[0].key
    client.gather(client.map(counted, [4], scale=2))
    with open(marker) as fh:
        runs = sorted(fh.read().split())
    assert runs.count("3:2") == 1 and runs.count("1:2") == 1, runs
    # pure=False: a task of its own each time.
    c = client.submit(counted, 3, scale=2, pure=False)
    d = client.submit(counted, 3, scale=2, pure=False)
    assert len({a.key, c.key, d.key}) == 3
    assert client.gather([c, d]) == [6, 6]
    assert client.map(counted, [5, 5], pure=False)[0].key != client.map(counted, [5, 5], pure=False)[1].key


def np_array_or_list():
    return [1, [2, 3], {"a": 4}]


def test_timeout_fails_the_attempt(client):
    f = client.submit(time.sleep, 30, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(Exception):
        f.result(30)
    assert time.monotonic() - t0 < 20
    # The worker is fine afterwards.
    assert client.submit(inc, 1).result(30) == 2


def test_result_timeout(client):
    f = client.submit(time.sleep, 2)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.1)
    assert f.result(30) is None


# === cancellation and release ===


def test_cancel(client):
    f = client.submit(time.sleep, 60)
    time.sleep(0.2)
    f.cancel()
    assert f.cancelled() and f.done()
    with pytest.raises(rusk.CancelledError):
        f.result(5)
    with pytest.raises(rusk.CancelledError):
        f.exception(5)
    with pytest.raises(rusk.CancelledError):
        client.submit(inc, f)
    # The cancelled sleep does not hold up the cluster for 60 s.
    assert client.gather(client.map(inc, range(8)), timeout=30) == list(range(1, 9))


def test_cancelled_task_stops_running(client):
    futures = [client.submit(time.sleep, 60) for _ in range(8)]
    time.sleep(0.3)
    client.cancel(futures)
    assert all(f.cancelled() for f in futures)
    t0 = time.monotonic()
    assert client.gather(client.map(inc, range(4)), timeout=30) == [1, 2, 3, 4]
    assert time.monotonic() - t0 < 30


def test_released_futures_are_dropped_by_the_scheduler(client):
    def memory_tasks():
        return sum(w["tasks"].get("memory", 0) for w in client.status()["workers"])

    import gc

    gc.collect()
    time.sleep(0.5)  # earlier tests' dropped futures are released by now
    before = memory_tasks()
    futures = client.map(inc, range(50), pure=False)
    client.gather(futures)
    assert memory_tasks() >= before + 50
    del futures
    gc.collect()
    wait_until(lambda: memory_tasks() <= before, timeout=20, what="released results dropped")


def test_resubmitting_a_released_key_recomputes_it(client):
    f = client.submit(inc, 41, key="answer")
    assert f.result(30) == 42
    f.release()
    g = client.submit(inc, 41, key="answer")
    assert g.result(30) == 42


# === waiting ===


def test_as_completed_yields_in_finish_order(client):
    # Any placement on the 4 task slots finishes the two quick ones first.
    futures = [client.submit(slow_inc, i, delay=d) for i, d in [(0, 2.0), (1, 0.1), (2, 0.1)]]
    t0 = time.monotonic()
    order = []
    for f in rusk.as_completed(futures):
        order.append((f.result(), time.monotonic() - t0))
    assert sorted(v for v, _ in order[:2]) == [2, 3]
    assert order[2][0] == 1
    assert order[1][1] < 1.5 <= order[2][1]
    pairs = list(rusk.as_completed(client.map(inc, range(5)), with_results=True))
    assert sorted(r for _, r in pairs) == [1, 2, 3, 4, 5]


def test_as_completed_with_errors(client):
    futures = [client.submit(fail, 1), client.submit(inc, 1)]
    results = [r for _, r in rusk.as_completed(futures, with_results=True, raise_errors=False)]
    assert 2 in results and any(isinstance(r, MyError) for r in results)


def test_wait(client):
    fast = client.submit(inc, 1)
    slow = client.submit(slow_inc, 1, delay=3)
    done, not_done = rusk.wait([fast, slow], return_when=rusk.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    with pytest.raises(TimeoutError):
        rusk.wait([slow], timeout=0.1)
    done, not_done = rusk.wait([fast, slow])
    assert done == {fast, slow} and not not_done


def test_done_callback(client):
    got = []
    ev = threading.Event()
    f = client.submit(inc, 1)
    f.add_done_callback(lambda fut: (got.append(fut.result()), ev.set()))
    assert ev.wait(30)
    assert got == [2]


def test_a_pickled_future_comes_back_as_a_future_of_the_same_key(client):
    f = client.submit(inc, 1)
    g = pickle.loads(pickle.dumps(f))
    assert g == f and g.key == f.key and g.client is client
    assert g.result(30) == 2


# === connecting ===


def test_second_client_by_scheduler_file(client):
    with rusk.Client(client.cluster.scheduler_file) as other:
        assert other.submit(inc, 1).result(30) == 2
        assert other.cluster is None
    # Closing it did not affect the first one's cluster.
    assert client.submit(inc, 2).result(30) == 3


def test_client_by_address_needs_token(client):
    with pytest.raises(ValueError):
        rusk.Client(client.cluster.address)
    with pytest.raises(ConnectionError):
        rusk.Client(client.cluster.address, token="wrong")
    with rusk.Client("tcp://" + client.cluster.address, token=client.cluster.token) as other:
        assert other.submit(inc, 5).result(30) == 6


def test_status_and_repr(client):
    s = client.status()
    assert len(s["workers"]) == 2
    assert "connected" in repr(client)


def test_closed_client_refuses_work():
    c = rusk.Client(n_workers=1)
    f = c.submit(slow_inc, 1, delay=30)
    cluster = c.cluster
    c.close()
    assert cluster.scheduler.poll() is not None  # its own cluster is stopped
    with pytest.raises(rusk.ConnectionLostError):
        c.submit(inc, 1)
    with pytest.raises(rusk.ConnectionLostError):
        f.result(5)


def test_lost_connection_fails_pending_futures():
    # Without a journal nobody can resume the scheduler: pending work fails at once.
    c = rusk.Client(n_workers=1, journal=False)
    try:
        done = c.submit(inc, 1)
        assert done.result(30) == 2
        pending = c.submit(slow_inc, 1, delay=60)
        time.sleep(0.3)
        c.cluster.scheduler.kill()  # SIGKILL: the connection drops
        t0 = time.monotonic()
        with pytest.raises(rusk.ConnectionLostError):
            pending.result(30)
        assert time.monotonic() - t0 < 10
        with pytest.raises(rusk.ConnectionLostError):
            c.submit(inc, 1)
        with pytest.raises(rusk.ConnectionLostError):
            c.get({"x": (inc, 1)}, "x")
        assert "lost" in repr(c)
    finally:
        c.close()


def test_context_manager_stops_cluster():
    with rusk.Client(n_workers=1, threads_per_worker=1) as c:
        procs = list(c.cluster._procs)
        assert c.submit(inc, 1).result(30) == 2
    assert all(p.poll() is not None for p in procs)


def test_local_cluster_dies_with_its_client_process():
    import signal
    import subprocess
    import sys

    import shutil

    code = (
        "import rusk, time; c = rusk.Client(n_workers=1); "
        "print(c.cluster.scheduler.pid, c.cluster.nanny.pid, c.cluster.directory, flush=True); "
        "time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = []
    try:
        line = p.stdout.readline().split()
        pids = [int(x) for x in line[:2]]
        assert len(pids) == 2
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        if len(line) == 3:
            shutil.rmtree(line[2], ignore_errors=True)  # its close() never ran

    def gone(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().split()[2] == "Z"
        except OSError:
            return True

    wait_until(lambda: all(gone(q) for q in pids), timeout=10, what="scheduler and nanny gone")


def test_who_has_has_what_nthreads_and_run_on_scheduler(client):
    workers = client.nthreads()
    assert workers and all(n == 2 for n in workers.values()), workers
    fs = client.map(lambda i: i * 10, range(6), pure=False)
    assert client.gather(fs) == [i * 10 for i in range(6)]
    where = client.who_has(fs)
    assert set(where) == {f.key for f in fs}
    assert all(len(w) == 1 and w[0] in workers for w in where.values()), where
    held = client.has_what()
    assert set(held) == set(workers)
    assert sorted(k for keys in held.values() for k in keys if k in where) == sorted(where)
    # A future not finished yet is held nowhere.
    gate = client.submit(time.sleep, 1, pure=False)
    assert client.who_has([gate]) == {gate.key: []}
    gate.result()
    with pytest.raises(NotImplementedError, match="runs no Python"):
        client.run_on_scheduler(os.getpid)
    # The cluster keeps working.
    assert client.submit(abs, -3).result() == 3


def test_progress_in_a_terminal_and_in_a_notebook(client):
    import io

    from rusk._progress import NotebookProgress, TextProgress

    fs = client.map(slow_inc_for_progress, range(8), pure=False)
    out = io.StringIO()
    TextProgress(fs, out).run()
    text = out.getvalue()
    assert text.rstrip().endswith("s") and "100% Completed" in text.splitlines()[-1]
    # A notebook: the widget follows the futures from their callbacks, without blocking.
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj._repr_html_())

    def display(obj, display_id=None):
        shown.append(obj._repr_html_())
        return Handle()

    more = client.map(slow_inc_for_progress, range(4), pure=False)
    bad = client.submit(fail_for_progress, pure=False)
    bar = NotebookProgress(more + [bad], display=display)
    rusk.wait(more + [bad])
    wait_until(lambda: "5/5 done (1 erred)" in shown[-1], what="the widget's last state")
    assert "#d9534f" in bar._repr_html_()
    # A persisted collection's futures; nothing running is a clear error.
    with pytest.raises(ValueError, match="persist"):
        rusk.progress([1, 2], notebook=False)
    rusk.progress(fs, notebook=False)


def slow_inc_for_progress(x):
    time.sleep(0.05)
    return x + 1


def fail_for_progress():
    raise ValueError("nope")


def test_a_task_over_the_message_limit_is_refused_with_its_reason_and_the_client_goes_on(client):
    """A task whose arguments encode past ``MAX_FRAME_BYTES`` is refused at submit with a
    clear error (it was sent, dropped by the scheduler, and sent again on every reconnection,
    forever); the client goes on."""
    with pytest.raises(ValueError, match="MAX_FRAME_BYTES.*scatter"):
        client.submit(len, b"x" * (300 << 20)).result(60)
    assert client.submit(len, b"ok").result(30) == 2
