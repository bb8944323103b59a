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
