"""Keys shared between clients, and tasks that use the cluster: futures pickled into tasks,
``get_client``/``worker_client``/``secede`` in tasks, another client's futures as arguments,
datasets, and ``fire_and_forget`` outliving its client. Real clusters, real processes."""

import hashlib
import hmac
import os
import subprocess
import time

import pytest

import rusk

from conftest import wait_until


@pytest.fixture
def cluster():
    """One worker with one thread: a task that waits for tasks it submitted, without seceding,
    would deadlock it."""
    c = rusk.LocalCluster(n_workers=1, threads_per_worker=1)
    try:
        yield c
    finally:
        c.close()


def inc(x):
    return x + 1


def fib(n):
    """Recursive, each level waiting for its children inside the task."""
    if n < 2:
        return n
    with rusk.worker_client() as c:
        a = c.submit(fib, n - 1, pure=False)
        b = c.submit(fib, n - 2, pure=False)
        return a.result() + b.result()


def test_tasks_submit_tasks_and_wait_without_holding_the_only_slot(cluster):
    with rusk.Client(cluster) as client:
        assert client.submit(fib, 6).result(timeout=120) == 8
        # The pool is back to one executor holding the slot: the extra ones retired.
        assert client.submit(inc, 1, pure=False).result(timeout=30) == 2


def pid_of_run():
    return os.getpid()


def compute_after_get_client():
    """After get_client(), a plain `compute()` in the task runs on the cluster (as on a Dask
    worker): the inner task runs in another executor process, since this one is busy."""
    import dask

    rusk.get_client()
    (inner,) = dask.compute(dask.delayed(pid_of_run, pure=False)())
    return os.getpid(), inner


def test_get_client_in_a_task_makes_it_the_default_scheduler_there(cluster):
    pytest.importorskip("dask")
    with rusk.Client(cluster) as client:
        outer, inner = client.submit(compute_after_get_client, pure=False).result(timeout=120)
        assert inner != outer


def wait_then_work(marker):
    """Waits for a child inside worker_client() (seceded), then, rejoined at the block's end,
    works for a while holding the slot."""
    with rusk.worker_client() as c:
        c.submit(inc, 1, pure=False).result()
    with open(marker, "w") as f:
        f.write("rejoined")
    time.sleep(1.0)
    return time.time()


def started_at():
    return time.time()


def test_a_task_that_rejoins_holds_its_slot_again(cluster, tmp_path):
    """One thread: once the parent rejoined, a new task waits for it instead of running on
    the executor that took the parent's slot while it waited."""
    marker = str(tmp_path / "rejoined")
    with rusk.Client(cluster) as client:
        parent = client.submit(wait_then_work, marker, pure=False)
        wait_until(lambda: os.path.exists(marker), timeout=60, what="the parent rejoined")
        later = client.submit(started_at, pure=False)
        assert later.result(timeout=60) >= parent.result(timeout=60)


class Box:
    def __init__(self, future):
        self.future = future


def unbox(box):
    return box.future.result() * 10


def add_to(box, y):
    # Plain get_client() and result(), no worker_client: waiting in a task gives up the slot
    # by itself, so this does not deadlock the one-thread worker.
    c = rusk.get_client()
    return c.submit(inc, box.future, pure=False).result() + y


def test_a_future_pickled_inside_an_object_is_usable_in_the_task(cluster):
    with rusk.Client(cluster) as client:
        f = client.submit(inc, 4)
        assert client.submit(unbox, Box(f)).result(timeout=60) == 50
        # ... also as an argument of a task the task submits (an adopt task of f's key).
        assert client.submit(add_to, Box(f), 100).result(timeout=60) == 106


def test_another_clients_future_is_a_dependency_and_its_key_is_kept(cluster):
    a = rusk.Client(cluster)
    b = rusk.Client(cluster)
    try:
        fa = a.submit(inc, 41, key="answer")
        assert b.submit(inc, fa, pure=False).result(timeout=60) == 43
        # B's own future of A's key: a Future held on the cluster.
        fb = b._foreign_future(a._graph, "answer")
        assert fb.result(timeout=30) == 42
        del fa
        a.close()  # A is gone; B's hold keeps the key, and its value still arrives.
        assert b.submit(inc, fb, pure=False).result(timeout=60) == 43
        assert fb.result(timeout=30) == 42
    finally:
        a.close()
        b.close()


def test_datasets_are_shared_kept_and_refused_clearly(cluster):
    a = rusk.Client(cluster)
    b = rusk.Client(cluster)
    try:
        x = a.submit(inc, 1, key="x")
        a.publish_dataset(x, name="one")
        a.publish_dataset(pair=[x, "label"])
        assert sorted(b.list_datasets()) == ["one", "pair"]
        assert "one" in b.datasets
        with pytest.raises(RuntimeError, match="already exists"):
            a.publish_dataset(x, name="one")
        a.publish_dataset(x, name="one", override=True)
        with pytest.raises(RuntimeError, match="DATASET_BYTES_MAX"):
            a.publish_dataset(big=os.urandom(2 << 20))
        with pytest.raises(KeyError):
            b.get_dataset("nope")
        assert b.get_dataset("nope", default=7) == 7
        del x
        a.close()  # the publisher leaves: its published keys stay
        one = b.get_dataset("one")
        assert one.result(timeout=30) == 2
        fut, label = b.datasets["pair"]
        assert (fut.result(timeout=30), label) == (2, "label")
        assert b.submit(inc, one, pure=False).result(timeout=30) == 3
        b.unpublish_dataset("one")
        del b.datasets["pair"]
        assert b.list_datasets() == ()
        with pytest.raises(KeyError):
            b.unpublish_dataset("one")
        # The cluster works on.
        assert b.submit(inc, 10, pure=False).result(timeout=30) == 11
    finally:
        a.close()
        b.close()


def write_later(path, delay):
    time.sleep(delay)
    with open(path, "w") as f:
        f.write("done")
    return path


def test_fire_and_forget_outlives_its_client(cluster, tmp_path):
    path = str(tmp_path / "ff")
    a = rusk.Client(cluster)
    f = a.submit(write_later, path, 1.0)
    rusk.fire_and_forget(f)
    del f
    a.close()
    wait_until(lambda: os.path.exists(path), timeout=30, what="the fire-and-forget task")
    # Then the scheduler drops it: no graph left.
    with rusk.Client(cluster) as b:
        wait_until(lambda: not b.status()["graphs"] or len(b.status()["graphs"]) <= 1, timeout=10, what="graphs released")


def test_the_task_credential_cannot_join_as_a_worker(cluster):
    task_token = hmac.new(cluster.token.encode(), b"rusk-task-credential", hashlib.sha256).hexdigest()
    # It opens a client connection...
    with rusk.Client(cluster.address, token=task_token) as c:
        assert c.submit(inc, 1, pure=False).result(timeout=30) == 2
    # ... but a worker presenting it is refused.
    env = dict(os.environ, RUSK_TOKEN=task_token)
    p = subprocess.run(
        [cluster.binary, "worker", "--scheduler", cluster.address, "--nthreads", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0
    assert "token" in (p.stderr + p.stdout).lower(), p.stderr[-2000:]


def reads_env():
    return {k: os.environ.get(k) for k in ("RUSK_TOKEN", "RUSK_TOKEN_FILE", "RUSK_TASK_TOKEN")}


def test_task_code_never_sees_the_cluster_token(cluster):
    with rusk.Client(cluster) as c:
        env = c.submit(reads_env, pure=False).result(timeout=30)
    assert env["RUSK_TOKEN"] is None and env["RUSK_TOKEN_FILE"] is None
    assert env["RUSK_TASK_TOKEN"] and env["RUSK_TASK_TOKEN"] != cluster.token
