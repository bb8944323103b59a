"""Fixtures: real rusk clusters (a scheduler, a nanny and its workers as processes) started by
``rusk.Client()``. Run through ``bash scripts/test-python.sh`` (or ``.venv/bin/pytest
tests/python`` after ``bash scripts/setup-python.sh``)."""

import os
import time

import pytest

import rusk


@pytest.fixture(scope="session")
def client():
    """One cluster shared by the API tests: 2 workers x 2 threads."""
    with rusk.Client(n_workers=2, threads_per_worker=2) as c:
        yield c


@pytest.fixture
def fresh_client(request):
    """A cluster of its own, for tests that break things. Parametrize indirectly with a dict
    of Client keyword arguments."""
    kwargs = dict(n_workers=2, threads_per_worker=1)
    kwargs.update(getattr(request, "param", {}) or {})
    c = rusk.Client(**kwargs)
    try:
        yield c
    finally:
        c.close()


def wait_until(predicate, timeout=30.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def pytest_report_header(config):
    try:
        return "rusk binary: %s (pid %d)" % (rusk.find_rusk_binary(), os.getpid())
    except FileNotFoundError as e:
        return "rusk binary: %s" % e


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "heavy: moves gigabytes through shared memory (runs by default; -m 'not heavy' skips)",
    )
