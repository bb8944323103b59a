"""Task functions of the data-plane benchmark, shared by the rusk and the Dask side.

A module of its own (not ``__main__``) so that both systems pickle them by reference: rusk's
executors get the client's ``sys.path`` through ``PYTHONPATH``, Dask's spawned workers inherit
it. (Not named ``tasks``: bench/python/tasks.py is imported too.)
"""
import os
import time


def make_left(part, rows, n_right, salt=None):
    """Partition `part` of the left table: `rows` rows, global row i has k = i % n_right and
    x = i, so the inner merge with the right table has every left row once."""
    import numpy as np
    import pandas as pd

    del salt  # only makes the task keys differ from run to run
    i = np.arange(part * rows, (part + 1) * rows, dtype="int64")
    return pd.DataFrame({"k": i % n_right, "x": i.astype("float64")})


def make_right(part, rows, salt=None):
    """Partition `part` of the right table: unique keys k = i and y = 2 i."""
    import numpy as np
    import pandas as pd

    del salt
    i = np.arange(part * rows, (part + 1) * rows, dtype="int64")
    return pd.DataFrame({"k": i, "y": 2.0 * i})


def stencil(a):
    """A 5-point average; the border (the overlap) is left as it is."""
    out = a.copy()
    out[1:-1, 1:-1] = (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]) / 4
    return out


def make_bytes(nbytes, salt=None, _dep=None):
    """A value of `nbytes` bytes (a numpy uint8 array, so both sides can send it without a
    pickle copy where they know how)."""
    import numpy as np

    del salt, _dep
    return np.ones(nbytes, dtype=np.uint8)


def make_raw(nbytes, salt=None):
    """`nbytes` bytes as a Python bytes object."""
    del salt
    return b"\1" * nbytes


def consume(value, t_submit=None):
    """(pid, len(value), wall clock at start): where the consumer ran, what it got, and when its
    inputs had arrived (the client compares that with the time it submitted)."""
    del t_submit
    return os.getpid(), len(value), time.time()


def pid(*_deps):
    return os.getpid()


def wait_for_file(path, _dep=None, limit=120.0):
    """Occupy the worker's thread until `path` exists (at most `limit` seconds)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return os.getpid()


def warm_imports(_i=None):
    """Import what the shapes use, so that the first timed run does not pay for it."""
    import dask.array  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    return os.getpid()


def make_keyed(part, rows, keys, salt=None):
    """Partition `part` of a table of `rows` rows: k = i % keys, v = i (floats)."""
    import numpy as np
    import pandas as pd

    del salt
    i = np.arange(part * rows, (part + 1) * rows, dtype="int64")
    return pd.DataFrame({"k": i % keys, "v": i.astype("float64")})


def make_shuffled(part, rows, salt=None):
    """Partition `part` of a table whose column k is a permutation-like scramble of the row
    numbers (so sorting moves rows between every pair of partitions)."""
    import numpy as np
    import pandas as pd

    del salt
    i = np.arange(part * rows, (part + 1) * rows, dtype="int64")
    return pd.DataFrame({"k": (i * 2654435761) % (1 << 32), "v": i})
