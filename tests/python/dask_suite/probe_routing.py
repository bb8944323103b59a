"""Checks of the routing itself, run by the dask_suite plugin's session like Dask's modules
(tests/python/test_dask_suite.py runs this file under each target): every way a test can ask
for a scheduler must end on the target cluster, in another process, counted as routed, and
none may reach Dask's local schedulers. Tasks use builtins only (the workers need not import
this file)."""

import operator
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

import dask
import dask.array as da
import dask.bag as db
from dask_suite import plugin

MAIN = os.getpid()


@pytest.fixture
def routed():
    """Asserts, after the test, that it routed exactly ``expected[0]`` calls and ran nothing
    on Dask's local schedulers."""
    assert plugin._state["target"] in ("rusk", "distributed"), "run with --dask-target"
    before = plugin._state["routed"], plugin._state["escaped"]
    expected = [1]
    yield expected
    assert plugin._state["escaped"] == before[1], "a graph ran on Dask's local schedulers"
    assert plugin._state["routed"] - before[0] == expected[0]


def remote_pid():
    return dask.delayed(os.getpid, pure=False)()


@pytest.mark.parametrize(
    "scheduler",
    ["sync", "synchronous", "single-threaded", "threads", "threading", "processes", "multiprocessing"],
)
def test_named_scheduler(routed, scheduler):
    assert remote_pid().compute(scheduler=scheduler) != MAIN


def test_scheduler_functions(routed):
    import dask.local
    import dask.multiprocessing
    import dask.threaded

    routed[0] = 3
    for get in (dask.local.get_sync, dask.threaded.get, dask.multiprocessing.get):
        assert remote_pid().compute(scheduler=get) != MAIN


def test_executor(routed):
    with ThreadPoolExecutor(2) as pool:
        assert remote_pid().compute(scheduler=pool) != MAIN


@pytest.mark.parametrize("scheduler", ["sync", "threads", "processes"])
def test_config(routed, scheduler):
    with dask.config.set(scheduler=scheduler):
        assert dask.compute(remote_pid())[0] != MAIN


def test_default(routed):
    assert remote_pid().compute() != MAIN


def test_dask_get(routed):
    assert dask.get({"p": (os.getpid,), "q": (operator.add, "p", 0)}, "q") != MAIN


def test_dask_compute_several(routed):
    a, b, c = dask.compute(remote_pid(), da.ones(10, chunks=3).sum(), db.range(5, npartitions=2).sum(), scheduler="sync")
    assert a != MAIN and b == 10 and c == 10


def test_persist(routed):
    routed[0] = 2
    x = da.arange(12, chunks=4) + 1
    (y,) = dask.persist(x, scheduler="sync")
    assert y.sum().compute(scheduler="threads") == 78


def test_get_keyword_still_refused(routed):
    routed[0] = 0
    with pytest.raises(TypeError):
        remote_pid().compute(get=dask.get)


def test_unknown_scheduler_still_refused(routed):
    routed[0] = 0
    with pytest.raises(ValueError):
        remote_pid().compute(scheduler="no-such-scheduler")
