"""Keys shared between clients: futures of other clients (unpickled in a task, or from a
published dataset), datasets, and ``fire_and_forget``.

A future of another session graph (*foreign*) is held on the scheduler (``Hold``): the scheduler
keeps its key (recomputing it from its own graph's lineage if it is lost) and reports it to this
client when it finishes, so ``result()`` fetches it from its worker as for any future. Used as
an argument of ``submit``/``map``, it becomes an *adopt* task in this client's session: a task
whose value is the foreign key's, run on the worker that holds it (nothing is copied there).
"""

import collections.abc

from ._futures import Future, _KeyState, _awaitable, _pickled_refs

#: The session key of the adopt task for another graph's key.
_ADOPT_PREFIX = "rusk-adopt-"

_NO_DEFAULT = object()


class _SharedOps:
    """Methods of :class:`rusk.Client` for shared keys (a mixin)."""

    def _foreign_future(self, graph, key, dask_key=None):
        """A future of ``key`` of session graph ``graph`` (another client's, or this one's)."""
        with self._lock:
            self._check_open()
            if graph == self._graph:
                st = self._keys.get(key)
                if st is not None:
                    return Future(self, st)
            st = self._foreign.get((graph, key))
            fresh = st is None
            if fresh:
                st = _KeyState(key, dask_key)
                st.graph = graph
                self._foreign[(graph, key)] = st
            fut = Future(self, st)
        if fresh:
            self._conn.hold(graph, [key])
        return fut

    def _adopt_key(self, graph, key):
        """The key, in this session, of the adopt task for ``key`` of ``graph`` (added with the
        next extension if new): what tasks of this client depend on."""
        k = "%s%d-%s" % (_ADOPT_PREFIX, graph, key)
        with self._lock:
            if k not in self._known and k not in self._adopts:
                self._adopts[k] = {"key": k, "adopt": (graph, key)}
        return k

    def _dep_key(self, fut):
        """The key in this session that a task depending on ``fut`` names."""
        st = fut._state
        if fut._client is self and st.graph is None:
            return st.key
        graph, key = fut._ref()
        if graph == self._graph:
            return key
        return self._adopt_key(graph, key)

    def _take_adopts(self, send):
        """Adopt tasks the tasks in ``send`` depend on and the session does not have yet (with
        the lock held)."""
        if not self._adopts:
            return []
        need = []
        for task in send:
            for d in task.get("deps", ()):
                t = self._adopts.pop(d, None)
                if t is not None:
                    need.append(t)
        return need

    def _keep(self, futures):
        """Ask the scheduler to finish ``futures`` even once every client let go of them."""
        by_graph = {}
        for f in futures:
            graph, key = f._ref()
            by_graph.setdefault(graph, []).append(key)
        for graph, keys in by_graph.items():
            self._conn.keep(graph, keys)

    # === datasets ===

    @_awaitable
    def publish_dataset(self, *args, name=None, override=False, **kwargs):
        """Publish data under a name, for any client of the cluster (``get_dataset``): as in
        Dask, ``publish_dataset(df, name="x")`` or ``publish_dataset(x=df, y=fut)``. Futures
        in the data (a persisted collection's chunks, say) stay on the cluster while it is
        published; the data itself is pickled and kept by the scheduler, so it must be small
        (``DATASET_BYTES_MAX``, 1 MiB: publish futures, not values)."""
        import cloudpickle

        if args:
            if name is None:
                raise ValueError("publish_dataset: give name= for a positional dataset")
            if len(args) != 1:
                raise ValueError("publish_dataset: one positional dataset at a time")
            kwargs[name] = args[0]
        if not kwargs:
            raise ValueError("publish_dataset: nothing to publish")
        for n, value in kwargs.items():
            _pickled_refs.refs = []
            try:
                data = cloudpickle.dumps(value, protocol=5)
                refs = _pickled_refs.refs
            finally:
                _pickled_refs.refs = None
            self._conn.publish_dataset(str(n), data, refs, bool(override))

    @_awaitable
    def get_dataset(self, name, default=_NO_DEFAULT, **kwargs):
        """A published dataset, its futures made this client's. ``KeyError`` if there is none
        of that name (unless ``default`` is given)."""
        del kwargs
        import pickle

        from ._task_client import _unpickling

        try:
            data = self._conn.get_dataset(str(name))
        except KeyError:
            if default is _NO_DEFAULT:
                raise
            return default
        _unpickling.client = self
        try:
            return pickle.loads(data)
        finally:
            _unpickling.client = None

    @_awaitable
    def unpublish_dataset(self, name, **kwargs):
        """Remove a published dataset (``KeyError`` if there is none): its keys are dropped
        unless someone else holds them."""
        del kwargs
        self._conn.unpublish_dataset(str(name))

    @_awaitable
    def list_datasets(self, **kwargs):
        """The names of the published datasets."""
        del kwargs
        return tuple(self._conn.list_datasets())

    @property
    def datasets(self):
        """The published datasets as a mapping: ``client.datasets["x"]``, ``del``, ``in``."""
        return _Datasets(self)


class _Datasets(collections.abc.MutableMapping):
    def __init__(self, client):
        self._client = client

    def __getitem__(self, name):
        return self._client.get_dataset.__wrapped__(self._client, name)

    def __setitem__(self, name, value):
        self._client.publish_dataset.__wrapped__(self._client, value, name=name, override=True)

    def __delitem__(self, name):
        self._client.unpublish_dataset.__wrapped__(self._client, name)

    def __iter__(self):
        return iter(self._client.list_datasets.__wrapped__(self._client))

    def __len__(self):
        return len(self._client.list_datasets.__wrapped__(self._client))

