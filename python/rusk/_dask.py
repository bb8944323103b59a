"""Running Dask graphs on rusk: ``client.get`` is a Dask scheduler function.

The graph is converted on the client to Dask's task-spec form (``convert_legacy_graph``: legacy
tuples become ``Task``/``Alias``/``DataNode`` objects; graphs already in that form pass through),
culled to what ``keys`` need, and each node becomes one rusk Python task: a ``Task`` whose
arguments are values, references and containers of these is called directly, each reference a
dependency placed at its path (as ``Client.submit`` places futures); a ``DataNode`` or an
``Alias`` returns its value; any other node (one that nests tasks) is pickled as it is and run
by :func:`_run_node` with its dependencies' values. The tasks' calls are pickled together
(``_payload.encode_calls``). The whole graph is one rusk submission; its outputs are fetched
from the workers when it finishes."""

import collections
import collections.abc
import logging
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


def _graph_of(dsk):
    """``(graph, annotations)``: the graph of ``dsk`` (a mapping, or an expression as
    ``dask.compute`` gives it) as a dict, and its placement annotations.

    Delayed objects' graphs are taken as they are: Dask's optimisation of them
    (``dask.delayed.optimize``) is a cull (a ``HighLevelGraph.cull`` through one layer per
    delayed call, most of the client's time for a graph of many small tasks), and
    :func:`to_tasks` culls anyway. Any other optimiser (array fusion, the config's
    ``optimization.fuse.delayed``) runs as Dask runs it."""
    if isinstance(dsk, collections.abc.Mapping):
        return dict(dsk), _placement.annotated(dsk)
    layers = _unoptimised_layers(dsk)
    if layers is None:
        return dict(dsk.__dask_graph__()), _placement.annotated(dsk)
    graph = {}
    annotations = {}
    for layer in layers:
        mapping = getattr(layer, "mapping", None)  # a MaterializedLayer's dict
        graph.update(mapping if type(mapping) is dict else layer)
        if layer.annotations:
            _add_layer_annotations(annotations, layer)
    return graph, {k: v for k, v in annotations.items() if v}


def _add_layer_annotations(annotations, layer):
    # As Dask's `__dask_annotations__` of an expression collects them, placement ones only.
    for name, value in layer.annotations.items():
        if name not in _placement.PLACEMENT_KEYWORDS:
            continue
        per_key = annotations.setdefault(name, {})
        for k in layer:
            v = value(k) if callable(value) else value
            if type(v).__name__ != "_AnnotationsTombstone":
                per_key[k] = v


def _unoptimised_layers(expr):
    """The layers of the HighLevelGraphs of ``expr`` when its only optimisation would be
    Dask's cull of delayed graphs (see :func:`_graph_of`), else None."""
    try:
        from dask import config
        from dask._expr import HLGExpr, _HLGExprGroup, _HLGExprSequence
        from dask.delayed import optimize as delayed_optimize
        from dask.highlevelgraph import HighLevelGraph
    except ImportError:  # another Dask version: take the general path
        return None
    if type(expr) is _HLGExprSequence:
        ops = expr.operands
    elif type(expr) in (HLGExpr, _HLGExprGroup):
        ops = [expr]
    else:
        return None
    fuses = config.get("optimization.fuse.delayed", False)
    layers = []
    for op in ops:
        if type(op) not in (HLGExpr, _HLGExprGroup):
            return None
        optimizer = op.low_level_optimizer
        if optimizer is not None and (optimizer is not delayed_optimize or fuses):
            return None
        hlg = op.hlg
        if not isinstance(hlg, HighLevelGraph):
            return None
        layers.extend(hlg.layers.values())
    return layers


def to_tasks(dsk, keys, external=None, placement=None, client=None):
    """``(tasks, outputs, decode, used)``: rusk task dicts for the part of ``dsk`` that ``keys``
    need (dependencies first), the encoded output keys, a map from encoded key back to the Dask
    key, and whether the graph refers to results already held on the cluster.

    ``external(dask_key)`` gives the rusk key of a result the client's session already has (a
    future, a persisted chunk), or ``None``. A key the graph refers to but does not define, or a
    wanted key it does not define, must be one of those.

    ``placement``: task fields (``_placement.fields``) for every task, overridden per key by
    the graph's ``dask.annotate`` annotations.

    ``client``: when the graph's big literals (numpy arrays and pandas frames of
    ``da.from_array``, ``dd.from_pandas``, ...) pass ``_payload.BIG_LITERALS_PUT_MIN_TOTAL``
    in all, they are put on workers through the client's data connections, as ``scatter``
    does, and the tasks name them (``_data.put_literals``, first in ``tasks``): they do not
    travel through the scheduler (nor its journal), and the graph is not bounded by
    ``MAX_FRAME_BYTES`` for them."""
    import gc

    collecting = gc.isenabled()
    gc.disable()  # full collections would walk the whole Dask graph, repeatedly
    try:
        return _to_tasks(dsk, keys, external, placement, client)
    finally:
        if collecting:
            gc.enable()


def _to_tasks(dsk, keys, external, placement, client):
    from dask._task_spec import convert_legacy_graph

    dsk, annotations = _graph_of(dsk)
    graph = convert_legacy_graph(dsk)
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
    # Cull: only what the outputs need, dependencies before dependents (a depth-first
    # post-order: a key is placed once all its dependencies are).
    order = []
    placed = set()
    entered = set()  # expanded: its dependencies are (being) placed
    for root in wanted:
        if root in placed or root in outside:
            continue
        stack = [(root, False)]
        while stack:
            k, expanded = stack.pop()
            if expanded:
                placed.add(k)
                order.append(k)
                continue
            if k in entered:  # placed meanwhile (or a cycle, which the scheduler refuses)
                continue
            entered.add(k)
            stack.append((k, True))
            for d in graph[k].dependencies:
                if d in placed or d in entered:
                    continue
                if d not in graph:
                    resolve(d, "task %r depends on %r, which is not in the graph" % (k, d))
                    continue
                stack.append((d, False))

    def enc(k):
        rk = outside.get(k)
        return encode_key(k) if rk is None else rk

    decode = {rk: k for k, rk in outside.items()}
    tasks = []
    _encoding.graph = True
    try:
        puts = _encode_nodes(graph, order, decode, enc, tasks, client)
    finally:
        _encoding.graph = False
    ranks = _dask_order(graph, order)
    if ranks is not None:
        for k, task in zip(order, tasks):
            task["order"] = ranks[k]
    if placement or annotations:
        base = placement or {}
        for k, task in zip(order, tasks):
            task.update(_placement.per_key(base, annotations, k))
    return puts + tasks, [enc(k) for k in wanted], decode, bool(outside)


def _dask_order(graph, keys):
    """``{key: rank}``: Dask's own graph order (``dask.order``) of the tasks of a chunked
    collection (arrays, dataframes: tuple keys), sent as each task's ``order`` so that the
    scheduler runs them as Dask would and big graphs stay within memory as on Dask. ``None``
    for graphs of delayed calls (string keys), where the client's depth-first post-order
    (dependencies first, sub-trees finished before new ones start) serves as well and
    ``dask.order`` would cost more than the rest of the conversion."""
    if len(keys) < 2 or not any(type(k) is tuple for k in keys):
        return None
    from dask.order import order

    sub = {k: graph[k] for k in keys}
    deps = {k: {d for d in sub[k].dependencies if d in sub} for k in keys}
    try:
        return order(sub, dependencies=deps)
    except Exception:  # a graph dask.order cannot take: the post-order stands
        logging.getLogger("rusk").debug("dask.order failed; using rusk's order", exc_info=True)
        return None


def _encode_nodes(graph, order, decode, enc, tasks, client=None):
    """Fill ``tasks`` for the nodes of ``order``; returns the put tasks of the graph's big
    literals (``_data.put_literals``), which go first, when ``client`` is given."""
    spec = _spec()
    Task, DataNode, Alias = spec.Task, spec.DataNode, spec.Alias
    encoded = {}
    calls = []
    called = []  # the tasks of `calls`, in order (put values have no call)
    by_node = []  # indexes of the calls that carry a Dask node
    for k in order:
        node = graph[k]
        ek = encode_key(k)
        if ek in decode and decode[ek] != k:
            raise ValueError("keys %r and %r encode alike" % (decode[ek], k))
        decode[ek] = k
        encoded[k] = ek
        t = type(node)
        call = None
        if t is Task:
            call, deps = _task_call(node, spec)
        elif t is DataNode:
            call, deps = (_identity, (node.value,), _NO_KWARGS, ()), ()
        elif t is Alias:
            call, deps = (_identity, (None,), _NO_KWARGS, _ARG_PATHS[:1]), (node.target,)
        if call is None:  # anything else: the node itself, run by `_run_node`
            deps = sorted(node.dependencies, key=lambda d: encoded[d] if d in encoded else enc(d))
            n = len(deps)
            call = (_run_node, (node, deps) + (None,) * n, _NO_KWARGS, _arg_paths(2, n))
            by_node.append(len(calls))
        calls.append(call)
        task = {"key": ek, "deps": [encoded[d] if d in encoded else enc(d) for d in deps]}
        tasks.append(task)
        called.append(task)
    # The graph's functions and classes pickled once, for all its tasks.
    big = [] if client is not None else None
    payloads = _payload.encode_calls(calls, normalized=True, each=by_node, big=big) if calls else []
    for task, payload in zip(called, payloads):
        task["python"] = payload
    if not big or not any(big):
        return []
    from . import _data

    puts, keys = _data.put_literals(client, big)
    for task, ks in zip(called, keys):
        if ks:
            task["deps"] = ks + task["deps"]
    return puts


_NO_KWARGS = {}
# (0, i): the path of args[i] (shared tuples: fewer objects to make and to pickle).
_ARG_PATHS = tuple((0, i) for i in range(64))


def _arg_paths(first, n):
    if first + n <= len(_ARG_PATHS):
        return _ARG_PATHS[first : first + n]
    return tuple((0, i) for i in range(first, first + n))


class _Spec:
    """Dask's task-spec classes (imported once Dask is needed)."""

    def __init__(self):
        from dask._task_spec import Alias, DataNode, Dict, GraphNode, List, Task, TaskRef, Tuple

        self.Task, self.DataNode, self.Alias, self.TaskRef = Task, DataNode, Alias, TaskRef
        self.List, self.Tuple, self.Dict = List, Tuple, Dict
        self.ref_or_node = (TaskRef, GraphNode)


_spec_cache = []


def _spec():
    if not _spec_cache:
        _spec_cache.append(_Spec())
    return _spec_cache[0]


class _Nested(Exception):
    """A node that only `_run_node` can run (it nests tasks)."""


def _task_call(node, spec):
    """``(call, dependency keys)`` of a Dask ``Task`` called directly: its arguments are values,
    references to other keys (``TaskRef``, futures) and containers of these (``List``,
    ``Tuple``, ``Dict``); each reference is a dependency placed at its path. ``(None, None)``
    for one that nests other tasks (`_run_node` runs those)."""
    args = node.args
    kwargs = node.kwargs
    paths = []
    deps = []
    ref_or_node = spec.ref_or_node
    TaskRef = spec.TaskRef
    try:
        for i, a in enumerate(args):
            if isinstance(a, ref_or_node):
                if args is node.args:
                    args = list(args)
                if isinstance(a, TaskRef):
                    args[i] = None
                    paths.append(_ARG_PATHS[i] if i < len(_ARG_PATHS) else (0, i))
                    deps.append(a.key)
                else:
                    args[i] = _plain(a, (0, i), paths, deps, spec)
        for name, a in kwargs.items():
            if isinstance(a, ref_or_node):
                if kwargs is node.kwargs:
                    kwargs = dict(kwargs)
                kwargs[name] = _plain(a, (1, name), paths, deps, spec)
    except _Nested:
        return None, None
    if not deps:
        return (node.func, tuple(args), kwargs, ()), ()
    return (node.func, tuple(args), kwargs, tuple(paths)), deps


def _plain(a, path, paths, deps, spec):
    """``a`` (a reference or a container of references and values) as a plain value whose
    references are ``None`` placeholders, their paths and keys added to ``paths`` and ``deps``;
    raises `_Nested` for anything else."""
    if isinstance(a, spec.TaskRef):
        paths.append(path)
        deps.append(a.key)
        return None
    t = type(a)
    ref_or_node = spec.ref_or_node
    if t is spec.List or t is spec.Tuple:
        items = [
            _plain(x, path + (j,), paths, deps, spec) if isinstance(x, ref_or_node) else x
            for j, x in enumerate(a.args)
        ]
        return items if t is spec.List else tuple(items)
    if t is spec.Dict:
        out = {}
        flat = a.args
        for j in range(0, len(flat), 2):
            k, v = flat[j], flat[j + 1]
            if isinstance(k, ref_or_node) or k in out:
                raise _Nested
            out[k] = _plain(v, path + (k,), paths, deps, spec) if isinstance(v, ref_or_node) else v
        return out
    raise _Nested


def get(client, dsk, keys, **kwargs):
    """Compute ``keys`` of the Dask graph ``dsk`` on ``client``'s cluster (nested lists of keys
    give nested lists of results, as with Dask's own schedulers). A graph that uses results held
    on the cluster (futures, persisted collections) runs in the client's session, where they
    are; others run as a graph of their own. Placement keywords (``priority=``,
    ``resources=``, ``workers=``, ...) apply to every task."""
    placement, _rest = _placement.split_keywords(dict(kwargs))
    tasks, outputs, decode, uses_session = to_tasks(
        dsk, keys, client._session_key, _placement.fields(**placement), client
    )
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
    tasks, outputs, _decode, _uses = to_tasks(dsk, keys, client._session_key, placement, client)
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
