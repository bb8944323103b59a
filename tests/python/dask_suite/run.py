"""Run Dask's own test modules with every compute routed to rusk, and to Dask distributed's
LocalCluster, and compare.

    .venv/bin/python tests/python/dask_suite/run.py                 # both targets, compare
    .venv/bin/python tests/python/dask_suite/run.py --targets rusk  # one target
    .venv/bin/python tests/python/dask_suite/run.py -- -k quantile  # extra pytest arguments

Each target runs in a pytest subprocess of its own (one after the other: the routing plugin,
``dask_suite.plugin``, starts one cluster per session) over the modules of the installed dask
package (``--pyargs``), with ``dask_suite/pytest.ini`` as configuration (not the
repository's). Outcomes, per test, land in ``OUT/<target>.jsonl`` and the pytest output in
``OUT/<target>.log``. The exit status is 1 when a test fails on rusk and not on LocalCluster,
or a run went wrong (crashed, timed out, routed nothing).
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("dask.array.tests.test_reductions", "dask.bag.tests.test_bag")
TARGETS = ("rusk", "distributed")
FAILING = ("failed", "error")
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


class Run:
    """One target's session: its per-test records and what the runner saw."""

    def __init__(self, target, start, finish, tests, returncode, wall, log, timed_out=False):
        self.target = target
        self.start = start  # the plugin's start record, or None
        self.finish = finish  # the plugin's finish record, or None (the run died)
        self.tests = tests  # nodeid -> record
        self.returncode = returncode
        self.wall = wall  # seconds, the whole subprocess (interpreter, collection, cluster)
        self.log = log
        self.timed_out = timed_out

    def counts(self):
        c = collections.Counter(r["outcome"] for r in self.tests.values())
        return {k: c.get(k, 0) for k in OUTCOMES if c.get(k, 0) or k in ("passed", "failed", "skipped")}

    def failing(self):
        return {k: r for k, r in self.tests.items() if r["outcome"] in FAILING}

    def problems(self):
        """What makes this run's outcomes untrustworthy (empty if nothing)."""
        out = []
        if self.timed_out:
            out.append("%s: timed out after %.0f s" % (self.target, self.wall))
        if self.start is None:
            out.append("%s: the routing plugin never started (see %s)" % (self.target, self.log))
        elif self.finish is None:
            out.append("%s: the session died before it finished (see %s)" % (self.target, self.log))
        else:
            if self.finish.get("problem"):
                out.append(self.finish["problem"])
            if self.target != "none" and not (
                self.finish.get("routed_calls") or self.finish.get("routed_resolutions")
            ):
                out.append("%s: no compute was routed to the cluster" % self.target)
            if self.finish.get("escaped"):
                escaped = sorted(k for k, r in self.tests.items() if r.get("escaped"))
                out.append(
                    "%s: %d graphs ran on Dask's local schedulers instead of the cluster, in %s"
                    % (self.target, self.finish["escaped"], ", ".join(escaped) or "no test")
                )
        if self.returncode not in (0, 1) and not out:
            out.append("%s: pytest exited with status %s (see %s)" % (self.target, self.returncode, self.log))
        if not self.tests and not out:
            out.append("%s: no test ran (see %s)" % (self.target, self.log))
        return out

    def summary(self):
        c = self.counts()
        s = ", ".join("%d %s" % (v, k) for k, v in c.items())
        session = self.finish["wall"] if self.finish else float("nan")
        routed = ""
        if self.finish and self.target != "none":
            routed = ", %d computes routed" % self.finish["routed_calls"]
        return "%-11s %s; %.1f s wall (%.1f s in tests)%s" % (
            self.target + ":",
            s,
            self.wall,
            session,
            routed,
        )


def load(target, path, returncode, wall, log, timed_out=False):
    start = finish = None
    tests = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a dying run
            if rec["kind"] == "start":
                start = rec
            elif rec["kind"] == "finish":
                finish = rec
            elif rec["kind"] == "test":
                tests[rec["nodeid"]] = rec
    return Run(target, start, finish, tests, returncode, wall, log, timed_out)


def site_packages():
    import dask

    return str(Path(dask.__file__).resolve().parent.parent)


def run_target(
    target, out_dir, modules=MODULES, extra=(), timeout=1800, python=None, echo=False, nodeids=None
):
    """Run ``modules`` (or only the tests ``nodeids``, as the runs report them) under ``target``
    in a pytest subprocess; a :class:`Run`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / ("%s.jsonl" % target)
    log = out_dir / ("%s.log" % target)
    if jsonl.exists():
        jsonl.unlink()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("DASK_SUITE_TARGET", None)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    cmd = [
        python or sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-c",
        str(HERE / "pytest.ini"),
        "--rootdir",
        site_packages(),
        "-p",
        "dask_suite.plugin",
        "--dask-target",
        target,
        "--dask-suite-json",
        str(jsonl),
        *extra,
    ]
    if nodeids is not None:
        cmd += [os.path.join(site_packages(), n) for n in nodeids]
    else:
        cmd += ["--pyargs", *modules]
    t = time.monotonic()
    timed_out = False
    with open(log, "w") as f, tempfile.TemporaryDirectory(prefix="dask-suite-cwd-") as cwd:
        f.write("$ %s\n" % " ".join(cmd))
        f.flush()
        p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=None if echo else f,
            stderr=subprocess.STDOUT if not echo else None,
            start_new_session=True,
        )
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGTERM)
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
    return load(target, jsonl, rc, time.monotonic() - t, log, timed_out)


def compare(rusk, ref):
    """``(only_rusk, only_ref)``: the tests failing (failed or error) on ``rusk`` but not on
    ``ref``, and the other way round; each a list of (nodeid, rusk record, ref record or None).
    A test ``ref`` did not run counts as not failing there."""
    a, b = rusk.failing(), ref.failing()
    only_rusk = [(k, a[k], ref.tests.get(k)) for k in sorted(a) if k not in b]
    only_ref = [(k, rusk.tests.get(k), b[k]) for k in sorted(b) if k not in a]
    return only_rusk, only_ref


def _line(rec):
    if rec is None:
        return "not run"
    msg = (rec.get("message") or "").splitlines()
    return "%s%s" % (rec["outcome"], (": " + msg[0][:300]) if msg else "")


def report(runs):
    """Text: the figures per target, the failing tests, and the differences."""
    lines = ["Dask test modules with every compute routed to a cluster:"]
    for r in runs.values():
        lines.append("  " + r.summary())
        for p in r.problems():
            lines.append("  !! " + p)
    for r in runs.values():
        failing = r.failing()
        lines.append("failing on %s (%d):" % (r.target, len(failing)))
        for k, rec in sorted(failing.items()):
            lines.append("  %s -- %s" % (k, _line(rec)))
    if "rusk" in runs and "distributed" in runs:
        only_rusk, only_ref = compare(runs["rusk"], runs["distributed"])
        lines.append("failing on rusk but not on LocalCluster (%d):" % len(only_rusk))
        for k, a, b in only_rusk:
            lines.append("  %s\n      rusk: %s\n      LocalCluster: %s" % (k, _line(a), _line(b)))
        lines.append("failing on LocalCluster but not on rusk (%d):" % len(only_ref))
        for k, a, b in only_ref:
            lines.append("  %s\n      LocalCluster: %s\n      rusk: %s" % (k, _line(b), _line(a)))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: rusk, distributed, none")
    ap.add_argument("--modules", nargs="+", default=list(MODULES), help="test modules (dotted, --pyargs)")
    ap.add_argument("--out", default=None, help="directory for <target>.jsonl and <target>.log")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per target")
    ap.add_argument("--echo", action="store_true", help="show pytest's output instead of logging it")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="dask-suite-")
    runs = {}
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        print("== %s ..." % target, flush=True)
        runs[target] = run_target(target, out, args.modules, args.pytest_args, args.timeout, echo=args.echo)
        print("   " + runs[target].summary(), flush=True)
    print(report(runs))
    print("outcomes and logs: %s" % out)
    bad = any(r.problems() for r in runs.values())
    if "rusk" in runs and "distributed" in runs and compare(runs["rusk"], runs["distributed"])[0]:
        bad = True
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
