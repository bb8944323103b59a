"""Data a client puts on the cluster itself: ``scatter``.

A scattered value goes from the client straight to a worker's data server (never through the
scheduler): it is pickled as an executor pickles a result (protocol 5, buffers out of band),
written into a memfd and ``sendfile``'d to the worker, which receives it into shared memory.
Then a ``put`` task, restricted to that worker, adopts it as its result: from there on it is a
result like any other, fetched by dependents and by ``gather``, released when its futures are
dropped. It has no lineage: if its worker dies, the value is lost, and futures that need it fail
with an error saying so (as in Dask without ``broadcast``).
"""

import os
import uuid

from . import _executor
from ._futures import _awaitable

#: How long one put may take before the client gives up on it.
SCATTER_TIMEOUT = 300.0


def _dump(value):
    """The stored bytes of ``value``: ``bytes``, or ``(fd, size)`` of a memfd holding them (the
    caller closes it)."""
    import cloudpickle

    size, data = _executor.dump_value(value, cloudpickle.dumps)
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
        refused: rusk holds one copy of each value and dependents fetch it where it is.
        A value that cannot be pickled raises before anything is sent."""
        return _scatter(self, data, workers, broadcast, direct, hash, timeout)


def _scatter(client, data, workers, broadcast, direct, hash, timeout):
    del direct
    if broadcast:
        raise NotImplementedError(
            "scatter(broadcast=True): rusk keeps one copy of each value (dependents on other "
            "workers fetch it worker to worker); scatter without broadcast"
        )
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
            known = key in client._keys or key in client._known
        if known:
            futures.append(client._extend([None], [key])[0])
            continue
        body, fd = _dump(value)
        name, address = targets[i % len(targets)]
        token = uuid.uuid4().hex
        try:
            client._conn.put(address, token, body, timeout)
        finally:
            if fd is not None:
                os.close(fd)
        task = {"key": key, "put": token, "deps": [], "workers": [name]}
        futures.append(client._extend([task], [key])[0])
    if isinstance(data, dict):
        return dict(zip(data, futures))
    if type(data) in (list, tuple, set, frozenset):
        return type(data)(futures)
    return futures[0]
