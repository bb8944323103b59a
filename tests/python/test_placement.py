"""Placement from Python: resources=, workers=, priority=, dask.annotate, and the errors of
tasks no worker can run."""

import os
import time

import pytest

import rusk

dask = pytest.importorskip("dask")


def stamp(path, tag, hold=0.0):
    start = time.time()
    time.sleep(hold)
    with open(path, "a") as f:
        f.write("%s %f %f %s\n" % (tag, start, time.time(), os.environ["RUSK_WORKER_PID"]))
    return tag


def held(path, tag, hold=0.0):
    """`stamp` under its own key prefix, whose duration the scheduler learns in the test."""
    return stamp(path, tag, hold)


def spans(path):
    with open(path) as f:
        rows = [line.split() for line in f]
    return [(tag, float(a), float(b), int(pid)) for tag, a, b, pid in rows]


@pytest.fixture(scope="module")
def gpu_client():
    """2 workers x 2 threads, each offering GPU=1; unrunnable tasks fail after 1 s."""
    with rusk.Client(
        n_workers=2,
        threads_per_worker=2,
        resources={"GPU": 1},
        scheduler_args=["--no-worker-timeout", "1s"],
        set_as_default=False,
    ) as c:
        yield c


def test_resources_bound_what_runs_at_once_on_a_worker(gpu_client, tmp_path):
    c = gpu_client
    log = str(tmp_path / "gpu")
    fs = c.map(stamp, [log] * 6, ["g%d" % i for i in range(6)], hold=0.3, resources={"GPU": 1}, pure=False)
    c.gather(fs)
    rows = spans(log)
    by_pid = {}  # worker pid -> its GPU task runs
    for tag, a, b, pid in rows:
        by_pid.setdefault(pid, []).append((a, b))
    # Each worker has 2 threads but 1 GPU: its GPU tasks never overlap.
    for runs in by_pid.values():
        runs.sort()
        assert all(b1 <= a2 + 0.01 for (_, b1), (a2, _) in zip(runs, runs[1:])), runs
    assert len(by_pid) == 2  # and both workers' GPUs were used
    info = c.scheduler_info()["workers"]
    assert all(w["resources"] == {"GPU": 1.0} for w in info)


def test_tasks_no_worker_can_run_fail_with_a_clear_error(gpu_client):
    c = gpu_client
    bad = c.submit(stamp, "/dev/null", "x", resources={"TPU": 1}, pure=False)
    too_much = c.submit(stamp, "/dev/null", "y", resources={"GPU": 5}, pure=False)
    nowhere = c.submit(stamp, "/dev/null", "z", workers=["no-such-worker"], pure=False)
    for f, what in [(bad, "TPU"), (too_much, "GPU"), (nowhere, "no-such-worker")]:
        with pytest.raises(Exception, match=what):
            f.result(30)
    # A preference only: it runs elsewhere.
    assert c.submit(stamp, "/dev/null", "w", workers=["no-such-worker"], allow_other_workers=True, pure=False).result(30) == "w"
    # Malformed requests are refused before anything is sent.
    with pytest.raises(ValueError):
        c.submit(stamp, "/dev/null", "v", resources={"GPU": -1})
    with pytest.raises(TypeError):
        c.submit(stamp, "/dev/null", "v", resources={"GPU": "one"})
    with pytest.raises(ValueError):
        c.submit(stamp, "/dev/null", "v", workers=[])
    # The cluster goes on.
    assert c.submit(stamp, "/dev/null", "ok", pure=False).result(30) == "ok"


def test_workers_and_priority(gpu_client, tmp_path):
    c = gpu_client
    names = sorted(c.nthreads())
    pids = {w["id"]: w["pid"] for w in c.scheduler_info()["workers"]}
    log = str(tmp_path / "placed")
    fs = c.map(stamp, [log] * 6, ["w%d" % i for i in range(6)], workers=[names[1]], pure=False)
    c.gather(fs)
    assert {pid for *_, pid in spans(log)} == {pids[names[1]]}
    # One worker's two threads busy, then low- and high-priority tasks queued behind them: the
    # high ones start before the low ones, but for the next task each busy executor already
    # holds in its pipe (PIPELINE_DEPTH: the running one and one more).
    # The scheduler first learns that `held` tasks take 0.3 s, so it assigns a worker about
    # 100 ms of them per thread ahead (at least 2): the blocks and two lows; the third low
    # waits in the scheduler and the highs, arriving later, overtake it there. (Tasks already
    # on the worker are handed to its executors in arrival order.) Once the highs run, the last
    # high and the last low can both be handed to the executors' pipes at once (two tasks per
    # thread in flight), so those two may start in either order.
    order = str(tmp_path / "order")
    c.gather(c.map(held, [os.devnull] * 2, ["learn0", "learn1"], hold=0.3, workers=[names[1]], pure=False))
    block = [c.submit(held, order, "block", hold=1.0, workers=[names[0]], pure=False) for _ in range(2)]
    time.sleep(0.3)
    low = c.map(held, [order] * 3, ["low%d" % i for i in range(3)], workers=[names[0]], priority=-5, pure=False)
    high = c.map(held, [order] * 3, ["high%d" % i for i in range(3)], workers=[names[0]], priority=10, pure=False)
    c.gather(block + low + high)
    started = [tag for tag, *_ in sorted(spans(order), key=lambda r: r[1]) if tag != "block"]
    first_high = min(i for i, t in enumerate(started) if t.startswith("high"))
    assert sum(t.startswith("low") for t in started[:first_high]) <= 2, started
    assert first_high < started.index("low2"), started


def test_dask_annotations_and_compute_keywords_place_graph_tasks(gpu_client, tmp_path):
    c = gpu_client
    names = sorted(c.nthreads())
    pids = {w["id"]: w["pid"] for w in c.scheduler_info()["workers"]}
    log = str(tmp_path / "annotated")
    with dask.annotate(workers=[names[0]]):
        parts = [dask.delayed(stamp)(log, "a%d" % i, pure=False) for i in range(4)]
    c.compute(parts, sync=True)
    assert {pid for *_, pid in spans(log)} == {pids[names[0]]}
    log2 = str(tmp_path / "keywords")
    parts = [dask.delayed(stamp)(log2, "k%d" % i, pure=False) for i in range(4)]
    dask.compute(*parts, scheduler=c.get, workers=[names[1]])
    assert {pid for *_, pid in spans(log2)} == {pids[names[1]]}
    with dask.annotate(resources={"TPU": 1}):
        doomed = dask.delayed(stamp)(log2, "never", pure=False)
    with pytest.raises(Exception, match="TPU"):
        c.compute(doomed, sync=True)
