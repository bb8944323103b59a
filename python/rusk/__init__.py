"""rusk: a distributed task scheduler with self-healing workers.

>>> import rusk
>>> with rusk.Client(n_workers=2) as client:           # a local cluster of real processes
...     fut = client.submit(pow, 2, 10)
...     fut.result()
1024

``client.get`` is a Dask scheduler: ``dask.compute(x, scheduler=client.get)``.
"""

from ._client import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    CancelledError,
    Client,
    ConnectionLostError,
    Future,
    RemoteTraceback,
    TaskError,
    as_completed,
    wait,
)
from ._cluster import LocalCluster, find_rusk_binary
from ._futures import fire_and_forget, futures_of
from ._progress import progress
from ._task_client import get_client, rejoin, secede, worker_client

__version__ = "0.1.0"

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "Client",
    "ConnectionLostError",
    "Future",
    "get_client",
    "rejoin",
    "secede",
    "worker_client",
    "LocalCluster",
    "RemoteTraceback",
    "TaskError",
    "as_completed",
    "find_rusk_binary",
    "fire_and_forget",
    "futures_of",
    "progress",
    "wait",
]
