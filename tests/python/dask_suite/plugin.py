"""A pytest plugin that runs Dask's own tests with every compute routed to one cluster.

Load it with ``-p dask_suite.plugin`` (``tests/python`` on ``PYTHONPATH``) and pick the target
with ``--dask-target`` or ``DASK_SUITE_TARGET``:

- ``rusk``: one ``rusk.Client(n_workers=2, threads_per_worker=1)`` for the whole session;
- ``distributed``: one ``distributed.Client(LocalCluster(n_workers=2, threads_per_worker=1,
  processes=True))`` for the whole session;
- ``none``: no cluster and no routing (Dask's own schedulers), for reference.

Routing: ``dask.base.get_scheduler`` is what ``compute``, ``dask.compute``, ``persist`` and
``compute_as_if_collection`` call to resolve ``scheduler=`` (a name, a callable, an executor, a
client), ``dask.config.set(scheduler=...)``, a default client and a collection's default. It
is replaced by a function that first lets Dask's own resolve the request (so that a request
Dask refuses, such as ``get=`` or an unknown name, still raises as it does in Dask) and then
returns the target client's ``get`` whatever Dask chose. Calls made by the client's own code
while it runs a routed call resolve as in Dask (rusk's ``persist`` calls ``dask.persist`` with
a scheduler of its own). ``dask.get`` (Dask's synchronous scheduler, which some tests call
directly) is replaced by the same routed ``get``. The routed ``get`` carries the client as
``__self__``, as a bound ``client.get`` does, so that ``dask.persist`` uses the client's
``persist``, as it does with a default client.

The check: routed calls are counted, and so are graphs that Dask's local schedulers run anyway
(``dask.local.get_async``, which the sync, threaded and multiprocessing schedulers share,
called outside the client's code). A session whose tests ran but routed nothing fails (exit
status 3) with a message, so that a silent fall-back to Dask's local schedulers cannot pass
for a result; so does a cluster that no longer runs a task at the end of the session.

Outcomes go to ``--dask-suite-json PATH`` (or ``DASK_SUITE_JSON``) as JSON lines, written as
tests finish: first ``{"kind": "start", ...}``; then per test ``{"kind": "test", "nodeid",
"outcome", "duration", "message", "routed", "escaped"}`` (outcome: passed, failed, error,
skipped, xfailed, xpassed; ``message``: the error's one-line summary or the skip reason;
``routed``/``escaped``: the test's routed calls and graphs run locally); last ``{"kind":
"finish", "wall", "routed_calls", "escaped", "healthy", "problem", ...}``. A run that dies
leaves the lines written so far.
"""

import json
import os
import sys
import threading
import time

import pytest

TARGETS = ("rusk", "distributed", "none")

_state = {
    "target": None,
    "client": None,
    "cluster": None,
    "routed": 0,  # calls of the routed get (compute, dask.get, compute_as_if_collection)
    "escaped": 0,  # graphs run by Dask's local schedulers anyway (get_async), outside the client
    "orig_get_async": {},
    "resolved": 0,  # scheduler resolutions routed (dask.get and persist do not resolve)
    "orig_get_scheduler": None,
    "orig_dask_get": None,
    "out": None,
    "t0": None,
    "lock": threading.Lock(),
    "tests": {},
}


def pytest_addoption(parser):
    group = parser.getgroup("dask_suite", "routing Dask computes to one cluster")
    group.addoption(
        "--dask-target",
        choices=TARGETS,
        default=os.environ.get("DASK_SUITE_TARGET"),
        help="rusk, distributed or none (env DASK_SUITE_TARGET)",
    )
    group.addoption(
        "--dask-suite-json",
        default=os.environ.get("DASK_SUITE_JSON"),
        help="write per-test outcomes to this file as JSON lines (env DASK_SUITE_JSON)",
    )


def _start_client(target):
    if target == "rusk":
        import rusk

        client = rusk.Client(n_workers=2, threads_per_worker=1)
        return client, None
    if target == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        return Client(cluster), cluster
    return None, None


def _describe_client(target, client):
    if target == "rusk":
        import rusk

        return "rusk %s (binary %s), %s" % (
            rusk.__version__,
            rusk.find_rusk_binary(),
            client.nthreads(),
        )
    if target == "distributed":
        import distributed

        return "distributed %s, %s" % (distributed.__version__, client.nthreads())
    return "no cluster: Dask's own schedulers"


_inside = threading.local()  # set while the target client's own code runs


class _Inside:
    """While the target client runs a routed call, Dask calls made by the client's own code
    (rusk's persist calls ``dask.persist`` with a scheduler of its own) resolve as in Dask."""

    def __enter__(self):
        self.prev = getattr(_inside, "depth", 0)
        _inside.depth = self.prev + 1

    def __exit__(self, *exc):
        _inside.depth = self.prev


class _PersistingClient:
    """What the routed ``get`` gives as its ``__self__``: the client, with ``persist`` counted
    and marked as the client's own code."""

    def __init__(self, client):
        self._client = client

    def persist(self, *args, **kwargs):
        with _state["lock"]:
            _state["routed"] += 1
        with _Inside():
            return self._client.persist(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def _make_routed_get(client):
    def routed_get(dsk, keys, **kwargs):
        with _state["lock"]:
            _state["routed"] += 1
        with _Inside():
            return client.get(dsk, keys, **kwargs)

    # As a bound client.get has it: dask.persist looks at __self__ for a client's persist.
    routed_get.__self__ = _PersistingClient(client)
    routed_get.__name__ = "routed_get[%s]" % _state["target"]
    return routed_get


def _install_routing(client):
    import dask
    import dask.base

    routed_get = _make_routed_get(client)
    orig = dask.base.get_scheduler
    _state["orig_get_scheduler"] = orig
    _state["orig_dask_get"] = dask.get

    def get_scheduler(get=None, scheduler=None, collections=None, cls=None):
        # Dask's own resolution first: what it refuses (get=, an unknown name, "distributed"
        # without a distributed client) raises here as it would without routing.
        chosen = orig(get=get, scheduler=scheduler, collections=collections, cls=cls)
        if getattr(_inside, "depth", 0):
            return chosen  # the client's own use of Dask, not a test's
        with _state["lock"]:
            _state["resolved"] += 1
        return routed_get

    get_scheduler.__wrapped__ = orig
    dask.base.get_scheduler = get_scheduler
    dask.get = routed_get

    # The check: Dask's local schedulers (sync, threads, processes) all run graphs through
    # dask.local.get_async; a call of it outside the client's own code is a compute that
    # escaped the routing.
    import dask.local
    import dask.multiprocessing
    import dask.threaded

    for mod in (dask.local, dask.threaded, dask.multiprocessing):
        orig_async = mod.get_async
        _state["orig_get_async"][mod] = orig_async
        mod.get_async = _counting_get_async(orig_async)


def _counting_get_async(orig_async):
    def get_async(*args, **kwargs):
        if not getattr(_inside, "depth", 0):
            with _state["lock"]:
                _state["escaped"] += 1
        return orig_async(*args, **kwargs)

    get_async.__wrapped__ = orig_async
    return get_async


def _remove_routing():
    import dask
    import dask.base

    if _state["orig_get_scheduler"] is not None:
        dask.base.get_scheduler = _state["orig_get_scheduler"]
        dask.get = _state["orig_dask_get"]
        _state["orig_get_scheduler"] = None
    for mod, orig_async in _state["orig_get_async"].items():
        mod.get_async = orig_async
    _state["orig_get_async"] = {}


def _write(record):
    out = _state["out"]
    if out is None:
        return
    out.write(json.dumps(record, default=str) + "\n")
    out.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    target = config.getoption("--dask-target")
    if target is None:
        return
    if getattr(config, "workerinput", None) is not None:
        raise pytest.UsageError("dask_suite: run without xdist (one cluster per session)")
    _state["target"] = target
    path = config.getoption("--dask-suite-json")
    if path:
        _state["out"] = open(path, "w")
    t = time.monotonic()
    client, cluster = _start_client(target)
    _state["client"], _state["cluster"] = client, cluster
    startup = time.monotonic() - t
    if client is not None:
        _install_routing(client)
    _state["t0"] = time.monotonic()
    import dask

    _write(
        {
            "kind": "start",
            "target": target,
            "client": _describe_client(target, client),
            "dask": dask.__version__,
            "python": sys.version.split()[0],
            "startup": round(startup, 3),
        }
    )


def pytest_report_header(config):
    target = _state["target"]
    if target is None:
        return None
    return "dask_suite: every compute routed to %s: %s" % (
        target,
        _describe_client(target, _state["client"]),
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _state["target"] is None:
        yield
        return
    before = _state["routed"], _state["escaped"]
    yield
    rec = _state["tests"].pop(item.nodeid, None)
    if rec is not None:
        rec["routed"] = _state["routed"] - before[0]
        rec["escaped"] = _state["escaped"] - before[1]
        _write(rec)


def _message(report):
    lr = report.longrepr
    if lr is None:
        return getattr(report, "wasxfail", "") or ""
    if isinstance(lr, tuple) and len(lr) == 3:  # a skip: (path, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        msg = crash.message
    else:
        msg = str(lr).strip().splitlines()[-1] if str(lr).strip() else ""
    return msg.strip()[:2000]


def pytest_runtest_logreport(report):
    if _state["target"] is None:
        return
    rec = _state["tests"].setdefault(
        report.nodeid,
        {"kind": "test", "nodeid": report.nodeid, "outcome": None, "duration": 0.0, "message": ""},
    )
    rec["duration"] = round(rec["duration"] + report.duration, 4)
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail:
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
        rec["outcome"] = outcome
        if outcome != "passed":
            rec["message"] = _message(report)
        if outcome == "xpassed":
            rec["message"] = report.wasxfail
    elif report.when == "setup":
        if report.failed:
            rec["outcome"], rec["message"] = "error", _message(report)
        elif report.skipped:
            rec["outcome"] = "xfailed" if xfail else "skipped"
            rec["message"] = _message(report)
    elif report.when == "teardown" and report.failed:
        if rec["outcome"] in (None, "passed"):
            rec["outcome"] = "error"
            rec["message"] = "teardown: " + _message(report)


def pytest_sessionfinish(session, exitstatus):
    target = _state["target"]
    if target is None:
        return
    wall = time.monotonic() - _state["t0"] if _state["t0"] else 0.0
    routed = _state["routed"]
    problem = None
    if target != "none" and session.testscollected and routed == 0:
        problem = (
            "dask_suite: %d tests ran against target %r but not one compute was routed to it: "
            "the routing is broken, these results say nothing about %s"
            % (session.testscollected, target, target)
        )
    healthy = None
    if _state["client"] is not None and problem is None:
        # The cluster must still answer after the whole module.
        try:
            healthy = _state["client"].submit(sum, [1, 2], pure=False).result(timeout=60) == 3
        except Exception as e:  # noqa: BLE001 - reported, not raised
            healthy = False
            problem = "dask_suite: the %s cluster no longer runs tasks after the session: %r" % (
                target,
                e,
            )
    _write(
        {
            "kind": "finish",
            "target": target,
            "wall": round(wall, 3),
            "routed_calls": _state["routed"],
            "routed_resolutions": _state["resolved"],
            "escaped": _state["escaped"],
            "collected": session.testscollected,
            "exitstatus": int(exitstatus),
            "healthy": healthy,
            "problem": problem,
        }
    )
    if problem is not None:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_sep("!", problem, red=True, bold=True)
        else:
            print(problem, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_terminal_summary(terminalreporter):
    if _state["target"] in (None, "none"):
        return
    terminalreporter.write_line(
        "dask_suite: %d scheduler resolutions and %d get/persist calls routed to %s; "
        "%d graphs ran on Dask's local schedulers anyway"
        % (_state["resolved"], _state["routed"], _state["target"], _state["escaped"])
    )


def pytest_unconfigure(config):
    if _state["target"] is None:
        return
    _remove_routing()
    client, cluster = _state["client"], _state["cluster"]
    _state["client"] = _state["cluster"] = None
    try:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    finally:
        if _state["out"] is not None:
            _state["out"].close()
            _state["out"] = None
