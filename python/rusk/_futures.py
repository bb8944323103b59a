"""Futures: what the client knows of each output key, and waiting on several of them.

A :class:`Future` is a handle on a ``_KeyState``, shared by every future of the same key; the
client's dispatcher thread settles the states and runs the callbacks.
"""

import collections
import logging
import threading
import time
from concurrent.futures import CancelledError as _CancelledError

from ._payload import RemoteTraceback

logger = logging.getLogger("rusk")


def _in_loop():
    try:
        import asyncio

        asyncio.get_running_loop()
        return True
    except (ImportError, RuntimeError):
        return False


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _awaitable(method):
    """A blocking method of the client that, on an ``asynchronous=True`` client called from a
    running event loop, returns a coroutine (run in a thread) instead, as Dask's do."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.asynchronous and _in_loop():
            return _in_thread(functools.partial(method, self, *args, **kwargs))
        return method(self, *args, **kwargs)

    return wrapper

_PENDING = "pending"
_FINISHED = "finished"
_ERROR = "error"
_CANCELLED = "cancelled"
_LOST = "lost"
_DONE = (_FINISHED, _ERROR, _CANCELLED, _LOST)


class CancelledError(_CancelledError):
    """The future was cancelled (``Future.cancel()``/``Client.cancel()``)."""


class ConnectionLostError(ConnectionError):
    """The connection to the scheduler is gone (or the client was closed) before the future
    finished."""


class _KeyState:
    """What the client knows of one output key; shared by every Future of that key."""

    __slots__ = (
        "key",
        "graph",
        "dask_key",
        "status",
        "task",
        "holder",
        "exception",
        "value",
        "has_value",
        "refs",
        "callbacks",
    )

    def __init__(self, key, dask_key=None):
        self.key = key  # the rusk key (a str)
        self.graph = None  # another client's session graph (a held key), or None: this client's
        self.dask_key = key if dask_key is None else dask_key  # what Dask graphs call it
        self.status = _PENDING
        self.task = None  # (graph, index) where it is stored
        self.holder = None  # data address of the worker holding it
        self.exception = None
        self.value = None
        self.has_value = False
        self.refs = 0
        self.callbacks = []


# Set while Dask graph nodes are pickled (one thread does it at a time per flag).
_encoding = threading.local()
_encoding.graph = False
# While a dataset is pickled: the `(graph, key)` of every future pickled (`refs`, a list).
_pickled_refs = threading.local()


try:  # Dask recognises its schedulers' futures as references to keys held on the cluster.
    from dask._task_spec import TaskRef as _FutureBase
except ImportError:  # Dask is optional
    _FutureBase = object


class Future(_FutureBase):
    """A task's eventual result. Futures passed to ``submit``/``map`` (also inside lists,
    tuples and dicts) become dependencies: their values are fetched worker to worker.

    As ``distributed.Future`` does, a future is a Dask task reference (``dask._task_spec.TaskRef``):
    it can be an argument of ``dask.delayed`` calls, the source of ``da.from_delayed`` or
    ``dd.from_delayed``, and a persisted collection's chunks are futures. Graphs built on them
    use the result where it is held, without computing it again."""

    __slots__ = ("_client", "_state", "__weakref__")
    __dask_future__ = True

    def __init__(self, client, state):
        # Called with the client's lock held.
        self._client = client
        self._state = state
        state.refs += 1

    @property
    def key(self):
        """The task's key: a string, or the Dask key (a tuple) of a persisted chunk."""
        return self._state.dask_key

    def __dask_tokenize__(self):
        return ("rusk.Future", self._ref())

    def _ref(self):
        """``(session graph, key)``: what names this future's key on the cluster."""
        st = self._state
        return (st.graph if st.graph is not None else self._client._graph, st.key)

    def __hash__(self):
        return hash(self._ref())

    def __eq__(self, other):
        return isinstance(other, Future) and other._ref() == self._ref()

    @property
    def client(self):
        return self._client

    @property
    def status(self):
        """``pending``, ``finished``, ``error``, ``cancelled`` or ``lost``."""
        return self._state.status

    def done(self):
        """Whether the task finished (successfully or not) or the future was cancelled."""
        return self._state.status in _DONE

    def cancelled(self):
        return self._state.status == _CANCELLED

    def result(self, timeout=None):
        """The task's return value (fetched from the worker that holds it). Re-raises the
        task's exception, with the remote traceback as its cause."""
        return self._client._gather_states([self._state], timeout)[0]

    def exception(self, timeout=None):
        """The task's exception, or ``None`` if it succeeded. Waits for it to finish."""
        st = self._state
        self._client._wait_states([st], timeout)
        if st.status == _CANCELLED:
            raise CancelledError(st.key)
        if st.status in (_ERROR, _LOST):
            return st.exception
        return None

    def traceback(self, timeout=None):
        """The remote traceback text of a failed task, or ``None``."""
        exc = self.exception(timeout)
        cause = getattr(exc, "__cause__", None)
        return cause.tb if isinstance(cause, RemoteTraceback) else None

    def cancel(self):
        """Cancel the task (if nothing else needs it) and drop its result."""
        self._client.cancel([self])

    def release(self):
        """Drop this future's hold on its key now, instead of when it is garbage-collected."""
        st, self._state = self._state, _released_state
        if st is not _released_state:
            self._client._drop_ref(st)

    def add_done_callback(self, fn):
        """Call ``fn(future)`` when the future is done (in the client's dispatcher thread, or
        right away if it already is)."""
        self._client._add_callback(self, fn)

    def __del__(self):
        try:
            st = self._state
            if st is not _released_state:
                self._client._drop_ref(st)
        except Exception:  # interpreter shutdown
            pass

    def __reduce__(self):
        if _encoding.graph and _FutureBase is not object:
            # Inside a Dask graph node: a reference, which the node resolves to the value the
            # task receives as a dependency (see `_dask.to_tasks`).
            return _FutureBase, (self._state.dask_key,)
        # Anywhere else (inside an object passed to a task, a published dataset): a reference
        # to the key on the cluster, which becomes a future of the client that unpickles it
        # (`rusk.get_client()` in a task), holding the key there.
        graph, key = self._ref()
        refs = getattr(_pickled_refs, "refs", None)
        if refs is not None:
            refs.append((graph, key))
        from ._task_client import _rebuild_future

        return _rebuild_future, (self._client.address, graph, key, self._state.dask_key)

    def __repr__(self):
        st = self._state
        extra = ""
        if st.status == _ERROR and st.exception is not None:
            extra = ", %s" % type(st.exception).__name__
        return "<Future: %s, key: %s%s>" % (st.status, st.dask_key, extra)

    def __await__(self):
        """``await future``: its result (or its exception), without blocking the event loop."""
        return self._result_async().__await__()

    async def _result_async(self):
        import asyncio

        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle(_f):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        self.add_done_callback(settle)
        await done
        # Settled: fetching the value from its worker is quick, but is I/O: off the loop.
        return await loop.run_in_executor(None, self.result)


_released_state = _KeyState("<released>")
_released_state.status = _CANCELLED


def fire_and_forget(obj):
    """Let the tasks of ``obj`` (a future, or lists, tuples, sets and dicts of them) run to the
    end even after every reference to their futures is dropped and their client is closed, as in
    Dask: the scheduler keeps them (and what they need) until they finish, then drops them."""
    for f in _flat_futures(obj):
        f._client._keep([f])
        f._client._hold_until_done([f])


def _flat_futures(x):
    """The futures in ``x``: a future, or lists, tuples, sets and dict values of them."""
    if isinstance(x, Future):
        return [x]
    if isinstance(x, dict):
        x = x.values()
    out = []
    for item in x:
        out.extend(_flat_futures(item))
    return out


def futures_of(o):
    """The futures in ``o``, each once, as ``distributed.futures_of``: a future; lists,
    tuples, sets and dict values of them, nested; and Dask collections, whose graphs hold
    futures once persisted."""
    out, seen, stack = [], set(), [o]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            if id(x) not in seen:
                seen.add(id(x))
                out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(reversed(list(x)))
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif hasattr(x, "__dask_graph__") and not isinstance(x, type):
            graph = x.__dask_graph__()
            if graph is not None:
                stack.extend(v for v in dict(graph).values() if isinstance(v, Future))
    return out


class _Skip:
    def __repr__(self):
        return "<skipped>"


_SKIP = _Skip()
_STOP = _Skip()


def _run_callbacks(callbacks):
    for cb, arg in callbacks:
        try:
            cb() if arg is None else cb(arg)
        except Exception:
            logger.exception("rusk future callback failed")


# === waiting on several futures ===

DoneAndNotDoneFutures = collections.namedtuple("DoneAndNotDoneFutures", "done not_done")

FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"


def wait(fs, timeout=None, return_when=ALL_COMPLETED):
    """Wait until the futures (anything ``futures_of`` takes: persisted collections too) are done (``ALL_COMPLETED``), one is (``FIRST_COMPLETED``) or one
    failed (``FIRST_EXCEPTION``); returns ``(done, not_done)`` sets. Raises ``TimeoutError``
    when ``timeout`` passes first."""
    fs = futures_of(fs)
    if not fs:
        return DoneAndNotDoneFutures(set(), set())
    client = fs[0]._client
    states = [f._state for f in fs]

    def ready():
        if return_when == ALL_COMPLETED:
            return all(s.status in _DONE for s in states)
        if return_when == FIRST_COMPLETED:
            return any(s.status in _DONE for s in states)
        if return_when == FIRST_EXCEPTION:
            return all(s.status in _DONE for s in states) or any(s.status in (_ERROR, _LOST) for s in states)
        raise ValueError("return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION")

    def settle():
        client._wait_states(states, timeout, ready)
        done = {f for f in fs if f.done()}
        return DoneAndNotDoneFutures(done, set(fs) - done)

    if getattr(client, "asynchronous", False) and _in_loop():
        return _in_thread(settle)  # `await rusk.wait(...)`, as with an asynchronous Dask client
    return settle()


class as_completed:
    """Iterate over futures in the order they finish. ``with_results=True`` yields
    ``(future, result)`` pairs (raising a failed task's exception unless
    ``raise_errors=False``). More futures can be added while iterating (:meth:`add`)."""

    def __init__(self, futures=(), with_results=False, raise_errors=True, timeout=None):
        import queue

        self._queue = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self.with_results = with_results
        self.raise_errors = raise_errors
        self.timeout = timeout
        for f in futures:
            self.add(f)

    def add(self, future):
        with self._lock:
            self._pending += 1
        future.add_done_callback(self._queue.put)

    def update(self, futures):
        for f in futures:
            self.add(f)

    def count(self):
        with self._lock:
            return self._pending

    def is_empty(self):
        return self.count() == 0

    def __iter__(self):
        return self

    def __next__(self):
        import queue

        with self._lock:
            if self._pending == 0:
                raise StopIteration
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                f = self._queue.get(timeout=0.2)
                break
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("as_completed: nothing finished within %s s" % self.timeout)
        with self._lock:
            self._pending -= 1
        if not self.with_results:
            return f
        try:
            return f, f.result()
        except Exception as e:
            if self.raise_errors:
                raise
            return f, e

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio

        def step():
            try:
                return next(self)
            except StopIteration:
                return _STOP

        item = await asyncio.get_running_loop().run_in_executor(None, step)
        if item is _STOP:
            raise StopAsyncIteration
        return item

    def next_batch(self, block=True):
        """Every future that is done now (at least one when ``block``)."""
        out = [next(self)] if block else []
        while True:
            with self._lock:
                if self._pending == 0 or self._queue.empty():
                    return out
            out.append(next(self))
