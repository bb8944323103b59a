"""``client.scatter``: local data put straight on the workers' data servers."""

import os
import signal
import threading

import pytest

import rusk
from conftest import wait_until

np = pytest.importorskip("numpy")


def total(x):
    return float(np.asarray(x).sum())


def test_scatter_values_lists_dicts_and_arrays(client):
    one = client.scatter(41)
    assert isinstance(one, rusk.Future) and one.result() == 41
    assert client.submit(lambda v: v + 1, one).result() == 42
    # hash=True (default): equal data, the same future; hash=False: a new one.
    assert client.scatter(41).key == one.key
    assert client.scatter(41, hash=False).key != one.key
    xs = client.scatter([1, "two", (3,)])
    assert isinstance(xs, list) and client.gather(xs) == [1, "two", (3,)]
    named = client.scatter({"alpha": 1, "beta": [2, 3]})
    assert set(named) == {"alpha", "beta"} and named["alpha"].key == "alpha"
    assert client.gather(named) == {"alpha": 1, "beta": [2, 3]}
    arr = np.arange(3_000_000, dtype=np.float64)  # 24 MB: through a memfd and sendfile
    fa = client.scatter(arr)
    assert client.submit(total, fa).result() == float(arr.sum())
    back = fa.result()
    assert back.dtype == arr.dtype and (back == arr).all()


def test_scattering_equal_data_again_after_the_first_future_is_gone(client):
    first = client.scatter("same value")
    key = first.key
    first.result()
    del first
    wait_until(lambda: key not in client._keys, what="the first future released")
    again = client.scatter("same value")
    assert again.result(30) == "same value"
    assert client.submit(len, again).result(30) == len("same value")


def test_scatter_places_on_the_named_workers(client):
    names = sorted(client.nthreads())
    fs = client.scatter(list(range(8)), workers=[names[-1]], hash=False)
    rusk.wait(fs)
    assert {w for ws in client.who_has(fs).values() for w in ws} == {names[-1]}
    with pytest.raises(ValueError, match="no live worker"):
        client.scatter(1, workers=["nobody/9"])


def test_bad_scatters_raise_and_leave_the_cluster_working(client):
    with pytest.raises(TypeError, match="pickle"):
        client.scatter(threading.Lock())
    with pytest.raises(TypeError, match="pickle"):
        client.scatter([1, threading.Lock()])
    with pytest.raises(ValueError, match="positive integer"):
        client.replicate(client.scatter(1), n=0)
    with pytest.raises(ValueError, match="no live worker"):
        client.replicate(client.scatter(1), workers=["nobody/9"])
    assert client.submit(total, client.scatter([1.0, 2.0])).result() == 3.0


@pytest.mark.parametrize("fresh_client", [dict(n_workers=2)], indirect=True)
def test_a_scattered_value_lost_with_its_worker_fails_with_a_clear_error(fresh_client):
    c = fresh_client
    names = sorted(c.nthreads())
    f = c.scatter(np.ones(10), workers=[names[0]])
    assert c.submit(total, f).result() == 10.0
    victim = [w for w in c.status()["workers"] if w["id"] == names[0]][0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(
        lambda: any(w["id"] == names[0] and w["pid"] != victim["pid"] and w["state"] != "lost" for w in c.status()["workers"]),
        what="the killed worker restarted",
    )
    with pytest.raises(Exception, match="scattered"):
        c.submit(total, f, pure=False).result(60)
    # The cluster goes on, and a new scatter works.
    assert c.submit(total, c.scatter(np.ones(3))).result(60) == 3.0


def stored_bytes(c):
    return {w["id"]: w.get("stored_bytes", 0) for w in c.status()["workers"] if w["state"] != "lost"}


@pytest.mark.parametrize("fresh_client", [dict(n_workers=2)], indirect=True)
def test_broadcast_puts_a_copy_on_every_worker_and_release_frees_them_all(fresh_client):
    c = fresh_client
    names = sorted(c.nthreads())
    base = stored_bytes(c)
    arr = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    f = c.scatter(arr, broadcast=True)
    assert sorted(c.who_has(f)[f.key]) == names
    # Each worker stores its own copy (as its next heartbeats say).
    wait_until(
        lambda: all(b - base.get(n, 0) >= arr.nbytes for n, b in stored_bytes(c).items()),
        what="a copy stored on every worker",
    )
    # Tasks on both workers read it (each where it is).
    fs = c.map(total, [f] * 4, pure=False)
    assert c.gather(fs) == [float(arr.sum())] * 4
    # Asking again, or for fewer copies, changes nothing.
    c.replicate(f)
    c.replicate(f, n=1)
    assert sorted(c.who_has(f)[f.key]) == names
    del f, fs
    wait_until(
        lambda: all(b - base.get(n, 0) < arr.nbytes for n, b in stored_bytes(c).items()),
        what="every copy released",
    )


@pytest.mark.parametrize("fresh_client", [dict(n_workers=2)], indirect=True)
def test_a_broadcast_value_survives_its_first_worker(fresh_client):
    c = fresh_client
    f = c.scatter(np.ones(1000), broadcast=True)
    first = c.who_has(f)[f.key][0]
    victim = [w for w in c.status()["workers"] if w["id"] == first][0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(
        lambda: any(w["id"] == first and w["pid"] != victim["pid"] and w["state"] != "lost" for w in c.status()["workers"]),
        what="the killed worker restarted",
    )
    # The other copy took over: the value is there, nothing had to be recomputed.
    assert c.submit(total, f, pure=False).result(60) == 1000.0
    assert c.who_has(f)[f.key] == [w for w in sorted(c.nthreads()) if w != first]
    # Replicating again puts it back on the restarted worker.
    c.replicate(f)
    assert sorted(c.who_has(f)[f.key]) == sorted(c.nthreads())


def test_replicate_computed_results(client):
    names = sorted(client.nthreads())
    fs = client.map(lambda i: np.full(1000, i), range(6), pure=False)
    client.replicate(fs)
    where = client.who_has(fs)
    assert all(sorted(ws) == names for ws in where.values()), where
    assert [float(x.sum()) for x in client.gather(fs)] == [1000.0 * i for i in range(6)]
    # n=1 on a value with more copies is a no-op; an unfinished future is waited for.
    slow = client.submit(lambda: __import__("time").sleep(0.3) or 7, pure=False)
    client.replicate(slow, n=2)
    assert sorted(client.who_has(slow)[slow.key]) == names
    assert slow.result() == 7


def test_futures_are_freed_without_the_garbage_collector(client):
    """Nothing in map/gather/replicate keeps a future in a reference cycle: its result on the
    cluster is released as soon as the last reference goes, not at the next collection."""
    import gc
    import weakref

    gc.disable()
    try:
        x = client.scatter(np.ones(4), hash=False)
        ys = client.map(total, [x, x], pure=False)
        got = client.gather(ys)
        client.replicate(ys)
        client.who_has(ys)
        refs = [weakref.ref(x)] + [weakref.ref(y) for y in ys]
        del x, ys
        alive = [r() for r in refs if r() is not None]
    finally:
        gc.enable()
    assert got == [4.0, 4.0]
    assert alive == []
