# Registers the marker of tests/python/test_dask_suite.py (pytest loads this file while it
# collects tests/python, before the test modules that sort after "dask_suite").
def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "dask_suite: runs Dask's own test modules routed to rusk and to LocalCluster "
        "(minutes; runs by default; -m 'not dask_suite' skips)",
    )
