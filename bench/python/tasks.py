"""Task functions of the Python benchmark, shared by the rusk and the Dask side.

They live in a module of their own (not in ``__main__``) so that both systems pickle them by
reference, the same way: rusk's executors and Dask's worker processes import this module
(``bench/python`` is on their ``sys.path``: rusk passes the client's ``sys.path`` on through
``PYTHONPATH``, Dask's spawned workers inherit it from the parent).
"""
import os
import time


def noop(x):
    return x


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def hang(seconds=600):
    """Hold the GIL in a C call: ``sleep(3)`` through ``ctypes.PyDLL``, which (unlike ``CDLL``)
    does not release the GIL. Nothing else in the process runs Python meanwhile: not rusk's
    executor ping thread, not a Dask worker's event loop (its heartbeats)."""
    import ctypes

    ctypes.PyDLL(None).sleep(int(seconds))
    return "woke up"


def probe(seconds):
    """Sleep, then say which process ran this (a rusk executor's or a Dask worker's pid)."""
    time.sleep(seconds)
    return os.getpid()


def sleep(seconds):
    """Sleep (releasing the GIL), return the duration: the `uneven` benchmark's task."""
    time.sleep(seconds)
    return seconds


def nbytes(array):
    """The size of an array (the `scatter` benchmark's check)."""
    return array.nbytes
