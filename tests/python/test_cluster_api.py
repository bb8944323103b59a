"""Cluster-side operations of the client: restart, run, upload_file, worker logs."""

import os

import pytest

import rusk


def inc(x):
    return x + 1


def pid(_=None):
    return os.getpid()


def test_restart_restarts_every_worker_and_clears_the_clients_futures(fresh_client):
    c = fresh_client
    kept = c.submit(inc, 1)
    assert kept.result() == 2
    pending = c.submit(__import__("time").sleep, 30, pure=False)
    before = {w["id"]: (w["pid"], w["incarnation"]) for w in c.status()["workers"]}
    c.restart(timeout=60)
    after = {w["id"]: (w["pid"], w["incarnation"]) for w in c.status()["workers"] if w["state"] != "lost"}
    assert set(after) == set(before)
    assert all(after[i][0] != before[i][0] and after[i][1] != before[i][1] for i in before)
    assert kept.status == "cancelled" and pending.status == "cancelled"
    with pytest.raises(rusk.CancelledError):
        pending.result(5)
    assert c.who_has() == {}
    # The same pure call runs again, on the new workers.
    assert c.submit(inc, 1).result(30) == 2
    assert c.gather(c.map(inc, range(10))) == list(range(1, 11))


def write_after(path, _input):
    with open(path, "w") as f:
        f.write("done")
    return 1


def test_fire_and_forget_runs_to_the_end_without_a_future(client, tmp_path):
    import gc

    from conftest import wait_until

    marker = tmp_path / "fired"
    # The writer waits for a slow input: dropped without fire_and_forget, it would be
    # cancelled before it starts.
    slow = client.submit(__import__("time").sleep, 1.0, pure=False)
    rusk.fire_and_forget(client.submit(write_after, str(marker), slow, pure=False))
    del slow
    gc.collect()
    wait_until(marker.exists, timeout=30, what="the forgotten task's side effect")
    wait_until(lambda: not client._held, timeout=10, what="the hold dropped once done")
