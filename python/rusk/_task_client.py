"""Tasks that use the cluster: ``get_client``, ``worker_client``, ``secede``/``rejoin``, and
futures that travel inside pickled objects.

A worker starts its Python executors with ``RUSK_SCHEDULER_ADDRESS`` and ``RUSK_TASK_TOKEN``: the
*task credential*, derived from the cluster token, which opens client connections (submit,
gather) but cannot join the cluster as a worker or a nanny, and from which the cluster token
cannot be computed. ``get_client()`` in a task connects with it, once per executor process.

``secede()`` tells the executor's worker that the task no longer holds its thread slot while it
waits (for the tasks it submitted, say): the worker starts another executor for the slot, and
the tasks queued behind this one move there. ``rejoin()`` takes the slot back (the end of a
``worker_client()`` block does it, as in Dask): the worker and the scheduler count the task
again, and the executor that took its place retires once idle. Waiting on futures in a task
secedes by itself and does not rejoin (each rejoin may retire an executor process, and the
next wait would start one again).
"""

import contextlib
import os
import sys
import threading

_lock = threading.Lock()
_task_client = None

#: The executor script registers itself under this name (it never imports rusk).
_EXECUTOR_MODULE = "__rusk_executor__"


def _in_task():
    return bool(os.environ.get("RUSK_TASK_TOKEN")) and _EXECUTOR_MODULE in sys.modules


def get_client(timeout=None):
    """The client to submit tasks with: in a task, a client of the task's cluster (one per
    executor process, kept for the next tasks, and Dask's default scheduler there from then on,
    as on a Dask worker); elsewhere, the current default client (the last
    one created). Raises ``ValueError`` when there is none."""
    global _task_client
    if _in_task():
        with _lock:
            c = _task_client
            if c is None or c._closed or c._lost is not None:
                from ._client import Client

                c = Client(
                    os.environ["RUSK_SCHEDULER_ADDRESS"],
                    token=os.environ["RUSK_TASK_TOKEN"],
                    # As a Dask worker's client: `x.compute()` in this process's tasks then
                    # runs on the cluster too.
                    set_as_default=True,
                    timeout=timeout,
                )
                _task_client = c
            return c
    from ._client import _live_clients

    live = [c for c in list(_live_clients) if not c._closed]
    if not live:
        raise ValueError("no rusk client: create a rusk.Client first")
    return max(live, key=lambda c: c._created)


def secede():
    """In a task: stop holding the worker's thread slot (see the module docs). A no-op outside
    a task."""
    ex = sys.modules.get(_EXECUTOR_MODULE)
    if ex is not None and hasattr(ex, "secede"):
        ex.secede()


def rejoin():
    """In a task that seceded: hold the worker's thread slot again, and count against the
    worker's capacity again (the executor started for the slot meanwhile retires once idle).
    Unlike Dask, it does not wait for a slot to free: for a moment the worker may run one task
    more than it has threads. A no-op outside a task or when not seceded."""
    ex = sys.modules.get(_EXECUTOR_MODULE)
    if ex is not None and hasattr(ex, "rejoin"):
        ex.rejoin()


@contextlib.contextmanager
def worker_client(timeout=None, separate_thread=True):
    """``with worker_client() as c:`` in a task: :func:`get_client`, and the task stops holding
    its thread slot (:func:`secede`), so that waiting for the tasks it submits cannot starve
    the cluster of slots."""
    del separate_thread
    client = get_client(timeout=timeout)
    secede()
    try:
        yield client
    finally:
        rejoin()


def _client_for(address, graph):
    """The client a future unpickled here belongs to: the task's client in a task; else a
    live client of this process whose session is ``graph``, else one connected to ``address``."""
    if _in_task():
        return get_client()
    from ._client import _live_clients

    live = [c for c in list(_live_clients) if not c._closed]
    for c in live:
        if c._graph == graph:
            return c
    for c in live:
        if c.address == address:
            return c
    if live:
        return max(live, key=lambda c: c._created)
    raise ValueError(
        "a rusk future of the cluster at %s was unpickled where no client of it exists" % address
    )


# Set while a client unpickles something (`get_dataset`): futures in it become its own.
_unpickling = threading.local()


def _rebuild_future(address, graph, key, dask_key):
    client = getattr(_unpickling, "client", None) or _client_for(address, graph)
    return client._foreign_future(graph, key, dask_key)
