"""What a client does to the cluster itself, rather than with tasks of its own: restart the
workers, run a function on each, install files on each, read their logs."""

import time
import uuid

from ._futures import (
    _CANCELLED,
    _DONE,
    _FINISHED,
    CancelledError,
    _awaitable,
    _run_callbacks,
)

#: How long ``restart`` waits for the workers to come back, by default.
RESTART_TIMEOUT = 30.0

#: ``client.run`` tasks go before every other task.
RUN_PRIORITY = 2**31 - 1


def _import_module(name):
    import importlib

    importlib.import_module(name)


def _run_here(fn, args, kwargs):
    """Executed on a worker for ``client.run``."""
    return fn(*args, **kwargs)


class _ClusterOps:
    @_awaitable
    def restart(self, timeout=RESTART_TIMEOUT, wait_for_workers=True):
        """Restart every worker through its nanny and clear this client's state, as Dask's
        ``restart`` does: every future of this client is cancelled (its result is gone with the
        worker that held it). Waits until each restarted worker is back (``wait_for_workers``),
        raising ``TimeoutError`` after ``timeout`` s. Workers without a nanny cannot be
        restarted: a cluster of only those raises ``RuntimeError``, others are left running."""
        self._check_open()
        before = {w["id"]: w["incarnation"] for w in self.status.__wrapped__(self)["workers"] if w["state"] != "lost"}
        supervised = {w["id"] for w in self.status.__wrapped__(self)["workers"] if w.get("nanny")}
        callbacks = []
        with self._cond:
            keys = list(self._keys)
            err = CancelledError("the cluster was restarted (client.restart())")
            for st in self._keys.values():
                if st.status not in _DONE or st.status == _FINISHED:
                    st.status = _CANCELLED
                    st.exception = err
                    st.value, st.has_value = None, False
                    callbacks += [(cb, None) for cb in st.callbacks]
                    st.callbacks = []
            self._keys.clear()
            self._held.clear()
            self._cond.notify_all()
        if keys:
            self._conn.release_keys(self._graph, keys)
        _run_callbacks(callbacks)
        if before and not supervised:
            raise RuntimeError("none of the %d workers has a nanny to restart it" % len(before))
        self._conn.restart(None)
        if not wait_for_workers:
            return
        deadline = time.monotonic() + timeout
        while True:
            now = {w["id"]: w["incarnation"] for w in self.status.__wrapped__(self)["workers"] if w["state"] != "lost"}
            if all(now.get(i, inc) != inc for i, inc in before.items() if i in supervised):
                return
            if time.monotonic() > deadline:
                missing = sorted(i for i, inc in before.items() if i in supervised and now.get(i, inc) == inc)
                raise TimeoutError("workers %s did not come back within %s s of the restart" % (missing, timeout))
            time.sleep(0.05)

    @_awaitable
    def run(self, function, *args, workers=None, wait=True, nanny=False, on_error="raise", **kwargs):
        """Run ``function(*args, **kwargs)`` once on every worker (or on ``workers``: names as
        ``rusk status`` shows them, as ``workers=`` takes them), in one of its executors, ahead
        of queued tasks; return ``{worker: result}``. ``on_error``: ``"raise"`` the first error,
        ``"return"`` it in place of the result, or ``"ignore"`` (leave that worker out). With
        ``wait=False`` the calls are started and ``None`` is returned. Unlike Dask, the function
        runs in an executor process, not in the worker itself, so it gets no ``dask_worker``."""
        if nanny:
            raise NotImplementedError("rusk's nannies run no Python: client.run(..., nanny=True) is not offered")
        if on_error not in ("raise", "return", "ignore"):
            raise ValueError("on_error must be 'raise', 'return' or 'ignore'")
        self._check_open()
        live = [w["id"] for w in self.status.__wrapped__(self)["workers"] if w["state"] != "lost"]
        if workers is None:
            targets = live
        else:
            targets = [workers] if isinstance(workers, str) else list(workers)
            unknown = [w for w in targets if w not in live]
            if unknown:
                raise ValueError("no live worker named %s (workers: %s)" % (unknown, live))
        token = uuid.uuid4().hex
        futures = {
            w: self.submit(
                _run_here,
                function,
                args,
                kwargs,
                key="run-%s-%s-%s" % (getattr(function, "__name__", "fn"), token, w),
                workers=[w],
                priority=RUN_PRIORITY,
                pure=False,
            )
            for w in targets
        }
        if not wait:
            self._hold_until_done(list(futures.values()))
            return None
        out = {}
        for w, f in futures.items():
            try:
                out[w] = f.result()
            except Exception as e:
                if on_error == "raise":
                    raise
                if on_error == "return":
                    out[w] = e
        return out

    @_awaitable
    def upload_file(self, filename, load=True):
        """Send a ``.py`` module or a ``.zip``/``.egg``/``.whl`` archive to every worker, now
        and every worker that joins later (the scheduler keeps it): executors import it from
        there, and a module uploaded again is reloaded. A ``.py`` file is compiled here first, so
        a syntax error raises ``SyntaxError`` before anything is sent. With ``load=True`` the
        module is imported on every worker, and an import error raises here."""
        import os

        name = os.path.basename(filename)
        with open(filename, "rb") as f:
            data = f.read()
        if name.endswith(".py"):
            compile(data, filename, "exec")  # SyntaxError here, not on every worker
        self._check_open()
        message = self._conn.upload(name, data)
        if load:
            module = name.rsplit(".", 1)[0] if name.endswith(".py") else None
            if module:
                self.run.__wrapped__(self, _import_module, module)
        return message

    @_awaitable
    def get_worker_logs(self, n=None, workers=None, nanny=False):
        """``{worker: [(level, line), ...]}``: each worker's recent log lines (the last
        ``n``, at most the 1,000 a worker keeps), oldest first. ``workers`` picks some by name.
        ``nanny=True`` is not offered: nannies serve no logs (their own go to their stderr)."""
        if nanny:
            raise NotImplementedError("get_worker_logs(nanny=True): nannies serve no logs")
        self._check_open()
        live = {w["id"]: w["address"] for w in self.status.__wrapped__(self)["workers"] if w["state"] != "lost"}
        names = sorted(live) if workers is None else ([workers] if isinstance(workers, str) else list(workers))
        unknown = [w for w in names if w not in live]
        if unknown:
            raise ValueError("no live worker named %s (workers: %s)" % (unknown, sorted(live)))
        out = {}
        for name in names:
            lines = [tuple(x) for x in self._conn.worker_logs(live[name])]
            out[name] = lines[-n:] if n else lines
        return out

    def _hold_until_done(self, futures):
        """Keep ``futures`` (and so their tasks) alive until they are done."""
        for f in futures:
            self._held.add(f)
            f.add_done_callback(self._held.discard)

