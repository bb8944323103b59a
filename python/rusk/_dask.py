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

from . import _payload, _placement
from ._client import ConnectionLostError
from ._futures import _encoding


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


def to_tasks(dsk, keys, external=None, placement=None):
    """``(tasks, outputs, decode, used)``: rusk task dicts for the part of ``dsk`` that ``keys``
    need (dependencies first), the encoded output keys, a map from encoded key back to the Dask
    key, and whether the graph refers to results already held on the cluster.

    ``external(dask_key)`` gives the rusk key of a result the client's session already has (a
    future, a persisted chunk), or ``None``. A key the graph refers to but does not define, or a
    wanted key it does not define, must be one of those.

    ``placement``: task fields (``_placement.fields``) for every task, overridden per key by
    the graph's ``dask.annotate`` annotations."""
    from dask._task_spec import convert_legacy_graph

    annotations = _placement.annotated(dsk)
    if not isinstance(dsk, collections.abc.Mapping):
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dict(dsk))
    wanted = list(dict.fromkeys(_flatten(keys)))
    outside = {}  # Dask key -> rusk key of a result held outside this graph

    def resolve(k, user):
        if k in outside:
            return True
        rk = external(k) if external is not None else None
        if rk is None:
            raise KeyError(user)
        outside[k] = rk
        return True

    for k in wanted:
        if k not in graph:
            resolve(k, "key %r is not in the graph" % (k,))
    # Cull: only what the outputs need, dependencies before dependents.
    order = []
    seen = set()
    for root in wanted:
        if root in seen or root in outside:
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
                    resolve(d, "task %r depends on %r, which is not in the graph" % (k, d))
                    continue
                if d not in seen:
                    seen.add(d)
                    stack.append((d, False))

    def enc(k):
        rk = outside.get(k)
        return encode_key(k) if rk is None else rk

    decode = {rk: k for k, rk in outside.items()}
    tasks = []
    _encoding.graph = True
    try:
        _encode_nodes(graph, order, decode, enc, tasks)
    finally:
        _encoding.graph = False
    if placement or annotations:
        base = placement or {}
        for k, task in zip(order, tasks):
            task.update(_placement.per_key(base, annotations, k))
    return tasks, [enc(k) for k in wanted], decode, bool(outside)


def _encode_nodes(graph, order, decode, enc, tasks):
    encoded = {k: encode_key(k) for k in order}
    calls = []
    for k in order:
        node = graph[k]
        ek = encoded[k]
        if ek in decode and decode[ek] != k:
            raise ValueError("keys %r and %r encode alike" % (decode[ek], k))
        decode[ek] = k
        deps = sorted((encoded[d] if d in encoded else enc(d), d) for d in node.dependencies)
        dep_keys = [d for _, d in deps]
        n = len(dep_keys)
        calls.append((_run_node, (node, dep_keys) + (None,) * n, {}, [(0, 2 + i) for i in range(n)]))
        tasks.append({"key": ek, "deps": [e for e, _ in deps]})
    # One pickling pass for the graph: each function and class is pickled once.
    for task, payload in zip(tasks, _payload.encode_calls(calls)):
        task["python"] = payload


def get(client, dsk, keys, **kwargs):
    """Compute ``keys`` of the Dask graph ``dsk`` on ``client``'s cluster (nested lists of keys
    give nested lists of results, as with Dask's own schedulers). A graph that uses results held
    on the cluster (futures, persisted collections) runs in the client's session, where they
    are; others run as a graph of their own. Placement keywords (``priority=``,
    ``resources=``, ``workers=``, ...) apply to every task."""
    placement, _rest = _placement.split_keywords(dict(kwargs))
    tasks, outputs, decode, uses_session = to_tasks(dsk, keys, client._session_key, _placement.fields(**placement))
    if not outputs:
        return _nested(keys, {})
    if uses_session:
        futures = client._extend([None] * len(outputs), outputs, needed=tasks)
        values = dict(zip(outputs, client._gather_states([f._state for f in futures])))
        del futures
    else:
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


def session_futures(client, dsk, keys, placement=None):
    """Futures of ``keys`` (a flat list of Dask keys) of the graph ``dsk``, whose tasks go into
    the client's session; each future's ``key`` is its Dask key."""
    tasks, outputs, _decode, _uses = to_tasks(dsk, keys, client._session_key, placement)
    wanted = list(dict.fromkeys(keys))
    futures = client._extend([None] * len(outputs), outputs, needed=tasks)
    by_key = {}
    for k, f in zip(wanted, futures):
        if f._state.key == encode_key(k):
            f._state.dask_key = k
        by_key[k] = f
    return [by_key[k] for k in keys]


def compute_future(client, coll, placement=None):
    """One Future for ``coll``: its optimised graph, finalised as ``dask.compute`` finalises it
    (``FinalizeCompute``), goes into the client's session; the Future is the final task's. A
    Future is returned as it is; other values are sent as they are."""
    import dask
    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr
    from dask.core import flatten

    from ._futures import Future

    if isinstance(coll, Future):
        return coll
    if not dask.is_dask_collection(coll):
        return client.submit(_identity, coll)
    expr = FinalizeCompute(collections_to_expr([coll], True)).optimize()
    keys = list(flatten(expr.__dask_keys__()))
    if len(keys) != 1:
        raise ValueError("a collection finalised to %d keys, not 1: %r" % (len(keys), keys[:5]))
    return session_futures(client, expr, keys, placement)[0]


def persist(client, collections, optimize_graph=True, placement=None):
    """``collections`` backed by futures: their chunks are computed into the client's session
    and stay on the workers while the returned collections (or their futures) live."""
    import functools

    import dask

    schedule = functools.partial(_persist_schedule, client, placement)
    return list(dask.persist(*collections, scheduler=schedule, optimize_graph=optimize_graph))


def _persist_schedule(client, placement, dsk, keys, **kwargs):
    # A Dask "scheduler" that returns futures instead of values: `dask.persist` then rebuilds
    # each collection on them (its graph maps each key to its future).
    del kwargs
    return session_futures(client, dsk, list(keys), placement)
