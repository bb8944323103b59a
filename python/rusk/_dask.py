"""Running Dask graphs on rusk: ``client.get`` is a Dask scheduler function.

The graph is converted on the client to Dask's task-spec form (``convert_legacy_graph``: legacy
tuples become ``Task``/``Alias``/``DataNode`` objects; graphs already in that form pass through),
culled to what ``keys`` need, and each node becomes one rusk Python task that calls
:func:`_run_node` with the node and its dependencies' values. The whole graph is one rusk
submission; its outputs are fetched from the workers when it finishes.
"""

import collections
import collections.abc
import numbers

from . import _payload
from ._client import ConnectionLostError


def _run_node(node, dep_keys, *dep_values):
    """Executed on a worker: run one Dask graph node with its dependencies' values."""
    return node(dict(zip(dep_keys, dep_values)))


def _normalize_key(k):
    if isinstance(k, tuple):
        return tuple(_normalize_key(i) for i in k)
    if isinstance(k, bool) or isinstance(k, (str, bytes, float)):
        return k
    if isinstance(k, numbers.Integral):
        return int(k)
    return k


def encode_key(k):
    """A Dask key (str, or a tuple of str and ints) as a rusk key: deterministic and distinct
    for distinct keys."""
    if isinstance(k, str):
        return k if not k.startswith(("(", "'", '"', "<")) else repr(k)
    if isinstance(k, tuple):
        return repr(_normalize_key(k))
    return "<%r>" % (_normalize_key(k),)


def _flatten(keys):
    if isinstance(keys, list):
        for k in keys:
            yield from _flatten(k)
    else:
        yield keys


def _nested(keys, values):
    if isinstance(keys, list):
        return [_nested(k, values) for k in keys]
    return values[keys]


def to_tasks(dsk, keys):
    """``(tasks, outputs, decode)``: rusk task dicts for the part of ``dsk`` that ``keys``
    need, the encoded output keys, and a map from encoded key back to the Dask key."""
    from dask._task_spec import convert_legacy_graph

    if not isinstance(dsk, collections.abc.Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))
    wanted = list(dict.fromkeys(_flatten(keys)))
    for k in wanted:
        if k not in graph:
            raise KeyError("key %r is not in the graph" % (k,))
    # Cull: only what the outputs need, dependencies before dependents.
    order = []
    seen = set()
    for root in wanted:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, False)]
        while stack:
            k, expanded = stack.pop()
            if expanded:
                order.append(k)
                continue
            stack.append((k, True))
            for d in graph[k].dependencies:
                if d not in graph:
                    raise KeyError("task %r depends on %r, which is not in the graph" % (k, d))
                if d not in seen:
                    seen.add(d)
                    stack.append((d, False))
    decode = {}
    tasks = []
    for k in order:
        node = graph[k]
        ek = encode_key(k)
        if ek in decode and decode[ek] != k:
            raise ValueError("keys %r and %r encode alike" % (decode[ek], k))
        decode[ek] = k
        dep_keys = sorted(node.dependencies, key=encode_key)
        n = len(dep_keys)
        payload = _payload.encode_call(
            _run_node,
            (node, dep_keys) + (None,) * n,
            {},
            [(0, 2 + i) for i in range(n)],
        )
        tasks.append({"key": ek, "python": payload, "deps": [encode_key(d) for d in dep_keys]})
    return tasks, [encode_key(k) for k in wanted], decode


def get(client, dsk, keys, **kwargs):
    """Compute ``keys`` of the Dask graph ``dsk`` on ``client``'s cluster (nested lists of keys
    give nested lists of results, as with Dask's own schedulers)."""
    tasks, outputs, decode = to_tasks(dsk, keys)
    if not outputs:
        return _nested(keys, {})
    graph = client._submit_graph(tasks, outputs)
    try:
        values = _collect(client, graph, outputs)
    finally:
        client._release_graph(graph)
    return _nested(keys, {decode[k]: v for k, v in values.items()})


def _collect(client, graph, outputs):
    conn = client._conn
    locator = conn.locator(graph)
    while True:
        done = {o["key"]: o for o in client._wait_graph(graph)}
        for k in outputs:  # the first failure, in the order asked for
            o = done.get(k)
            if o is None:
                raise RuntimeError("the scheduler did not report output %r" % k)
            if not o["ok"]:
                raise _payload.decode_failure(k, o["error"], o.get("detail"))
        by_holder = collections.defaultdict(list)
        for k in outputs:
            by_holder[done[k]["holder"]].append(k)
        values = {}
        missing = False
        for holder, ks in by_holder.items():
            try:
                blobs = conn.fetch(holder, [tuple(done[k]["task"]) for k in ks])
            except ConnectionError:
                missing = True
                continue
            for k, blob in zip(ks, blobs):
                if blob is None:
                    missing = True
                else:
                    values[k] = _payload.loads(blob)
        if not missing:
            return values
        locator.failed("outputs")  # raises ConnectionError once the attempts are used up
        if client._lost is not None:
            raise ConnectionLostError(client._lost)
        locator.relocate()  # after the back-off


def _identity(x):
    return x


def compute_future(client, coll):
    """One Future for ``coll``: its optimised graph, finalised as ``dask.compute`` finalises it
    (``FinalizeCompute``), goes into the client's session; the Future is the final task's. A
    Future is returned as it is; other values are sent as they are."""
    import dask
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr
    from dask.core import flatten

    if hasattr(coll, "_state") and hasattr(coll, "result"):
        return coll
    if not dask.is_dask_collection(coll):
        return client.submit(_identity, coll)
    expr = FinalizeCompute(collections_to_expr([coll], True)).optimize()
    keys = list(flatten(expr.__dask_keys__()))
    if len(keys) != 1:
        raise ValueError("a collection finalised to %d keys, not 1: %r" % (len(keys), keys[:5]))
    tasks, outputs, _decode = to_tasks(expr, keys)
    # Dependencies come first, the final task (the one output) last.
    if tasks[-1]["key"] != outputs[0]:
        raise RuntimeError("the final task of %r is not last in its graph" % (keys[0],))
    return client._extend([tasks[-1]], outputs, needed=tasks[:-1])[0]
