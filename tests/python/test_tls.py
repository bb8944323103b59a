"""The Python client on a cluster that encrypts (``--tls on``): every path a value takes (task
results moved between workers, scatter, gather of large values, a task's own client) goes over
TLS, and a client without the cluster's TLS is told the cluster requires it."""

import os

import numpy as np
import pytest

import rusk


@pytest.fixture(scope="module")
def tls_cluster():
    cluster = rusk.LocalCluster(n_workers=2, threads_per_worker=1, scheduler_args=["--tls", "on"])
    try:
        yield cluster
    finally:
        cluster.close()


def total(xs):
    return sum(xs)


def nested(n):
    # The task's own client connects over TLS with what its worker gave the executor.
    c = rusk.get_client()
    return sum(c.gather(c.map(lambda x: x * 2, range(n))))


def test_the_cluster_encrypts_and_says_so_in_its_scheduler_file(tls_cluster):
    assert tls_cluster.tls is not None and "ca_key_pem" in tls_cluster.tls
    assert tls_cluster.dashboard_link is None or tls_cluster.dashboard_link.startswith("https://")


def test_values_move_between_workers_and_to_the_client_over_tls(tls_cluster):
    with rusk.Client(tls_cluster) as c:
        parts = c.map(lambda i: np.full(1 << 20, i, dtype=np.float64), range(8))
        # Sums on both workers need parts from the other: worker-to-worker transfers.
        s = c.submit(lambda xs: float(sum(x.sum() for x in xs)), parts)
        assert s.result(60) == float(sum(i * (1 << 20) for i in range(8)))
        # A large value gathered by the client, and one scattered to a worker.
        big = c.submit(lambda: np.arange(8 << 20, dtype=np.uint8), pure=False)
        assert np.array_equal(big.result(60), np.arange(8 << 20, dtype=np.uint8))
        [f] = c.scatter([np.ones(4 << 20)])
        assert c.submit(lambda a: float(a.sum()), f).result(60) == float(4 << 20)
        assert c.submit(nested, 20).result(60) == sum(x * 2 for x in range(20))


def test_dask_collections_run_over_tls(tls_cluster):
    da = pytest.importorskip("dask.array")
    with rusk.Client(tls_cluster) as c:
        x = da.ones((2000, 2000), chunks=(500, 500))
        assert c.compute((x + x.T).sum()).result(60) == 2 * 2000 * 2000


def test_a_client_without_the_clusters_tls_is_told_it_is_required(tls_cluster, monkeypatch):
    for name in ("RUSK_TLS", "RUSK_TLS_CA", "RUSK_TLS_CERT", "RUSK_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exception) as e:
        rusk.Client(tls_cluster.address, token=tls_cluster.token, timeout=10)
    assert "requires TLS" in str(e.value)


def test_joining_by_scheduler_file_brings_the_tls_along(tls_cluster):
    assert os.path.exists(tls_cluster.scheduler_file)
    with rusk.Client(tls_cluster.scheduler_file) as c:
        assert c.submit(total, [1, 2, 3]).result(30) == 6
