"""How ``rusk._dask.to_tasks`` encodes a Dask graph, without a cluster: every kind of node
becomes a call that the executor's own decoder (``_executor.Executor.load_call`` and
``_put``) runs to Dask's result; plain tasks are called directly (no Dask node in the
payload); the one-pass pickling of ``_payload.encode_calls`` falls back call by call when it
must."""

import math
import operator
import pickle

import pytest

dask = pytest.importorskip("dask")

from dask._task_spec import Alias, DataNode, Dict, List, Task, TaskRef, Tuple  # noqa: E402

from rusk import _dask, _executor, _payload  # noqa: E402


def inc(x):
    return x + 1


def pair(a, b=None):
    return (a, b)


def decode(payloads):
    """The calls ``(func, args, kwargs, dep_paths)`` in payloads, as an executor decodes them."""
    ex = object.__new__(_executor.Executor)
    ex.pickle, ex.preludes = pickle, {}
    return [ex.load_call(memoryview(p), p.index(b"\n") + 1) for p in payloads]


def run_locally(tasks, outputs):
    """Run encoded tasks in order as an executor would: decode each payload, put its
    dependencies' values at their paths, call it."""
    values = {}
    for t, (func, args, kwargs, paths) in zip(tasks, decode([t["python"] for t in tasks])):
        assert len(paths) == len(t["deps"])
        root = [args, kwargs]
        for path, dep in zip(paths, t["deps"]):
            root = _executor._put(root, path, 0, values[dep])
        args, kwargs = root
        values[t["key"]] = func(*args, **kwargs)
    return [values[o] for o in outputs]


def test_every_kind_of_node_runs_as_dask_runs_it():
    graph = {
        "x": DataNode("x", 3),
        "y": Task("y", inc, TaskRef("x")),
        "alias": Alias("alias", "y"),
        "same": Task("same", operator.add, TaskRef("y"), TaskRef("y")),
        "kw": Task("kw", pair, TaskRef("x"), b=TaskRef("y")),
        "list": Task("list", sum, List(TaskRef("x"), 10, TaskRef("y"))),
        "tuple": Task("tuple", pair, Tuple(TaskRef("x"), List(TaskRef("y"), 5))),
        "dict": Task("dict", pair, Dict({"k": TaskRef("x"), "v": List(1, TaskRef("alias"))})),
        "nested": Task("nested", inc, Task(None, operator.mul, TaskRef("x"), 2)),
        "literal": Task("literal", pair, [1, 2], b={"a": (3,)}),
    }
    keys = list(graph)
    tasks, outputs, names, uses_session = _dask.to_tasks(graph, keys)
    assert not uses_session and len(tasks) == len(keys)
    assert run_locally(tasks, outputs) == [dask.get(graph, k) for k in keys]
    by_key = {names[t["key"]]: t for t in tasks}
    # Only the task that nests another one carries a Dask node.
    for k, t in by_key.items():
        assert (decode([t["python"]])[0][0] is _dask._run_node) == (k == "nested"), k
    # Dependencies in argument order, repeated when an argument repeats.
    assert by_key["same"]["deps"] == ["y", "y"]
    assert by_key["list"]["deps"] == ["x", "y"]


def test_legacy_graph_and_futures_style_references():
    dsk = {"a": 1, "b": (inc, "a"), "c": (operator.add, "a", "b"), ("d", 0): (sum, ["a", "b", (inc, "c")])}
    tasks, outputs, _, _ = _dask.to_tasks(dsk, ["c", ("d", 0)])
    assert run_locally(tasks, outputs) == [3, 1 + 2 + 4]


def test_a_delayed_graph_is_culled_like_daskss_own_optimisation():
    """``dask.compute`` hands ``client.get`` an expression; for delayed objects rusk takes its
    graph without Dask's cull (``_graph_of``), and culls it itself to the same tasks."""
    captured = {}

    def scheduler(dsk, keys, **kwargs):
        captured["dsk"], captured["keys"] = dsk, keys
        return [None] * len(keys)

    shared = dask.delayed(inc)(1)
    unused = dask.delayed(inc)(shared)  # noqa: F841: in the graph's layers, not needed
    wanted = dask.delayed(operator.add)(shared, dask.delayed(inc)(2))
    dask.compute(wanted, scheduler=scheduler)
    expr, keys = captured["dsk"], captured["keys"]
    assert _dask._unoptimised_layers(expr) is not None
    fast, outputs, _, _ = _dask.to_tasks(expr, keys)
    slow, _, _, _ = _dask.to_tasks(dict(expr.__dask_graph__()), keys)
    assert sorted(t["key"] for t in fast) == sorted(t["key"] for t in slow)
    assert run_locally(fast, outputs) == [2 + 3]
    # With delayed fusion on, Dask's optimisation does more than cull: it runs.
    with dask.config.set({"optimization.fuse.delayed": True}):
        dask.compute(wanted, scheduler=scheduler)
        assert _dask._unoptimised_layers(captured["dsk"]) is None


def test_delayed_annotations_without_daskss_optimisation():
    captured = {}

    def scheduler(dsk, keys, **kwargs):
        captured["dsk"] = dsk
        return [None] * len(keys)

    with dask.annotate(priority=7, retries=2):
        a = dask.delayed(inc)(1)
    b = dask.delayed(inc)(a)
    dask.compute(b, scheduler=scheduler)
    _, annotations = _dask._graph_of(captured["dsk"])
    assert annotations == {"priority": {a.key: 7}, "retries": {a.key: 2}}
    tasks, _, names, _ = _dask.to_tasks(captured["dsk"], [b.key])
    fields = {names[t["key"]]: (t.get("priority"), t.get("retries")) for t in tasks}
    assert fields == {a.key: (7, 2), b.key: (None, None)}


def test_one_pass_pickling_and_its_fallbacks(monkeypatch):
    def local(x):  # pickled by value, in the prelude
        return x

    cyclic = [1]
    cyclic.append(cyclic)
    calls = [
        (local, (1,), {}, ()),
        (inc, (None,), {"k": "v"}, ((0, 0),)),
        (local, (math,), {}, ()),  # a module: only cloudpickle pickles it
        (local, (cyclic,), {}, ()),  # the one pass runs without a memo
        (pair, ([None, 2],), {"b": None}, ((0, 0, 0), (1, "b"))),
    ]
    no_prelude = lambda obj: None  # noqa: E731
    sep = lambda: _payload.os.urandom(16)  # noqa: E731  (as encode_calls makes it)
    assert _payload._dump_all(calls[2:3], no_prelude, sep()) is None  # then pickled one by one
    assert _payload._dump_all(calls[3:4], no_prelude, sep()) is None
    for each in ((), (1, 3)):
        out = decode(_payload.encode_calls(calls, normalized=True, each=each))
        assert [c[0].__name__ for c in out] == ["local", "inc", "local", "local", "pair"]
        assert out[0][0](5) == 5 and out[0][1:] == ((1,), {}, ())
        assert out[1][1:] == ((None,), {"k": "v"}, ((0, 0),))
        assert out[2][1] == (math,)
        assert out[3][1][0][1] is out[3][1][0]
        assert out[4][1:] == (([None, 2],), {"b": None}, ((0, 0, 0), (1, "b")))
    # Without a failing call, the pass is one dump: and a separator that the data happens to
    # contain is noticed (the calls are then pickled one by one).
    plain = [(inc, (i, b"s" * 16), {}, ()) for i in range(5)]
    assert len(_payload._dump_all(plain, no_prelude, sep())) == 5
    monkeypatch.setattr(_payload.os, "urandom", lambda n: b"s" * n)
    assert _payload._dump_all(plain, no_prelude, sep()) is None
    out = decode(_payload.encode_calls(plain, normalized=True))
    assert [c[1] for c in out] == [(i, b"s" * 16) for i in range(5)]


def test_chunked_collections_carry_daskss_order_and_delayed_graphs_do_not():
    """Array tasks are sent with ``dask.order``'s ranks (the scheduler runs them in that order,
    as Dask does); a delayed graph keeps rusk's own post-order (no ``order`` field)."""
    da = pytest.importorskip("dask.array")
    from dask._task_spec import convert_legacy_graph
    from dask.order import order

    x = da.ones((40, 40), chunks=(10, 10))
    y = (x + x.T).sum(axis=0)
    tasks, _, names, _ = _dask.to_tasks(y, [y.__dask_keys__()])
    ranks = order(convert_legacy_graph(dict(y.__dask_graph__())))
    assert all("order" in t for t in tasks)
    by_key = {names[t["key"]]: t["order"] for t in tasks}
    # The same relative order as dask.order over the whole graph.
    assert sorted(by_key, key=by_key.get) == sorted(by_key, key=ranks.get)
    a = dask.delayed(operator.add)(1, 2)
    b = dask.delayed(operator.mul)(a, 3)
    tasks, _, _, _ = _dask.to_tasks(b, [b.key])
    assert not any("order" in t for t in tasks)
