"""Dask collections on rusk (``scheduler=client.get``) give what Dask's own scheduler gives."""

import operator

import pytest

dask = pytest.importorskip("dask")
np = pytest.importorskip("numpy")
da = pytest.importorskip("dask.array")

import rusk  # noqa: E402
from rusk._dask import encode_key, to_tasks  # noqa: E402


def inc(x):
    return x + 1


def both(a, b):
    return (a, b)


class DaskTaskError(Exception):
    pass


def explode(x):
    raise DaskTaskError("exploded on %r" % (x,))


def test_array_reduction(client):
    x = da.random.RandomState(42).random((2000, 1000), chunks=(250, 250))
    exprs = [x.sum(), x.mean(axis=0), x.std(), (x[::2] + 1).max(axis=1)]
    got = dask.compute(*exprs, scheduler=client.get)
    want = dask.compute(*exprs, scheduler="sync")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w)


def test_array_matmul(client):
    rs = da.random.RandomState(0)
    a = rs.random((600, 400), chunks=(150, 100))
    b = rs.random((400, 300), chunks=(100, 150))
    got = (a @ b).compute(scheduler=client.get)
    want = (a @ b).compute(scheduler="sync")
    assert got.shape == (600, 300)
    np.testing.assert_allclose(got, want)


def test_dataframe_groupby_aggregate(client):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    dd = pytest.importorskip("dask.dataframe")
    n = 10_000
    df = pd.DataFrame(
        {
            "key": np.arange(n) % 13,
            "name": np.array(["a", "b", "c"])[np.arange(n) % 3],
            "x": np.arange(n, dtype=float),
            "y": np.arange(n) % 7,
        }
    )
    ddf = dd.from_pandas(df, npartitions=8)
    agg = ddf.groupby(["key", "name"]).agg({"x": ["sum", "mean"], "y": ["max", "count"]})
    got = agg.compute(scheduler=client.get).sort_index()
    want = agg.compute(scheduler="sync").sort_index()
    pd.testing.assert_frame_equal(got, want)
    assert got.loc[(0, "a"), ("y", "count")] == want.loc[(0, "a"), ("y", "count")]
    # Also against pandas itself, and a filter + groupby-size.
    # (Dask turns object strings into Arrow strings: compare pandas' values, not index dtypes.)
    pandas = df.groupby(["key", "name"]).agg({"x": ["sum", "mean"], "y": ["max", "count"]})
    pd.testing.assert_frame_equal(got, pandas, check_index_type=False)
    sizes = ddf[ddf.x > 5000].groupby("key").size()
    pd.testing.assert_series_equal(sizes.compute(scheduler=client.get).sort_index(), sizes.compute(scheduler="sync").sort_index())


def test_delayed(client):
    delayed = dask.delayed
    leaves = [delayed(inc)(i) for i in range(20)]
    pairs = [delayed(both)(leaves[i], leaves[i + 1]) for i in range(0, 20, 2)]
    total = delayed(sum)([delayed(operator.add)(leaves[i], leaves[i + 1]) for i in range(0, 20, 2)])
    nested = delayed(lambda d, xs: {k: v * 2 for k, v in d.items()} | {"n": len(xs)})({"a": leaves[0], "b": total}, pairs)
    got = dask.compute(total, nested, pairs[0], scheduler=client.get)
    want = dask.compute(total, nested, pairs[0], scheduler="sync")
    assert got == want == (210, {"a": 2, "b": 420, "n": 10}, (1, 2))


def test_bag(client):
    db = pytest.importorskip("dask.bag")
    b = db.from_sequence(range(1000), npartitions=7)
    exprs = [
        b.map(lambda v: v * 3).filter(lambda v: v % 2 == 0).sum(),
        b.frequencies(),
        b.map(lambda v: {"k": v % 5, "v": v}).foldby("k", lambda acc, r: acc + r["v"], 0, operator.add, 0),
    ]
    got = dask.compute(*exprs, scheduler=client.get)
    want = dask.compute(*exprs, scheduler="sync")
    assert got[0] == want[0]
    assert sorted(got[1]) == sorted(want[1])
    assert sorted(got[2]) == sorted(want[2])


def test_config_set_scheduler(client):
    x = da.ones((100, 100), chunks=25)
    with dask.config.set(scheduler=client.get):
        assert x.sum().compute() == 10_000
        assert dask.delayed(inc)(1).compute() == 2


def test_error_in_dask_task_keeps_its_type(client):
    x = dask.delayed(explode)(3)
    y = dask.delayed(inc)(x)
    with pytest.raises(DaskTaskError, match="exploded on 3") as info:
        y.compute(scheduler=client.get)
    assert isinstance(info.value.__cause__, rusk.RemoteTraceback)
    # The client goes on.
    assert dask.delayed(inc)(1).compute(scheduler=client.get) == 2


def test_legacy_graph_dict(client):
    dsk = {
        "x": 1,
        "y": (inc, "x"),
        ("a", 0): (operator.add, "x", "y"),
        ("a", 1): (sum, ["x", "y", (inc, "y")]),
        "(tricky": (both, ("a", 0), {"k": ("a", 1)}),
        "alias": "y",
    }
    assert client.get(dsk, "y") == 2
    assert client.get(dsk, [("a", 0), [("a", 1), "alias"]]) == [3, [6, 2]]
    assert client.get(dsk, "(tricky") == dask.get(dsk, "(tricky")


def test_key_encoding_is_injective():
    keys = ["x", "(x", "'x'", ("x", 0), ("x", 0, 1), "('x', 0)", 3, "3", "<3>", ("x", np.int64(2))]
    encoded = [encode_key(k) for k in keys]
    assert len(set(encoded)) == len(keys)
    assert encode_key(("x", np.int64(2))) == encode_key(("x", 2))


def test_graph_is_culled_to_the_keys():
    dsk = {"a": 1, "b": (inc, "a"), "unused": (inc, "b")}
    tasks, outputs, decode, uses_session = to_tasks(dsk, ["b"])
    assert not uses_session
    assert sorted(t["key"] for t in tasks) == ["a", "b"]
    assert outputs == ["b"] and decode["b"] == "b"


DEFAULT_SCRIPT = r"""
import os, sys, json
import dask, dask.config
import pandas as pd
import dask.dataframe as dd
import rusk

here = os.getpid()
out = {"before": dask.config.get("scheduler", None), "shuffle_before": dask.config.get("dataframe.shuffle.method", None)}
with rusk.Client(n_workers=2, threads_per_worker=1) as c:
    out["pid_inside"] = dask.delayed(os.getpid)().compute()
    out["shuffle_inside"] = dask.config.get("dataframe.shuffle.method")
    left = dd.from_pandas(pd.DataFrame({"k": range(1000), "x": range(1000)}), npartitions=4)
    right = dd.from_pandas(pd.DataFrame({"k": range(0, 2000, 2), "y": range(1000)}), npartitions=3)
    m = left.merge(right, on="k")
    out["merged"] = [int(m.x.sum().compute()), int(len(m))]
    # A second client takes the default; closing it gives it back to the first.
    c2 = rusk.Client(c.cluster)
    out["second_is_default"] = dask.config.get("scheduler").__self__ is c2
    c2.close()
    out["first_is_default_again"] = dask.config.get("scheduler").__self__ is c
    out["pid_after_second"] = dask.delayed(os.getpid)().compute()
out["after"] = dask.config.get("scheduler", None)
out["shuffle_after"] = dask.config.get("dataframe.shuffle.method", None)
out["pid_after"] = dask.delayed(os.getpid)().compute()
out["here"] = here
print(json.dumps(out))
"""


def test_a_new_client_is_dasks_default_until_it_closes(tmp_path):
    """``rusk.Client()`` makes itself Dask's default scheduler (as ``distributed.Client``
    does): ``.compute()`` with no ``scheduler=`` runs on the cluster, dataframe merges shuffle
    with ``"tasks"``, a second client takes over and gives it back, and closing the last one
    restores what Dask had. In a process of its own, so that the session's client is not in
    the way."""
    import json
    import subprocess
    import sys

    pytest.importorskip("pandas")
    script = tmp_path / "default.py"
    script.write_text(DEFAULT_SCRIPT)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["before"] is None and out["after"] is None
    assert out["shuffle_before"] is None and out["shuffle_after"] is None
    assert out["shuffle_inside"] == "tasks"
    assert out["pid_inside"] != out["here"], "ran in the client's process, not on the cluster"
    assert out["pid_after_second"] != out["here"]
    assert out["second_is_default"] and out["first_is_default_again"]
    assert out["pid_after"] == out["here"], "the default was not given back"
    assert out["merged"] == [sum(range(0, 1000, 2)), 500]


def test_client_compute_returns_futures_of_finalised_collections(client):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    x = da.arange(1000, chunks=100)
    f = client.compute(x.sum())
    assert isinstance(f, rusk.Future)
    assert f.result() == 499500
    total, mean, whole = client.gather(client.compute([x.sum(), (x * 2).mean(), x]))
    assert (total, mean) == (499500, 999.0)
    assert isinstance(whole, np.ndarray) and (whole == np.arange(1000)).all()
    assert client.compute(x.sum(), sync=True) == 499500
    frame = dd.from_pandas(pd.DataFrame({"a": range(100)}), npartitions=4)
    assert client.compute(frame.a.sum()).result() == 4950
    got = client.compute(frame).result()
    assert isinstance(got, pd.DataFrame) and list(got.a) == list(range(100))
    assert client.compute(dask.delayed(sum)([1, 2, 3])).result() == 6
    assert client.compute(5).result() == 5
    # A task that raises: its future carries the error, the cluster goes on.
    bad = client.compute(dask.delayed(explode)(1))
    with pytest.raises(DaskTaskError, match="exploded"):
        bad.result()
    assert client.compute(x.max()).result() == 999


def counted(path, x):
    """Appends a line to ``path`` each time it runs (on a worker of this host)."""
    with open(path, "a") as f:
        f.write("%r\n" % (x,))
    return np.full(10, x, dtype=float)


def test_persist_keeps_chunks_on_the_cluster_and_later_graphs_use_them(client, tmp_path):
    log = str(tmp_path / "runs.log")
    parts = [dask.delayed(counted)(log, i) for i in range(6)]
    x = da.concatenate([da.from_delayed(p, shape=(10,), dtype=float) for p in parts])
    y = client.persist(x + 1)
    assert isinstance(y, da.Array)
    futures = [v for v in dict(y.__dask_graph__()).values() if isinstance(v, rusk.Future)]
    assert len(futures) == y.npartitions == 6
    rusk.wait(futures)
    assert sorted(k for k in client.who_has(futures)) == sorted(f.key for f in futures)
    assert all(client.who_has(futures).values())
    # Two later graphs, through dask.compute and through the default scheduler: no chunk
    # is computed again.
    assert float(y.sum().compute()) == sum(10 * (i + 1) for i in range(6))
    assert float((y * 2).max().compute(scheduler=client.get)) == 12.0
    z, = dask.persist(y[:20] - 1, scheduler=client.get)
    np.testing.assert_array_equal(z.compute(), np.repeat([0.0, 1.0], 10))
    with open(log) as f:
        assert len(f.read().splitlines()) == 6, "a persisted chunk was computed again"
    # Several collections at once, of different kinds.
    a, b = client.persist([da.ones(10, chunks=5), dask.delayed(sum)([1, 2])])
    assert int(a.sum().compute()) == 10 and b.compute() == 3
    # Dropping the collection releases its chunks on the workers.
    keys = [f.key for f in futures]
    del y, z, futures, x
    import gc

    gc.collect()
    from conftest import wait_until

    wait_until(lambda: not set(keys) & set(client.who_has()), what="persisted chunks released")


def test_futures_are_dask_task_references(client):
    f = client.submit(inc, 41)
    # A future as the argument of a delayed call, and as the source of an array.
    d = dask.delayed(inc)(f)
    assert d.compute() == 43
    assert client.compute(d).result() == 43
    ones = client.submit(np.ones, 5)
    arr = da.from_delayed(ones, shape=(5,), dtype=float)
    assert float(arr.sum().compute()) == 5.0
    assert dask.compute(dask.delayed(both)(f, ones), scheduler=client.get)[0][0] == 42
    # Same key, same token: graphs that use one future twice refer to it once.
    assert dask.base.tokenize(f) == dask.base.tokenize(client.submit(inc, 1, key=f.key))
    # A failed future makes the graph fail with its error.
    bad = client.submit(explode, 1)
    with pytest.raises(DaskTaskError, match="exploded"):
        dask.delayed(inc)(bad).compute()
    assert dask.delayed(inc)(f).compute() == 43


def test_a_graphs_functions_are_pickled_once_and_run_on_the_cluster(client):
    """``to_tasks`` pickles each function and class of a graph once, in a prelude that the
    payloads of the tasks using it share; a closure over 100 KB is not copied into each task,
    nor into a task that does not use it."""
    import struct

    from rusk import _executor, _payload

    big = b"x" * 100_000

    class Local:  # defined here: pickled by value, once
        def __init__(self, v):
            self.v = v

    def add_big(x):  # a closure: pickled by value, once
        return Local(x.v + len(big) if isinstance(x, Local) else x + len(big))

    leaves = [dask.delayed(add_big)(i) for i in range(100)]
    total = dask.delayed(lambda xs: sum(x.v for x in xs))(leaves)
    tasks, outputs, _decode, _ = to_tasks(total.__dask_graph__(), [total.key])
    assert len(tasks) == 101
    heads = {}
    for t in tasks:
        p = t["python"]
        nl = p.index(b"\n")
        assert p[nl + 1 : nl + 2] == b"S"
        (n,) = struct.unpack_from(">I", p, nl + 2)
        heads.setdefault(p[: nl + 6 + n], []).append(t)
        assert len(p) - (nl + 6 + n) < 20_000, "a task body carries the closure again"
    # The 100 leaves share one prelude with the closure; the sum's own lambda has a small one.
    assert sorted(len(ts) for ts in heads.values()) == [1, 100]
    assert sorted(len(h) > 100_000 for h in heads) == [False, True]
    # The executor's decoder gives back the call, the prelude unpickled once.
    ex = object.__new__(_executor.Executor)
    ex.pickle, ex.preludes = __import__("pickle"), {}
    p = tasks[0]["python"]
    func, args, kwargs, dep_paths = ex.load_call(p, p.index(b"\n") + 1)
    assert func is ex.load_call(tasks[1]["python"], p.index(b"\n") + 1)[0]
    assert len(ex.preludes) == 1 and not dep_paths and kwargs == {}
    assert func(*args).v - 100_000 in range(100)
    # And on the cluster.
    assert total.compute(scheduler=client.get) == sum(range(100)) + 100 * 100_000
    assert _payload.PAYLOAD_VERSION == _executor.RUSK_PROTOCOL


def test_a_graph_of_tasks_each_with_its_own_lambda_is_encoded_in_linear_size(client):
    """Each task's prelude holds only the functions it uses: 3,000 tasks each with a lambda of
    their own (a closure made in a loop) are not 3,000 x 3,000 functions on the wire (which
    was over the frame limit, and sent again forever by the reconnecting client)."""
    leaves = [dask.delayed(lambda i: i * 2)(i) for i in range(3000)]
    graph = {}
    for x in leaves:
        graph.update(x.__dask_graph__())
    tasks, _outputs, _decode, _ = to_tasks(graph, [x.key for x in leaves])
    per_task = sum(len(t["python"]) for t in tasks) / len(tasks)
    assert per_task < 4_000, per_task
    assert sum(dask.compute(*leaves, scheduler=client.get)) == 2 * sum(range(3000))


def test_big_literals_are_put_on_workers_not_sent_through_the_scheduler(client):
    """A graph whose literal arrays pass ``BIG_LITERALS_PUT_MIN_TOTAL`` (here ``da.from_array``
    of a 128 MB numpy array, each chunk a literal of its task) has them put on workers and
    named by its tasks, so the submission stays small (it used to carry them all, and one over
    256 MiB was refused); the result is the same."""
    import numpy as np
    import dask.array as da

    from rusk import _payload

    a = np.arange(16_000_000, dtype=np.float64).reshape(4000, 4000)
    x = da.from_array(a, chunks=(1000, 1000)).sum()
    tasks, _outputs, _decode, _ = to_tasks(
        dict(x.__dask_graph__()), x.__dask_keys__(), client=client
    )
    puts = [t for t in tasks if "put" in t]
    assert len(puts) == 16 and all(t["key"].startswith("literal-") for t in puts)
    payload = sum(len(t.get("python", b"")) for t in tasks)
    assert payload < 1 << 20, payload
    assert a.nbytes >= _payload.BIG_LITERALS_PUT_MIN_TOTAL
    assert x.compute(scheduler=client.get) == a.sum()
    # Under the threshold they stay in the graph (whose lineage stays whole).
    small = da.from_array(a[:1000], chunks=(500, 1000)).sum()
    tasks, _o, _d, _ = to_tasks(
        dict(small.__dask_graph__()), small.__dask_keys__(), client=client
    )
    assert not any("put" in t for t in tasks)
    assert small.compute(scheduler=client.get) == a[:1000].sum()


def test_a_big_array_argument_is_put_once_for_all_the_calls_using_it(client):
    """``client.map`` and ``client.submit`` with a big numpy array argument: the array is put
    on a worker once and every task names it (its own first input), not pickled per task."""
    import numpy as np

    big = np.ones(10_000_000)  # 80 MB
    futures = client.map(lambda i, arr: float(arr[i:].sum()), range(4), [big] * 4)
    assert client.gather(futures) == [1e7, 1e7 - 1, 1e7 - 2, 1e7 - 3]
    assert client.submit(lambda arr: arr.shape, big).result(60) == (10_000_000,)


def test_wait_and_futures_of_take_persisted_collections(client):
    """``wait`` and ``futures_of`` take a persisted collection (its futures), and nested
    containers of futures, as in Dask (``wait(x)`` after ``x = client.persist(x)`` raised)."""
    import dask.array as da

    x = client.persist(da.ones((100, 100), chunks=(50, 50)))
    fs = rusk.futures_of(x)
    assert len(fs) == 4 and all(isinstance(f, rusk.Future) for f in fs)
    done, not_done = rusk.wait(x, timeout=60)
    assert len(done) == 4 and not not_done
    f = client.submit(abs, -3)
    nested = rusk.futures_of({"a": [f, (f,)], "b": x})
    assert nested[0] is f and len(nested) == 5  # each once
    assert float(x.sum().compute(scheduler=client.get)) == 10_000.0
