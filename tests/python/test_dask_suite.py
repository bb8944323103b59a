"""Dask's own test modules (dask/array/tests/test_reductions.py, dask/bag/tests/test_bag.py, from
the installed dask) with every compute routed to rusk: no test may fail on rusk that does not
also fail with the same routing to Dask distributed's LocalCluster.

The rusk side runs both modules in full (about 2.5 minutes on 2 cores). The full modules take
13-15 minutes on LocalCluster, so the LocalCluster side runs live only the tests that failed
on rusk, which is all the comparison needs: each of them must fail there too.
``DASK_SUITE_FULL=1`` runs LocalCluster over the full modules instead (the figures in
docs/dask-test-modules.md). First, dask_suite/probe_routing.py checks the routing itself under
each target. ``-m "not dask_suite"`` deselects these tests. The routing plugin and the runner
are in tests/python/dask_suite/.
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dask_suite import run as suite  # noqa: E402


def _marker():
    # dask_suite/conftest.py registers the marker when pytest collects tests/python; run alone,
    # this file would warn about an unknown marker.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return pytest.mark.dask_suite


pytestmark = [_marker()]


PROBE = str(Path(__file__).resolve().parent / "dask_suite" / "probe_routing.py")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", ["rusk", "distributed"])
def test_routing_reaches_the_cluster(target):
    """The plugin routes every way of asking for a scheduler to the target's cluster."""
    if target == "distributed":
        pytest.importorskip("distributed")
    out = tempfile.mkdtemp(prefix="dask-suite-probe-")
    r = suite.run_target(target, out, nodeids=[PROBE], timeout=240)
    text = suite.report({target: r})
    assert not r.problems(), text
    assert r.counts()["passed"] == len(r.tests) >= 18, text


@pytest.mark.timeout(2400)
def test_dask_modules_fail_on_rusk_only_where_they_fail_on_localcluster():
    pytest.importorskip("distributed")
    full = os.environ.get("DASK_SUITE_FULL", "") not in ("", "0")
    out = tempfile.mkdtemp(prefix="dask-suite-")
    runs = {"rusk": suite.run_target("rusk", out, timeout=900)}
    rusk_run = runs["rusk"]
    assert not rusk_run.problems(), "\n".join(rusk_run.problems() + [suite.report(runs)])
    # Sanity: both modules were collected and mostly pass (a broken cluster fails everything).
    modules = {k.split("::")[0] for k in rusk_run.tests}
    assert modules == {
        "dask/array/tests/test_reductions.py",
        "dask/bag/tests/test_bag.py",
    }, modules
    assert rusk_run.counts()["passed"] > 700, suite.report(runs)

    failing = sorted(rusk_run.failing())
    if full:
        runs["distributed"] = suite.run_target("distributed", out, timeout=1800)
    elif failing:
        runs["distributed"] = suite.run_target("distributed", out, nodeids=failing, timeout=900)
    text = suite.report(runs)
    print(text)
    if "distributed" not in runs:
        return  # nothing failed on rusk: nothing to compare
    ref = runs["distributed"]
    assert not ref.problems(), "\n".join(ref.problems() + [text])
    only_rusk, _ = suite.compare(rusk_run, ref)
    assert not only_rusk, "%d tests fail on rusk but not on LocalCluster (logs in %s):\n%s" % (
        len(only_rusk),
        out,
        text,
    )
