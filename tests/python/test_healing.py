"""Self-healing seen from Python: a task that holds the GIL is detected and its executor
replaced while the worker's other tasks go on; repeated hangs are all recovered; a worker killed
with SIGKILL during ``client.map`` still gives every result."""

import os
import signal
import time

import pytest

import rusk
from conftest import wait_until

HANG_TIMEOUT = "1s"


def hold_gil(seconds):
    """Sleep in a C call that keeps the GIL (ctypes.PyDLL does not release it): the executor's
    ping thread cannot run."""
    import ctypes

    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke up"


def slow_square(x, delay=0.1):
    time.sleep(delay)
    return x * x


def pid(_=None):
    return os.getpid()


def worker_of(client):
    (w,) = client.status()["workers"]
    return w


def executors_replaced(client):
    return sum(w["vitals"]["executors_replaced"] for w in client.status()["workers"])


@pytest.fixture
def one_worker():
    """One worker with two executors and a short hang timeout."""
    with rusk.Client(
        n_workers=1,
        threads_per_worker=2,
        env={"RUSK_EXECUTOR_HANG_TIMEOUT": HANG_TIMEOUT},
    ) as c:
        yield c


def test_gil_holding_task_is_detected_and_others_finish(one_worker):
    c = one_worker
    assert c.submit(slow_square, 2).result(30) == 4  # executors up
    worker = worker_of(c)
    t0 = time.monotonic()
    hung = c.submit(hold_gil, 60, pure=False)
    time.sleep(0.2)
    others = c.map(slow_square, range(30), delay=0.05)
    assert c.gather(others, timeout=60) == [x * x for x in range(30)]
    with pytest.raises(rusk.TaskError) as info:
        hung.result(30)
    elapsed = time.monotonic() - t0
    assert "no ping" in str(info.value) and "GIL" in str(info.value)
    assert elapsed < 20, "the hang was detected after %.1f s" % elapsed
    # The executor was replaced, not the worker.
    wait_until(lambda: executors_replaced(c) >= 1, what="executors_replaced >= 1")
    after = worker_of(c)
    assert after["pid"] == worker["pid"] and after["incarnation"] == worker["incarnation"]
    assert c.submit(slow_square, 3).result(30) == 9


def test_ten_hangs_in_a_row_are_all_recovered(one_worker):
    c = one_worker
    assert c.submit(slow_square, 2).result(30) == 4
    worker = worker_of(c)
    replaced = executors_replaced(c)
    t0 = time.monotonic()
    for i in range(10):
        hung = c.submit(hold_gil, 60, pure=False)
        meanwhile = c.submit(slow_square, i, delay=0.2)
        with pytest.raises(rusk.TaskError):
            hung.result(30)
        assert meanwhile.result(30) == i * i
    assert time.monotonic() - t0 < 120
    wait_until(lambda: executors_replaced(c) >= replaced + 10, what="ten executors replaced")
    after = worker_of(c)
    assert after["pid"] == worker["pid"] and after["restarts"] == 0
    assert c.gather(c.map(slow_square, range(10), delay=0)) == [x * x for x in range(10)]


def test_hang_with_retries_fails_after_them_and_retried_task_recovers(one_worker):
    c = one_worker
    marker = "/tmp/rusk-test-hang-%d-%d" % (os.getpid(), time.time_ns())

    def hang_once():
        if not os.path.exists(marker):
            open(marker, "w").close()
            hold_gil(60)
        return "second attempt"

    try:
        assert c.submit(hang_once, retries=1).result(60) == "second attempt"
    finally:
        if os.path.exists(marker):
            os.remove(marker)
    with pytest.raises(rusk.TaskError):
        c.submit(hold_gil, 60, retries=1, pure=False).result(60)


@pytest.fixture
def two_workers():
    with rusk.Client(n_workers=2, threads_per_worker=1) as c:
        yield c


def kill_one_worker(c):
    workers = sorted(c.status()["workers"], key=lambda w: w["id"])
    victim = workers[0]
    os.kill(victim["pid"], signal.SIGKILL)
    return victim


def test_worker_killed_during_map_still_gives_every_result(two_workers):
    c = two_workers
    futures = c.map(slow_square, range(200), delay=0.02)
    wait_until(lambda: sum(f.done() for f in futures) >= 20, what="some results")
    victim = kill_one_worker(c)
    assert c.gather(futures, timeout=120) == [x * x for x in range(200)]
    # The nanny restarted it.
    wait_until(
        lambda: any(w["id"] == victim["id"] and w["pid"] != victim["pid"] for w in c.status()["workers"]),
        what="the killed worker restarted",
    )


def test_results_on_a_killed_worker_are_recomputed(two_workers):
    c = two_workers
    futures = c.map(slow_square, range(40), delay=0.01)
    rusk.wait(futures, timeout=60)
    victim = kill_one_worker(c)
    # Half of the results were on the victim: fetching them fails, the client asks the
    # scheduler again, and they are recomputed elsewhere.
    assert c.gather(futures, timeout=120) == [x * x for x in range(40)]
    dependents = c.map(lambda v: v + 1, futures)
    assert c.gather(dependents, timeout=120) == [x * x + 1 for x in range(40)]
    assert victim["pid"] not in {w["pid"] for w in c.status()["workers"]}


def test_dask_graph_survives_a_killed_worker(two_workers):
    da = pytest.importorskip("dask.array")
    import dask

    c = two_workers

    def slow_block(b):
        time.sleep(0.05)
        return b * 2

    x = da.ones((800, 800), chunks=(50, 50)).map_blocks(slow_block)
    total = x.sum()
    import threading

    killer = threading.Timer(1.0, kill_one_worker, args=(c,))
    killer.start()
    try:
        assert dask.compute(total, scheduler=c.get)[0] == 2 * 800 * 800
    finally:
        killer.cancel()
