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
    with pytest.raises(NotImplementedError, match="broadcast"):
        client.scatter(1, broadcast=True)
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
