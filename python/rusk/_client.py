"""The client: futures over a rusk scheduler's session graph.

One :class:`Client` holds one connection (the ``rusk._rusk.Connection`` extension object, whose
I/O runs on a Rust thread) and one *session graph* on the scheduler. ``submit``/``map`` add
tasks to it; a dispatcher thread reads the scheduler's reports and settles the futures. A
result stays on the worker that computed it until ``result()``/``gather()`` fetches it straight
from that worker (the scheduler never carries task data); if that worker died meanwhile, the
client asks the scheduler to locate the output again and it is recomputed.
"""

import atexit
import collections
import gc
import itertools
import logging
import os
import threading
import time
import uuid
import weakref

from . import _payload, _placement
from ._cluster import LocalCluster, read_scheduler_file, scheduler_file_tls
from ._cluster_ops import _ClusterOps
from ._dask_config import _DaskDefaults
from ._data import _DataOps
from . import _task_client
from ._shared import _SharedOps
from ._futures import (  # noqa: F401 (re-exported)
    _CANCELLED,
    _DONE,
    _ERROR,
    _FINISHED,
    _LOST,
    _PENDING,
    _SKIP,
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    ConnectionLostError,
    Future,
    _awaitable,
    _flat_futures,
    _in_loop,
    _in_thread,
    _KeyState,
    _run_callbacks,
    as_completed,
    wait,
)
from ._payload import RemoteTraceback, TaskError  # noqa: F401 (re-exported)
from ._progress import _ProgressBar, _stderr_is_terminal

logger = logging.getLogger("rusk")

#: How long a new local cluster's workers may take to join.
WORKERS_TIMEOUT = 30.0

def _connection_class():
    from . import _rusk

    return _rusk.Connection


def __getattr__(name):
    # LOCATE_ATTEMPTS_MAX: times a result is located again after fetching it from its worker
    # failed. The policy (attempts and back-off) lives in the extension (rusk_net::locate),
    # shared with the CLI client; read lazily, as the extension is imported lazily.
    if name == "LOCATE_ATTEMPTS_MAX":
        from . import _rusk

        return _rusk.LOCATE_ATTEMPTS_MAX
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def _format_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, str):
        return timeout
    ms = int(round(float(timeout) * 1000))
    if ms <= 0:
        raise ValueError("timeout must be positive")
    return "%dms" % ms


# Argument types whose repr() identifies the value: a call made of them is tokenized by hashing
# its repr, 50x faster than dask.base.tokenize (which a 100,000-task map would wait on).
_REPR_TYPES = frozenset((int, float, str, bytes, bool, type(None)))


def _tokens(fn, items, kwargs):
    """A deterministic token of each call ``fn(*args, **kwargs)`` for ``args`` in ``items``:
    equal calls, equal tokens. The function and keywords are tokenized once (with Dask's
    ``tokenize`` when Dask is here, else by their pickle); each call's arguments are then hashed
    by their repr when they are plain values, and tokenized otherwise."""
    import hashlib

    try:
        from dask.base import tokenize
    except ImportError:
        import cloudpickle

        def tokenize(*x):
            return hashlib.md5(cloudpickle.dumps(x), usedforsecurity=False).hexdigest()

    base = tokenize(fn, kwargs).encode()
    out = []
    for args in items:
        if all(type(a) in _REPR_TYPES for a in args):
            out.append(hashlib.md5(base + repr(args).encode(), usedforsecurity=False).hexdigest())
        else:
            out.append(tokenize(base, *args))
    return out


def _token(fn, args, kwargs):
    return _tokens(fn, [args], kwargs)[0]


def _no_actors(asked):
    if asked:
        raise NotImplementedError(
            "rusk has no actors: a task's state lives in an executor process that can be "
            "killed and replaced, so stateful workers are not offered (see docs/dask-compat.md)"
        )


def _funcname(fn):
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name) or "task"


class Client(_ClusterOps, _DataOps, _SharedOps):
    """Connect to a rusk cluster, or start one here.

    ``Client()`` starts a :class:`LocalCluster` of ``n_workers`` workers with
    ``threads_per_worker`` threads (real processes: a scheduler, a nanny and its workers) and
    stops it on :meth:`close` or at exit. ``Client("/path/scheduler.json")`` joins the cluster
    of a scheduler file; ``Client("host:port", token=...)`` (or ``RUSK_TOKEN``) joins by
    address. Use it as a context manager. ``progress`` draws a progress bar on stderr while
    ``get`` runs a Dask graph (default: when stderr is a terminal).

    A scheduler that dies and is started again on its journal (``LocalCluster`` and ``rusk
    local`` do it themselves) is the same cluster: the client reconnects for up to
    ``scheduler_lost_timeout`` seconds (60 by default; at once given up for a local cluster
    without a journal), claims its graphs again and sends again what was not answered, so
    pending futures still get their results.

    As ``distributed.Client`` does, a new client becomes Dask's default scheduler
    (``set_as_default=True``): ``x.compute()``, ``dask.compute(...)`` and ``ddf.to_parquet(...)``
    run on the cluster with no ``scheduler=``, and dataframe shuffles use the ``"tasks"``
    method (Dask's ``"disk"`` default would shuffle through one process's local disk). Closing
    it gives the default back to the client made before it, or to what Dask had.
    """

    def __init__(
        self,
        address_or_scheduler_file=None,
        n_workers=2,
        threads_per_worker=1,
        *,
        token=None,
        timeout=WORKERS_TIMEOUT,
        progress=None,
        set_as_default=True,
        asynchronous=False,
        scheduler_lost_timeout=None,
        **cluster_kwargs,
    ):
        self.cluster = None
        self._own_cluster = False
        self._closed = True
        self._started = False
        self.asynchronous = bool(asynchronous)
        self._start_args = (address_or_scheduler_file, n_workers, threads_per_worker, token, timeout, progress, set_as_default, cluster_kwargs)
        self._scheduler_lost_timeout = scheduler_lost_timeout
        if not self.asynchronous:
            self._start()

    def _start(self):
        """Start the local cluster or connect; the dispatcher thread then runs."""
        if self._started:
            return self
        self._started = True
        target, n_workers, threads_per_worker, token, timeout, progress, set_as_default, cluster_kwargs = self._start_args
        if target is None:
            self.cluster = LocalCluster(n_workers, threads_per_worker, **cluster_kwargs)
            self._own_cluster = True
            address, token, tls = self.cluster.address, self.cluster.token, self.cluster.tls
        elif isinstance(target, LocalCluster):
            self.cluster = target
            address, token, tls = target.address, target.token, target.tls
        elif os.path.isfile(str(target)):
            address, token = read_scheduler_file(str(target))
            tls = scheduler_file_tls(str(target))
        else:
            # TLS, if any, from RUSK_TLS_CA / RUSK_TLS_CERT / RUSK_TLS_KEY (read by the connection).
            tls = None
            address = str(target)
            if address.startswith("tcp://"):
                address = address[len("tcp://") :]
            if token is None:
                token = os.environ.get("RUSK_TOKEN")
            if token is None and os.environ.get("RUSK_TOKEN_FILE"):
                with open(os.environ["RUSK_TOKEN_FILE"]) as f:
                    token = f.read().strip()
            if not token:
                raise ValueError("joining %s by address needs the cluster token (token= or RUSK_TOKEN)" % address)
        lost_timeout = self._scheduler_lost_timeout
        if lost_timeout is None and self.cluster is not None and not self.cluster.journal:
            # Nobody can resume a scheduler without a journal: fail pending work at once.
            lost_timeout = 0
        try:
            self._conn = _connection_class()(address, token, tls, lost_timeout)
            self._graph = self._conn.open()
        except BaseException:
            if self._own_cluster:
                self.cluster.close()
            raise
        self.address = address
        self._closed = False
        if set_as_default:
            _DaskDefaults.push(self)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._keys = {}  # rusk key -> _KeyState of live futures
        self._foreign = {}  # (graph, key) -> _KeyState of futures of other sessions' keys
        self._adopts = {}  # adopt task key -> task dict, not sent yet (`_SharedOps`)
        self._created = next(_client_counter)
        self._in_task = _task_client._in_task()
        self._known = set()  # keys the session graph has (they are never removed from it)
        self._finished = {}  # graph id -> outputs of a finished `get` graph
        self._progress = {}  # graph id -> (done + erred, total) of a running `get` graph
        if progress is None:
            progress = _stderr_is_terminal()
        self.progress = bool(progress)
        self._lost = None  # why the connection is gone
        self._drops = collections.deque()  # states whose Future was dropped (from __del__)
        self._held = set()  # futures kept until done (fire_and_forget, run(wait=False))
        self._stopping = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="rusk-dispatcher", daemon=True)
        self._dispatcher.start()
        _live_clients.add(self)
        if self._own_cluster:
            try:
                self.wait_for_workers.__wrapped__(self, self.cluster.n_workers, timeout)
            except BaseException:
                self.close.__wrapped__(self)
                raise
        return self

    # === asyncio (``asynchronous=True``) ===

    def __await__(self):
        """``client = await rusk.Client(asynchronous=True)``: start without blocking the loop."""
        return _in_thread(self._start).__await__()

    async def __aenter__(self):
        return await self

    async def __aexit__(self, *exc):
        await self.close()

    # === cluster ===

    @_awaitable
    def status(self):
        """The scheduler's view of the cluster: workers, task counts, graphs, nannies."""
        import json

        return json.loads(self._conn.status_json())

    scheduler_info = status

    @_awaitable
    def nthreads(self):
        """``{worker: threads}`` of the workers that have not been lost (worker names as in
        ``rusk status``)."""
        return {w["id"]: w["nthreads"] for w in self.status()["workers"] if w["state"] != "lost"}

    @_awaitable
    def who_has(self, futures=None):
        """``{key: [worker]}``: where the result of each future is held, asked of the scheduler
        (every copy, the primary first; an empty list while it is not finished, or when its
        workers are gone). Default: every future of this client."""
        from ._data import _holders

        by_address = {w["address"]: w["id"] for w in self.status.__wrapped__(self)["workers"] if w["state"] != "lost"}
        with self._lock:
            if futures is None:
                states = [st for st in self._keys.values() if st.refs > 0]
            else:
                states = [f._state for f in _flat_futures(futures)]
        held = _holders(self, states)
        return {st.dask_key: [by_address[a] for a in held.get(id(st), []) if a in by_address] for st in states}

    @_awaitable
    def has_what(self, workers=None):
        """``{worker: [key, ...]}``: the results of this client's futures each worker holds."""
        out = {w: [] for w in self.nthreads()} if workers is None else {w: [] for w in workers}
        for key, holders in self.who_has().items():
            for w in holders:
                if w in out:
                    out[w].append(key)
        return out

    def run_on_scheduler(self, function, *args, **kwargs):
        """Not supported: rusk's scheduler is a Rust process and runs no Python."""
        raise NotImplementedError(
            "rusk's scheduler runs no Python (it is a Rust program), so run_on_scheduler cannot "
            "run %r; use client.status() or client.scheduler_info() for what the scheduler knows"
            % (getattr(function, "__name__", function),)
        )

    def events(self, since=0):
        """The recovery log (worker restarts and their causes) from sequence number ``since``."""
        import json

        records, _next = self._conn.events_json(since)
        return json.loads(records)

    @_awaitable
    def wait_for_workers(self, n_workers=1, timeout=WORKERS_TIMEOUT):
        """Block until at least ``n_workers`` workers have joined."""
        deadline = time.monotonic() + timeout
        while True:
            workers = self.status().get("workers", [])
            if len([w for w in workers if w.get("state") != "lost"]) >= n_workers:
                return
            if self.cluster is not None and self._own_cluster:
                self.cluster.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("only %d of %d workers joined within %.0f s" % (len(workers), n_workers, timeout))
            time.sleep(0.05)

    @_awaitable
    def restart_workers(self, worker=None):
        """Operator restart of one worker (id as in ``status()``) or all of them."""
        return self._conn.restart(worker)

    # === submitting ===

    def _check_open(self):
        if self._closed:
            raise ConnectionLostError("the client is closed")
        if self._lost is not None:
            raise ConnectionLostError(self._lost)

    def _call(self, fn, args, kwargs):
        """``((fn, args, kwargs, dep_paths), dep_keys)`` of a call: futures among the
        arguments become placeholders at ``dep_paths``, filled in on the worker."""
        if not callable(fn):
            raise TypeError("the first argument must be callable, got %r" % (fn,))

        def is_future(x):
            return isinstance(x, Future)

        new_args, new_kwargs, found = _payload.extract_placeholders(args, kwargs, is_future)
        deps = []
        for _path, fut in found:
            st = fut._state
            if st.status == _CANCELLED:
                raise CancelledError("dependency %s was cancelled" % st.key)
            if st.status == _LOST:
                raise st.exception
            # Another client's future (or one of another session's key): an adopt task.
            deps.append(self._dep_key(fut))
        return (fn, new_args, new_kwargs, [p for p, _ in found]), deps

    @staticmethod
    def _task(key, deps, retries, timeout, placement):
        task = {"key": key, "deps": deps}
        task.update(placement)
        if retries:
            task["retries"] = int(retries)
        if timeout is not None:
            task["timeout"] = _format_timeout(timeout)
        return task

    def _prepare(self, fn, args, kwargs, key, retries, timeout, placement=None):
        """The task dict for ``fn(*args, **kwargs)``, and the put tasks of its big literals."""
        call, deps = self._call(fn, args, kwargs)
        task = self._task(key, deps, retries, timeout, placement or {})
        if not _payload.may_put(call[1], call[2]):
            task["python"] = _payload.encode_call(*call)  # the common case, 4x cheaper
            return task, []
        big = []
        (task["python"],) = _payload.encode_calls([call], big=big)
        return task, self._put_literals([task], big)

    def _put_literals(self, tasks, big):
        """Put the big literals ``encode_calls`` took out of ``tasks``' payloads on workers and
        make each task depend on its own first; returns the put tasks, to send first."""
        if not any(big):
            return []
        from ._data import put_literals

        puts, keys = put_literals(self, big)
        for task, ks in zip(tasks, keys):
            if ks:
                task["deps"] = ks + task["deps"]
        return puts

    def _extend(self, tasks, keys, needed=()):
        """Send ``tasks`` and ask for ``keys``; return one Future per key. Keys the session
        already has are asked for again, not resubmitted. ``needed``: tasks the new ones depend
        on that are not outputs (a Dask graph's inner tasks), sent first unless the session has
        them."""
        with self._lock:
            self._check_open()
            futures = []
            fresh = []
            send = []
            outputs = []
            created = []
            for task in needed:
                k = task["key"]
                if k not in self._known and k not in self._keys:
                    send.append(task)
                    fresh.append(k)
            for task, key in zip(tasks, keys):
                st = self._keys.get(key)
                if st is None:
                    st = _KeyState(key)
                    self._keys[key] = st
                    created.append(st)
                    outputs.append(key)
                    if key not in self._known and task is not None:
                        send.append(task)
                        fresh.append(key)
                futures.append(Future(self, st))
            if not outputs:
                return futures
            adopts = self._take_adopts(send)
            if adopts:
                send = adopts + send
                fresh += [t["key"] for t in adopts]
            try:
                # Under the lock: a dependency cannot be released between check and send.
                self._conn.extend(self._graph, send, outputs)
            except BaseException:
                for st in created:
                    if self._keys.get(st.key) is st:
                        del self._keys[st.key]
                    st.status = _CANCELLED
                for t in adopts:
                    self._adopts[t["key"]] = t
                raise
            self._known.update(fresh)
            return futures

    def compute(self, collections, sync=False, **kwargs):
        """Compute Dask collections on the cluster without waiting: a :class:`Future` for each
        (its result is what ``collection.compute()`` gives), one for a single collection, a
        list for a list. With ``sync=True``, the results instead. A Dask key computed before in
        this session is not computed again. Values that are not Dask collections are sent as
        they are."""
        from . import _dask

        placement, _rest = _placement.split_keywords(kwargs)
        placement = _placement.fields(**placement)
        self._check_open()
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        futures = [_dask.compute_future(self, c, placement) for c in items]
        if sync and self.asynchronous and _in_loop():

            async def results():
                out = await self.gather(futures)
                return out[0] if single else out

            return results()
        out = self.gather(futures) if sync else futures
        return out[0] if single else out

    def persist(self, collections, optimize_graph=True, **kwargs):
        """Start computing Dask collections on the cluster and return them backed by futures
        (one collection, or a list for a list): their chunks stay on the workers while the
        returned collections live, and graphs built on them later use the chunks where they
        are, without computing them again. ``dask.persist(...)`` and ``x.persist()`` come here
        when this client is Dask's default."""
        from . import _dask

        placement, _rest = _placement.split_keywords(kwargs)
        placement = _placement.fields(**placement)
        self._check_open()
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        out = _dask.persist(self, items, optimize_graph, placement)
        return out[0] if single else out

    def _session_key(self, dask_key):
        """The rusk key of a result this client's session holds under ``dask_key``, or None."""
        from ._dask import encode_key

        with self._lock:
            for k in (encode_key(dask_key), dask_key):
                if isinstance(k, str) and (k in self._keys or k in self._known):
                    return k
        return None

    def submit(
        self,
        fn,
        *args,
        key=None,
        retries=0,
        timeout=None,
        pure=True,
        priority=0,
        resources=None,
        workers=None,
        allow_other_workers=False,
        fifo_timeout=None,
        actor=False,
        actors=False,
        **kwargs,
    ):
        """Run ``fn(*args, **kwargs)`` on the cluster; return its :class:`Future`.

        As in Dask, a call is *pure* by default: its key is the function's name and a token of
        the function and its arguments, so the same call gives the same key and runs once while
        its future lives (``pure=False`` for functions with side effects or randomness). ``key``
        names the task (a future of an existing key is returned as is); ``retries`` re-runs a
        task whose code raised; ``timeout`` (seconds, or ``"30s"``) limits one attempt. Futures
        among the arguments are replaced by their values on the worker. ``priority`` (higher
        first), ``resources`` (``{"GPU": 1}``: amounts the task holds on its worker, which
        declares them with ``--resources``), ``workers`` (names as ``rusk status`` shows them,
        addresses or host names) and ``allow_other_workers`` place it, as in Dask."""
        del fifo_timeout
        _no_actors(actor or actors)
        self._check_open()
        placement = _placement.fields(priority, resources, workers, allow_other_workers)
        if key is None:
            key = "%s-%s" % (_funcname(fn), _token(fn, args, kwargs) if pure else uuid.uuid4().hex)
        key = str(key)
        with self._lock:
            if key in self._keys or key in self._known:
                return self._extend([None], [key])[0]
        task, puts = self._prepare(fn, args, kwargs, key, retries, timeout, placement)
        return self._extend([task], [key], needed=puts)[0]

    def map(
        self,
        fn,
        *iterables,
        key=None,
        retries=0,
        timeout=None,
        pure=True,
        priority=0,
        resources=None,
        workers=None,
        allow_other_workers=False,
        batch_size=None,
        fifo_timeout=None,
        actor=False,
        actors=False,
        **kwargs,
    ):
        """``submit(fn, *items, **kwargs)`` for each tuple of items of ``iterables``, as one
        request to the scheduler (the function pickled once). ``key`` may be a list of keys or
        a prefix; ``pure`` and the placement keywords as for :meth:`submit`."""
        del batch_size, fifo_timeout
        _no_actors(actor or actors)
        self._check_open()
        # A big map allocates millions of objects that all live on: with the cyclic collector
        # running over them again and again, 100,000 tasks cost 3-6x more per task.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._map(fn, iterables, key, retries, timeout, pure, priority, resources, workers, allow_other_workers, kwargs)
        finally:
            if was_enabled:
                gc.enable()

    def _map(self, fn, iterables, key, retries, timeout, pure, priority, resources, workers, allow_other_workers, kwargs):
        placement = _placement.fields(priority, resources, workers, allow_other_workers)
        items = list(zip(*iterables))
        if isinstance(key, (list, tuple)):
            keys = [str(k) for k in key]
            if len(keys) != len(items):
                raise ValueError("map: %d keys for %d tasks" % (len(keys), len(items)))
        else:
            prefix = key if isinstance(key, str) else _funcname(fn)
            if pure:
                keys = ["%s-%s" % (prefix, t) for t in _tokens(fn, items, kwargs)]
            else:
                keys = ["%s-%s" % (prefix, uuid.uuid4().hex) for _ in items]
        tasks = []
        calls = []
        with self._lock:
            known = set(self._keys) | self._known
        seen = set()
        for k, args in zip(keys, items):
            if k in known or k in seen:
                tasks.append(None)  # the same call twice: one task
            else:
                seen.add(k)
                call, deps = self._call(fn, args, kwargs)
                calls.append(call)
                tasks.append(self._task(k, deps, retries, timeout, placement))
        fresh = [t for t in tasks if t is not None]
        big = []
        for task, payload in zip(fresh, _payload.encode_calls(calls, big=big) if calls else ()):
            task["python"] = payload
        return self._extend(tasks, keys, needed=self._put_literals(fresh, big))

    # === results ===

    def _settled(self, states):
        return all(st.status in _DONE for st in states)

    def _wait_states(self, states, timeout=None, predicate=None):
        """Wait (GIL released in short slices) until ``predicate`` (default: all done)."""
        predicate = predicate or (lambda: self._settled(states))
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._in_task and not predicate():
            # A task waiting for futures gives up its thread slot (as with `worker_client`):
            # waiting while holding it could deadlock a worker whose slots all wait.
            _task_client.secede()
        with self._cond:
            while not predicate():
                if deadline is None:
                    self._cond.wait(0.2)
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("not finished within %s s" % timeout)
                    self._cond.wait(min(left, 0.2))

    def _raise_for(self, st):
        if st.status == _CANCELLED:
            raise CancelledError(st.key)
        exc = st.exception
        if exc is None:
            raise TaskError("task %r failed" % (st.key,), st.key)
        raise exc

    def _gather_states(self, states, timeout=None, errors="raise"):
        """The values of ``states`` (fetched from their holders), in order. With
        ``errors="skip"``, failed ones are ``_SKIP``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        locator = self._conn.locator(self._graph)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wait_states(states, left)
            by_holder = collections.OrderedDict()
            with self._lock:
                for st in states:
                    if st.status == _FINISHED and not st.has_value:
                        by_holder.setdefault(st.holder, []).append(st)
                    elif st.status != _FINISHED and errors == "raise":
                        self._raise_for(st)
            failed = []
            for holder, group in by_holder.items():
                group = list({id(s): s for s in group}.values())
                tasks = [s.task for s in group]
                try:
                    blobs = self._conn.fetch(holder, tasks)
                except ConnectionError as e:
                    logger.info("fetching from %s failed (%s); locating the results again", holder, e)
                    failed += [(s, holder, tasks[i]) for i, s in enumerate(group)]
                    continue
                for i, (s, blob) in enumerate(zip(group, blobs)):
                    if blob is None:
                        failed.append((s, holder, tasks[i]))
                        continue
                    value = _payload.loads(blob)
                    with self._lock:
                        s.value, s.has_value = value, True
            if not failed:
                break
            # Raises ConnectionError once the attempts are used up.
            locator.failed("results of %s" % [s.key for s, _, _ in failed])
            held = {}
            with self._lock:
                for s, holder, task in failed:
                    # Unless the scheduler already said where it is now, wait for it to.
                    if s.status == _FINISHED and s.holder == holder and s.task == task and not s.has_value:
                        s.status = _PENDING
                    if s.graph is not None:
                        held.setdefault(s.graph, []).append(s.key)
            self._check_open()
            locator.relocate()  # after the back-off
            for graph, keys in held.items():
                self._conn.hold(graph, keys)  # reported again, where they are now
        out = []
        with self._lock:
            for st in states:
                if st.status == _FINISHED and st.has_value:
                    out.append(st.value)
                elif errors == "raise":
                    self._raise_for(st)
                else:
                    out.append(_SKIP)
        return out

    @_awaitable
    def gather(self, futures, errors="raise", timeout=None):
        """The results of ``futures`` (a future, or lists, tuples, dicts and sets of them, kept
        in shape), fetched from the workers that hold them. ``errors="skip"`` leaves out failed
        ones instead of raising."""
        if errors not in ("raise", "skip"):
            raise ValueError("errors must be 'raise' or 'skip'")
        found = []

        def collect(x):
            if isinstance(x, Future):
                found.append(x)
            elif type(x) in (list, tuple, set, frozenset):
                for i in x:
                    collect(i)
            elif type(x) is dict:
                for i in x.values():
                    collect(i)

        collect(futures)
        values = self._gather_states([f._state for f in found], timeout, errors)
        by_id = {id(f): v for f, v in zip(found, values)}

        def rebuild(x):
            if isinstance(x, Future):
                return by_id[id(x)]
            t = type(x)
            if t in (list, tuple, set, frozenset):
                return t(v for v in (rebuild(i) for i in x) if v is not _SKIP)
            if t is dict:
                return {k: v for k, v in ((k, rebuild(i)) for k, i in x.items()) if v is not _SKIP}
            return x

        try:
            return rebuild(futures)
        finally:
            # Both refer to themselves through their closures: emptying their cells breaks
            # the cycle, else the gathered futures (and their results on the cluster) live
            # until the next garbage collection.
            del collect, rebuild

    def cancel(self, futures):
        """Cancel futures: the scheduler drops their results and cancels work nothing else
        needs."""
        if isinstance(futures, Future):
            futures = [futures]
        keys = []
        foreign = []
        callbacks = []
        with self._cond:
            for f in futures:
                st = f._state
                if st.status in (_ERROR, _LOST, _CANCELLED):
                    continue
                st.status = _CANCELLED
                st.value, st.has_value = None, False
                if st.graph is None and self._keys.get(st.key) is st:
                    del self._keys[st.key]
                    keys.append(st.key)
                elif st.graph is not None and self._foreign.get((st.graph, st.key)) is st:
                    # Another client's key: this client only lets go of it.
                    del self._foreign[(st.graph, st.key)]
                    foreign.append(st)
                callbacks += [(cb, None) for cb in st.callbacks]
                st.callbacks = []
            self._cond.notify_all()
        if not self._closed and self._lost is None:
            if keys:
                self._conn.release_keys(self._graph, keys)
            for st in foreign:
                self._conn.unhold(st.graph, [st.key])
        _run_callbacks(callbacks)

    def _drop_ref(self, st):
        # From Future.__del__: anywhere, any thread, maybe with our lock held: just queue it.
        if not self._closed:
            self._drops.append(st)

    def _process_drops(self):
        keys = []
        foreign = []
        with self._lock:
            while self._drops:
                st = self._drops.popleft()
                st.refs -= 1
                if st.refs > 0:
                    continue
                if st.graph is None and self._keys.get(st.key) is st:
                    del self._keys[st.key]
                    keys.append(st.key)
                elif st.graph is not None and self._foreign.get((st.graph, st.key)) is st:
                    del self._foreign[(st.graph, st.key)]
                    foreign.append(st)
        if self._lost is None:
            try:
                if keys:
                    self._conn.release_keys(self._graph, keys)
                for st in foreign:
                    self._conn.unhold(st.graph, [st.key])
            except ConnectionError:
                pass

    def _add_callback(self, fut, fn):
        with self._lock:
            if fut._state.status not in _DONE:
                fut._state.callbacks.append(lambda _f=fut, _fn=fn: _fn(_f))
                return
        _run_callbacks([(lambda _f=fut, _fn=fn: _fn(_f), None)])

    # === Dask ===

    def get(self, dsk, keys, **kwargs):
        """A Dask scheduler function: ``dask.compute(x, scheduler=client.get)`` or
        ``dask.config.set(scheduler=client.get)`` runs Dask collections on rusk."""
        from ._dask import get

        return get(self, dsk, keys, **kwargs)

    def _submit_graph(self, tasks, outputs):
        with self._lock:
            self._check_open()
        return self._conn.submit_graph(tasks, outputs)

    def _wait_graph(self, graph):
        """The outputs of a submitted graph once it finished (a list of output dicts)."""
        bar = _ProgressBar() if self.progress else None
        if self._in_task:
            with self._cond:
                waits = graph not in self._finished
            if waits:
                # As in `_wait_states`: a task waiting for a graph (`dask.compute` in a task)
                # gives up its thread slot, or a worker whose slots all wait deadlocks.
                _task_client.secede()
        try:
            with self._cond:
                while graph not in self._finished:
                    if self._lost is not None:
                        raise ConnectionLostError(self._lost)
                    if self._closed:
                        raise ConnectionLostError("the client is closed")
                    self._cond.wait(0.2)
                    if bar is not None and graph in self._progress:
                        bar.draw(*self._progress[graph])
                if bar is not None and graph in self._progress:
                    bar.draw(*self._progress[graph])
                return self._finished.pop(graph)
        finally:
            if bar is not None:
                bar.finish()

    def _release_graph(self, graph):
        with self._lock:
            self._finished.pop(graph, None)
            self._progress.pop(graph, None)
        if not self._closed and self._lost is None:
            self._conn.release_graph(graph)

    # === the dispatcher ===

    def _dispatch(self):
        conn = self._conn
        while not self._stopping:
            try:
                events = conn.next_events(0.1)
            except Exception:  # closed under us
                if self._stopping:
                    return
                logger.exception("rusk client dispatcher")
                time.sleep(0.1)
                continue
            try:
                if self._drops:
                    self._process_drops()
                for ev in events:
                    self._handle(ev)
            except Exception:
                logger.exception("rusk client dispatcher")

    def _handle(self, ev):
        kind = ev["type"]
        callbacks = []
        if kind == "outputs":
            with self._cond:
                own = ev["graph"] == self._graph
                for o in ev["outputs"]:
                    st = self._keys.get(o["key"]) if own else None
                    if st is None:
                        st = self._foreign.get((ev["graph"], o["key"]))
                    if st is None or st.status in (_CANCELLED, _LOST):
                        continue
                    if o["ok"]:
                        st.task, st.holder = tuple(o["task"]), o["holder"]
                        if st.status != _FINISHED:
                            st.status = _FINISHED
                            st.exception = None
                    else:
                        st.status = _ERROR
                        st.value, st.has_value = None, False
                        st.exception = _payload.decode_failure(st.key, o["error"], o.get("detail"))
                    if st.callbacks:
                        callbacks += [(cb, None) for cb in st.callbacks]
                        st.callbacks = []
                self._cond.notify_all()
        elif kind == "finished":
            # Kept even before `_submit_graph` has registered the graph: a graph can finish
            # (fail at once, say) before its submitter hears back. `_release_graph` drops it.
            with self._cond:
                self._finished[ev["graph"]] = ev["outputs"]
                self._cond.notify_all()
        elif kind == "progress":
            with self._lock:
                self._progress[ev["graph"]] = (ev["done"], ev["erred"], ev["total"])
        elif kind == "disconnected":
            err = ConnectionLostError(ev["message"])
            with self._cond:
                self._lost = ev["message"]
                for st in list(self._keys.values()) + list(self._foreign.values()):
                    if st.status == _PENDING:
                        st.status = _LOST
                        st.exception = err
                        callbacks += [(cb, None) for cb in st.callbacks]
                        st.callbacks = []
                self._cond.notify_all()
        elif kind == "error":
            logger.warning("rusk scheduler: %s", ev["message"])
        elif kind == "reconnecting":
            logger.warning("rusk: lost the scheduler (%s); reconnecting", ev["message"])
        elif kind == "reconnected":
            logger.warning("rusk: reconnected to the scheduler after %.2f s; pending work resumed", ev["away_s"])
        _run_callbacks(callbacks)

    # === lifetime ===

    @_awaitable
    def close(self, timeout=10):
        """Close the connection (the scheduler drops this client's work) and stop the local
        cluster if this client started it."""
        if self._closed:
            return
        self._closed = True
        _live_clients.discard(self)
        _DaskDefaults.remove(self)
        self._stopping = True
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(timeout)
        err = ConnectionLostError("the client is closed")
        with self._cond:
            for st in self._keys.values():
                if st.status == _PENDING:
                    st.status = _LOST
                    st.exception = err
            self._cond.notify_all()
        try:
            self._conn.close()
        finally:
            if self._own_cluster and self.cluster is not None:
                self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        type(self).close.__wrapped__(self)

    def __del__(self):
        try:
            if not self._closed:
                type(self).close.__wrapped__(self)
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self._closed else ("lost" if self._lost else "connected")
        return "<rusk.Client %s (%s)>" % (getattr(self, "address", "?"), state)


_live_clients = weakref.WeakSet()
_client_counter = itertools.count()


@atexit.register
def _close_all_clients():
    for c in list(_live_clients):
        try:
            type(c).close.__wrapped__(c)
        except Exception:
            pass


