"""Data a client puts on the cluster itself: ``scatter``.

A scattered value goes from the client straight to a worker's data server (never through the
scheduler): it is pickled as an executor pickles a result (protocol 5, buffers out of band),
written into a memfd and ``sendfile``'d to the worker, which receives it into shared memory.
Then a ``put`` task, restricted to that worker, adopts it as its result: from there on it is a
result like any other, fetched by dependents and by ``gather``, released when its futures are
dropped. It has no lineage: if its worker dies, the value is lost, and futures that need it fail
with an error saying so (as in Dask without ``broadcast``).

``replicate`` (and ``scatter(broadcast=True)``, which is a scatter then a replicate) asks the
scheduler for more copies of finished results: each chosen worker fetches the value from the
primary holder, worker to worker, and the scheduler counts the copy once the worker reports it
stored. Dependents placed on a worker with a copy read it there; when the primary's worker dies,
a copy takes over and nothing is recomputed (a scattered value survives its first worker).
``replicate`` waits, polling ``who_has``, until the copies are there, asking again every
``REPLICATE_RESEND`` in case a worker died or a fetch failed on the way.
"""

import os
import time
import uuid

from . import _executor
from ._futures import _awaitable

#: How long one put may take before the client gives up on it.
SCATTER_TIMEOUT = 300.0

#: How long ``replicate`` waits for the copies it asked for.
REPLICATE_TIMEOUT = 300.0

#: ``replicate`` asks again this often while copies are missing (a worker died, a fetch failed).
REPLICATE_RESEND = 1.0

#: Keys per ``Replicate`` / ``WhoHas`` message (the scheduler's bound is 100,000).
KEYS_PER_REQUEST = 10_000


def _dump(value):
    """The stored bytes of ``value``: ``bytes``, or ``(fd, size)`` of a memfd holding them (the
    caller closes it)."""
    import cloudpickle

    size, data = _executor.dump_value(value, _executor.value_dumps(cloudpickle))
    if size is None:
        return bytes(data), None
    if size < _executor.INLINE_VALUE_MAX:
        return bytes(_executor.lay_out(size, data)), None
    fd = os.memfd_create("rusk-scatter", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        for off, piece in data:
            view = memoryview(piece).cast("B")
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], off + done)
    except BaseException:
        os.close(fd)
        raise
    return (fd, size), fd


def _put(client, value, address, timeout):
    """Send ``value`` to the worker at ``address`` to keep for a put task; its token."""
    body, fd = _dump(value)
    token = uuid.uuid4().hex
    try:
        client._conn.put(address, token, body, timeout)
    finally:
        if fd is not None:
            os.close(fd)
    return token


def _targets(client, workers):
    """``[(name, data address)]`` of the live workers to scatter to, least loaded first."""
    live = [w for w in client.status.__wrapped__(client)["workers"] if w["state"] not in ("lost",)]
    if workers is not None:
        from ._placement import _worker_names

        wanted = set(_worker_names(workers))
        live = [w for w in live if w["id"] in wanted or w["address"] in wanted or w["host"] in wanted]
        if not live:
            raise ValueError("scatter: no live worker matches workers=%r" % (workers,))
    if not live:
        raise RuntimeError("scatter: the cluster has no live worker")
    live.sort(key=lambda w: (w.get("stored_bytes", 0), w["id"]))
    return [(w["id"], w["address"]) for w in live]


class _DataOps:
    @_awaitable
    def scatter(self, data, workers=None, broadcast=False, direct=None, hash=True, timeout=SCATTER_TIMEOUT):
        """Put local data on the workers, without going through the scheduler; return futures
        (a future for one value, a list/tuple/set of them for one, a dict for a dict, whose keys
        become the futures' keys). Values are dealt out over the live workers (or ``workers``),
        least loaded first. With ``hash=True`` (the default) a value's key is a token of its
        content, so scattering equal data twice gives the same future. ``broadcast=True`` is
        a scatter followed by ``replicate``: every live worker (or each of ``workers``) gets a
        copy before this returns. A value that cannot be pickled raises before anything is
        sent."""
        return _scatter(self, data, workers, broadcast, direct, hash, timeout)

    @_awaitable
    def replicate(self, futures, n=None, workers=None, branching_factor=2, timeout=REPLICATE_TIMEOUT):
        """Copy the futures' results to more workers: ``n`` copies of each in all (default: one
        on every live worker, or on each of ``workers``). Waits for the futures, then until the
        copies are stored. Copies are fetched worker to worker from the primary holder
        (``branching_factor`` is accepted for Dask compatibility and not used). Futures that
        failed are skipped. Raises ``TimeoutError`` after ``timeout`` seconds."""
        del branching_factor
        return _replicate(self, futures, n, workers, timeout)


def _scatter(client, data, workers, broadcast, direct, hash, timeout):
    del direct
    client._check_open()
    if isinstance(data, dict):
        keys = [str(k) for k in data]
        values = list(data.values())
    elif type(data) in (list, tuple, set, frozenset):
        keys = None
        values = list(data)
    else:
        keys = None
        values = [data]
    if keys is None:
        if hash:
            from ._client import _tokens

            tokens = [_tokens(type(v), [(v,)], {})[0] for v in values]
        else:
            tokens = [uuid.uuid4().hex for _ in values]
        keys = ["%s-%s" % (type(v).__name__, t) for v, t in zip(values, tokens)]
    targets = _targets(client, workers)
    futures = []
    for i, (key, value) in enumerate(zip(keys, values)):
        with client._lock:
            live = key in client._keys
            released = not live and key in client._known
        if live:
            futures.append(client._extend([None], [key])[0])
            continue
        if released:
            # The session put this key before and let it go: its put task cannot run again
            # (scattered data has no lineage), so this value goes under a key of its own.
            key = "%s-%s" % (key, uuid.uuid4().hex[:12])
        name, address = targets[i % len(targets)]
        token = _put(client, value, address, timeout)
        task = {"key": key, "put": token, "deps": [], "workers": [name]}
        futures.append(client._extend([task], [key])[0])
    if broadcast:
        _replicate(client, futures, None, workers, timeout)
    if isinstance(data, dict):
        return dict(zip(data, futures))
    if type(data) in (list, tuple, set, frozenset):
        return type(data)(futures)
    return futures[0]


def put_literals(client, per_call):
    """Put the big literals ``_payload.encode_calls`` took out of a submission's payloads on
    live workers (least loaded first, in turn), each distinct object once, as ``scatter``
    does. Returns the put tasks (to send before the calls' tasks) and, per call, the keys its
    task must list first among its dependencies. Like scattered data, a put literal has no
    lineage: a worker lost with it fails the tasks that still need it, with an error naming
    it."""
    keys = {}
    tasks = []
    targets = None
    for objs in per_call:
        for obj in objs:
            if id(obj) in keys:
                continue
            if targets is None:
                targets = _targets(client, None)
            name, address = targets[len(tasks) % len(targets)]
            token = _put(client, obj, address, SCATTER_TIMEOUT)
            key = "literal-%s" % token
            keys[id(obj)] = key
            tasks.append({"key": key, "put": token, "deps": [], "workers": [name]})
    return tasks, [[keys[id(o)] for o in objs] for objs in per_call]


def _chunks(items, size=KEYS_PER_REQUEST):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _by_graph(client, states):
    """``{graph: [state, ...]}``: the session graph each state's key lives in."""
    out = {}
    for st in states:
        out.setdefault(client._graph if st.graph is None else st.graph, []).append(st)
    return out


def _holders(client, states):
    """``{id(state): [data address, ...]}`` (primary first) of finished states, asked of the
    scheduler."""
    from ._futures import _FINISHED

    out = {}
    for graph, sts in _by_graph(client, [st for st in states if st.status == _FINISHED]).items():
        for chunk in _chunks(sts):
            where = dict(client._conn.who_has(graph, [st.key for st in chunk]))
            for st in chunk:
                out[id(st)] = where.get(st.key, [])
    return out


def _replicate(client, futures, n, workers, timeout):
    from ._futures import _FINISHED, _flat_futures, wait

    client._check_open()
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError("replicate: n must be a positive integer, not %r" % (n,))
    fs = _flat_futures(futures)
    if not fs:
        return
    names = None
    if workers is not None:
        from ._placement import _worker_names

        names = list(_worker_names(workers))
    deadline = time.monotonic() + timeout
    wait(fs, timeout=timeout)
    states = list({id(f._state): f._state for f in fs}.values())
    pause, asked_at = 0.005, None
    while True:
        states = [st for st in states if st.status == _FINISHED]
        if not states:
            return
        targets = {address for _, address in _targets(client, workers)}
        now = time.monotonic()
        if asked_at is None or now - asked_at >= REPLICATE_RESEND:
            for graph, sts in _by_graph(client, states).items():
                for chunk in _chunks(sts):
                    client._conn.replicate(graph, [st.key for st in chunk], n, names)
            asked_at = now
        held = _holders(client, states)

        def enough(st):
            at = held.get(id(st), [])
            if n is not None and len(at) >= n:
                return True
            return targets <= set(at)

        missing = [st for st in states if not enough(st)]
        if not missing:
            return
        if now > deadline:
            raise TimeoutError(
                "replicate: %d of %d keys still lack copies after %.0f s (for example %r on %s)"
                % (len(missing), len(states), timeout, missing[0].dask_key, held.get(id(missing[0]), []))
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
