"""Making a client Dask's default scheduler, and giving the default back."""

import threading


class _DaskDefaults:
    """The clients that made themselves Dask's default scheduler, newest last; the newest open
    one is the default. What Dask had before the first is put back when the last closes."""

    # Dask settings a default client makes (key -> value for the client).
    KEYS = ("scheduler", "dataframe.shuffle.method")
    _stack = []
    _saved = None  # key -> (had it, its value) before the first client
    _lock = threading.Lock()

    @classmethod
    def push(cls, client):
        try:
            import dask.config
        except ImportError:
            return  # no Dask here: nothing to be the default of
        with cls._lock:
            if not cls._stack:
                cls._saved = {}
                for k in cls.KEYS:
                    missing = object()
                    v = dask.config.get(k, missing)
                    cls._saved[k] = (v is not missing, None if v is missing else v)
            cls._stack.append(client)
            cls._apply(dask.config, client)

    @classmethod
    def remove(cls, client):
        with cls._lock:
            if client not in cls._stack:
                return
            import dask.config

            cls._stack.remove(client)
            if cls._stack:
                cls._apply(dask.config, cls._stack[-1])
                return
            for k, (had, v) in (cls._saved or {}).items():
                if had:
                    dask.config.set({k: v})
                else:
                    _config_pop(dask.config.config, k.split("."))
            cls._saved = None

    @staticmethod
    def _apply(config, client):
        config.set({"scheduler": client.get, "dataframe.shuffle.method": "tasks"})


def _config_pop(d, path):
    """Remove ``a.b.c`` from Dask's nested config dict, and the dicts it leaves empty."""
    if len(path) == 1:
        d.pop(path[0], None)
        return
    sub = d.get(path[0])
    if isinstance(sub, dict):
        _config_pop(sub, path[1:])
        if not sub:
            d.pop(path[0], None)
