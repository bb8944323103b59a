#!/usr/bin/env python3
"""The `recovery` suite of bench/run: rusk against Dask, time from a fault to a new worker of
that slot running tasks (stdlib only; Dask runs in the benchmark's own venv).

    python3 bench/recovery/suite.py --rusk target/release/rusk --out-dir DIR [--quick]

runs, one after the other (never in parallel: the machine is small and timing matters):

  1. rusk_recovery.py: rusk with default settings, every fault `--runs` times (20);
  2. dask_recovery.py with Dask's default worker TTL (5 minutes): kill -9 and the cut
     connection `--runs` times; a hang (SIGSTOP, blocked event loop) cannot be noticed before
     the TTL check, which runs every TTL, so its runs are capped at `--dask-default-cap` (120 s)
     and the case stops after its first capped run (uncapped, a run on a fresh cluster takes
     about 600 s: its fault comes seconds after the scheduler's start, so the first check, at
     300 s, finds the worker silent for a little less than the TTL);
  3. dask_recovery.py with DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL=5s, `--runs` times, runs
     capped at `--dask-ttl-cap` (60 s), a case stops after 2 capped runs; each fault waits a
     further random 0-5 s so that it falls at a random phase of the TTL check (which runs every
     5 s from the scheduler's start);

then prints the figures as bench/run's TSV lines (suite, figure, value, unit, target,
verdict). The per-run details are kept as JSON in --out-dir. The venv (bench/.venv by default)
is created when missing, with `pip install "distributed==2026.8.*" "dask==2026.8.*"` (the newest
release when that one cannot be installed; the version used is in the figures).

Targets (from the issue, applied to the worst of the rusk runs): a crashed worker (kill -9) back
in service within 1 s, a frozen one (SIGSTOP, blocked event loop) within 5 s. The issue sets
none for a cut connection.

`--report-only` re-prints the figures from the JSON already in --out-dir; `--markdown` prints a
Markdown table instead of TSV lines.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import FAULT_TITLES, FAULTS, log  # noqa: E402

DASK_PIN = ["distributed==2026.8.*", "dask==2026.8.*"]
TARGETS = {"kill9": 1.0, "sigstop": 5.0, "block": 5.0}  # seconds, worst of the rusk runs


# --- running ---

def ensure_venv(venv):
    """The venv's python with `distributed` importable, or None (Dask is then skipped)."""
    py = os.path.join(venv, "bin", "python")
    check = [py, "-c", "import distributed"]
    if os.path.exists(py) and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    log(f"recovery: creating {venv} with {' '.join(DASK_PIN)}")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run(pip + DASK_PIN, stdout=sys.stderr).returncode != 0:
        log("recovery: that version is not installable; taking the newest distributed")
        if subprocess.run(pip + ["distributed", "dask"], stdout=sys.stderr).returncode != 0:
            log("recovery: cannot install distributed; Dask is skipped")
            return None
    return py if subprocess.run(check, capture_output=True).returncode == 0 else None


def run(argv):
    log("recovery: " + " ".join(argv))
    r = subprocess.run(argv, stdout=sys.stderr)
    if r.returncode != 0:
        log(f"recovery: exit code {r.returncode}")
    return r.returncode == 0


def run_all(args, out):
    faults = args.faults
    ok = run([sys.executable, os.path.join(HERE, "rusk_recovery.py"), "--rusk", args.rusk,
              "--runs", str(args.runs), "--cap", str(args.rusk_cap), "--faults", faults,
              "--out", out["rusk"]])
    if args.no_dask:
        return ok
    py = ensure_venv(args.venv)
    if py is None:
        return ok
    dask = [py, os.path.join(HERE, "dask_recovery.py"), "--runs", str(args.runs)]
    # Default TTL: the hangs are capped and run until the first capped run; the other faults
    # are repeated like any case.
    hangs = [f for f in faults.split(",") if f in ("sigstop", "block")]
    others = [f for f in faults.split(",") if f and f not in hangs]
    if others:
        ok &= run(dask + ["--cap", str(args.dask_default_cap), "--faults", ",".join(others),
                          "--out", out["dask-default-a"]])
    if hangs:
        ok &= run(dask + ["--cap", str(args.dask_default_cap), "--stop-after-capped", "1",
                          "--faults", ",".join(hangs), "--seed", "11",
                          "--out", out["dask-default-b"]])
    ok &= run(dask + ["--worker-ttl", "5s", "--phase-spread", "5", "--cap",
                      str(args.dask_ttl_cap), "--stop-after-capped", "2", "--faults", faults,
                      "--out", out["dask-ttl"]])
    return ok


def load(out):
    """{"rusk": result, "dask-default": result, "dask-ttl": result}, whichever exist."""
    data = {}
    for key, path in out.items():
        if os.path.exists(path):
            with open(path) as f:
                data[key] = json.load(f)
    merged = {}
    if "rusk" in data:
        merged["rusk"] = data["rusk"]
    parts = [data[k] for k in ("dask-default-a", "dask-default-b") if k in data]
    if parts:
        merged["dask-default"] = dict(parts[0], cases={})
        for p in parts:
            merged["dask-default"]["cases"].update(p["cases"])
    if "dask-ttl" in data:
        merged["dask-ttl"] = data["dask-ttl"]
    return merged


# --- reporting ---

def secs(x):
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def median_of(runs, key):
    values = [r[key] for r in runs if r.get("outcome") == "recovered" and r.get(key) is not None]
    return statistics.median(values) if values else None


def stat(case, which):
    """A case's median or worst as text: seconds, `>= CAP` or `never`."""
    s = case["summary"]
    if s[which + "_s"] is not None:
        return secs(s[which + "_s"])
    if s["n"] == 0:
        return "error"
    if s["never"]:
        return "never"
    return f">= {s['cap_s']:g}"


def ratio(dask_case, rusk_case, which):
    if dask_case is None or rusk_case is None:
        return "-"
    r = rusk_case["summary"][which + "_s"]
    d = dask_case["summary"]
    if not r:
        return "-"
    if d[which + "_s"] is not None:
        return f"{d[which + '_s'] / r:,.0f}x" if d[which + "_s"] / r >= 10 else \
            f"{d[which + '_s'] / r:.1f}x"
    if d["never"]:
        return "never"
    if d["n"]:
        return f">= {d['cap_s'] / r:,.0f}x"
    return "-"


def nruns(case):
    s = case["summary"]
    extra = f", {s['error']} failed" if s["error"] else ""
    return f"{s['n']}{extra}"


def figures(data):
    """(figure, value, unit, target, verdict) rows."""
    rows = []
    rusk = data.get("rusk", {}).get("cases", {})
    dd = data.get("dask-default", {}).get("cases", {})
    dt = data.get("dask-ttl", {}).get("cases", {})
    dd_label = data.get("dask-default", {}).get("label", "Dask default")
    dt_label = data.get("dask-ttl", {}).get("label", "Dask ttl=5s")
    for fault in FAULTS:
        title = FAULT_TITLES[fault]
        rc = rusk.get(fault)
        if rc:
            target = TARGETS.get(fault)
            worst = rc["summary"]["worst_s"]
            verdict = "-" if target is None else \
                "PASS" if worst is not None and worst <= target and not rc["summary"]["error"] \
                else "MISS"
            rows.append((f"{title}: rusk, median / worst of {nruns(rc)}",
                         f"{stat(rc, 'median')} / {stat(rc, 'worst')}", "s",
                         f"worst <= {target:g} s" if target else "", verdict))
            steps = [("first event", "first_event_s"), ("restarted", "restarted_s"),
                     ("joined", "joined_s")]
            rows.append(("  rusk: fault -> " + " / ".join(n for n, _ in steps)
                         + " (medians)",
                         " / ".join(secs(median_of(rc["runs"], k)) for _, k in steps),
                         "s", "", "-"))
        for label, cases in ((dd_label, dd), (dt_label, dt)):
            c = cases.get(fault)
            if c:
                rows.append((f"{title}: {label}, median / worst of {nruns(c)}",
                             f"{stat(c, 'median')} / {stat(c, 'worst')}", "s", "", "-"))
                if c["summary"]["recovered"]:
                    steps = [("TTL expired", "ttl_expired_s"), ("worker removed", "removed_s"),
                             ("new one registered", "registered_s")]
                    steps = [s for s in steps if median_of(c["runs"], s[1]) is not None]
                    rows.append((f"  {label}: fault -> " + " / ".join(n for n, _ in steps)
                                 + " (medians)",
                                 " / ".join(secs(median_of(c["runs"], k)) for _, k in steps),
                                 "s", "", "-"))
        if rc and (fault in dd or fault in dt):
            for which in ("median", "worst"):
                rows.append((f"{title}: Dask/rusk, {which} (default / ttl=5s)",
                             f"{ratio(dd.get(fault), rc, which)} / "
                             f"{ratio(dt.get(fault), rc, which)}", "", "", "-"))
    base = []
    for key, label in (("rusk", "rusk"), ("dask-default", "Dask")):
        runs = [r for c in data.get(key, {}).get("cases", {}).values() for r in c["runs"]]
        b = median_of(runs, "baseline_s")
        if b is not None:
            base.append(f"{label} {b * 1000:.0f} ms")
    if base:
        rows.append(("probe task on a healthy cluster (median)", ", ".join(base), "", "", "-"))
    return rows


def versions(data):
    v = [data[k]["version"] for k in ("rusk", "dask-ttl", "dask-default") if k in data]
    return "; ".join(dict.fromkeys(v))


def load_range(data):
    loads = [r["load1"] for d in data.values() for c in d["cases"].values() for r in c["runs"]
             if "load1" in r]
    if not loads:
        return ""
    return f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f} " \
           f"(median {statistics.median(loads):.1f})"


def print_tsv(rows, data):
    # bench/run shows `#` lines in the header of its report.
    print(f"# recovery: {versions(data)}")
    if load_range(data):
        print(f"# recovery: {load_range(data)}")
    for row in rows:
        print("\t".join(["recovery", *row]))


def print_markdown(rows, data):
    print(f"Versions: {versions(data)}; {load_range(data)}\n")
    print("| figure | value | unit | target | |")
    print("|---|---:|---|---|---|")
    for f, v, u, t, verdict in rows:
        print(f"| {f.strip()} | {v} | {u} | {t} | {verdict if verdict != '-' else ''} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rusk", help="the rusk binary (required unless --report-only)")
    ap.add_argument("--out-dir", required=True, help="where the JSON results go")
    ap.add_argument("--venv", default=os.path.join(os.path.dirname(HERE), ".venv"))
    ap.add_argument("--quick", action="store_true",
                    help="3 runs, short caps: a smoke test, not a measurement")
    ap.add_argument("--runs", type=int, default=None, help="runs per case (default 20)")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--rusk-cap", type=float, default=30)
    ap.add_argument("--dask-default-cap", type=float, default=None, help="default 120 s")
    ap.add_argument("--dask-ttl-cap", type=float, default=None, help="default 60 s")
    ap.add_argument("--no-dask", action="store_true", help="rusk only")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    quick = args.quick
    args.runs = args.runs or (3 if quick else 20)
    args.dask_default_cap = args.dask_default_cap or (20 if quick else 120)
    args.dask_ttl_cap = args.dask_ttl_cap or (30 if quick else 60)
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        ap.error(f"unknown fault(s) {sorted(unknown)}; known: {','.join(FAULTS)}")

    os.makedirs(args.out_dir, exist_ok=True)
    out = {k: os.path.join(args.out_dir, k + ".json")
           for k in ("rusk", "dask-default-a", "dask-default-b", "dask-ttl")}
    ok = True
    if not args.report_only:
        if not args.rusk:
            ap.error("--rusk is required")
        for path in out.values():
            if os.path.exists(path):
                os.unlink(path)
        ok = run_all(args, out)
    data = load(out)
    rows = figures(data)
    (print_markdown if args.markdown else print_tsv)(rows, data)
    sys.exit(0 if ok and rows else 1)


if __name__ == "__main__":
    main()
