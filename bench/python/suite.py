"""The `python` suite of bench/run: rusk's Python client against Dask distributed, same machine,
same run, 2 worker processes x 1 thread on both sides, medians of 5 (stdlib only; both sides run
in the benchmark's venv).

  1. map     client.map of 10,000 no-op functions, then client.gather     target: Dask/rusk >= 5
  2. tree    a tree reduction over 4,096 dask.delayed leaves (8,191 tasks)  target: Dask/rusk >= 25
             and rusk's client share (dask.compute until the graph is submitted, over the wall
             time)                                                          target: < 25 %
  3. array   da.random.random((20000, 20000), chunks=(1000, 1000)).sum()
             through client.get                                            target: Dask/rusk >= 1
  4. hang    a task holding the GIL (ctypes.PyDLL(None).sleep(600)): wall time from its
             submission until it has failed and both slots run tasks again target: rusk faster
             than Dask, with Dask's default worker-ttl (capped) and with worker-ttl=5s
  5. persist client.persist of random((8000, 8000), chunks 1000), then 10 reductions over it
             (total time of the 10)                                         target: Dask/rusk > 1
  6. map100k client.map of 100,000 no-ops + gather                          target: Dask/rusk > 1
  7. uneven  1,000 tasks sleeping 1-100 ms (seeded), one client.map, then gather: makespan and
             p99 completion latency                            target: rusk makespan <= Dask's
             (rusk with and without work stealing once the scheduler has a switch: see
             NO_STEALING_ENV)
  8. scatter client.scatter of a 1 GiB numpy array                          target: Dask/rusk > 1
             (MISS while rusk.Client has no scatter)

Prints tab-separated figure lines (suite, figure, value, unit, target, verdict) on stdout,
progress on stderr; the raw timings are kept as JSON in --out-dir.

The venv (bench/.venv by default, shared with the recovery suite) is created if missing; what
is missing of distributed/dask[array] 2026.8.*, numpy and cloudpickle is installed, and the rusk
package is built as a wheel (`maturin build --release`, with the repository's .venv/bin/maturin;
`bash scripts/setup-python.sh` is run first if that is missing) and reinstalled on every run, so
client and executors use one interpreter (cloudpickle needs the same Python on both ends). The
rusk binary is copied to a temporary directory first, so a rebuild during the run does not
change it half-way.
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PINS = ["distributed==2026.8.*", "dask[array]==2026.8.*", "numpy", "cloudpickle"]
UNPINNED = ["distributed", "dask[array]", "numpy", "cloudpickle"]
CHECK = "import distributed, dask.array, numpy, cloudpickle"

TITLES = {
    "map": "map 10,000 no-ops + gather",
    "tree": "tree reduction, 4,096 delayed leaves",
    "array": "random((20000, 20000), chunks 1000).sum()",
    "persist": "persisted random((8000, 8000), chunks 1000): 10 reductions",
    "map100k": "map 100,000 no-ops + gather",
    "uneven": "1,000 tasks of 1-100 ms: makespan",
    "scatter": "scatter of a 1 GiB numpy array",
}
# Dask/rusk: (target, strict): >= target, or > target when strict ("ahead of Dask").
TARGETS = {
    "map": (5.0, False),
    "tree": (25.0, False),
    "array": (1.0, False),
    "persist": (1.0, True),
    "map100k": (1.0, True),
    "uneven": (1.0, False),  # rusk's makespan <= Dask's
    "scatter": (1.0, True),
}
THROUGHPUT = ["map", "tree", "array", "persist", "map100k", "uneven", "scatter"]
CLIENT_SHARE_TARGET = 0.25  # tree: rusk's client share of the wall time, below this

# Timed runs of the long throughput benchmarks (the others take --reps): uneven takes ~26 s a
# run on either side; map100k takes Dask several minutes.
# Dask takes 15-17 s a run for map and tree, several minutes for map100k (one run).
LONG_REPS = {"uneven": 3, "map100k": 3}
LONG_REPS_DASK = {"map100k": 1, "map": 3, "tree": 3}
MAP_BIG_QUICK = 20_000

# The `uneven` figure is measured on rusk with and without work stealing: this environment turns
# it off in the scheduler rusk.Client starts (`rusk scheduler --no-work-stealing`).
NO_STEALING_ENV = {"RUSK_NO_WORK_STEALING": "true"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- preparing the venv ---


def pip(py, *args):
    cmd = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    log("python: " + " ".join(cmd[3:]))
    return subprocess.run(cmd, stdout=sys.stderr).returncode == 0


def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        log(f"python: creating {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    if subprocess.run([py, "-c", CHECK], capture_output=True).returncode != 0:
        if not pip(py, *PINS):
            log("python: Dask 2026.8 is not installable here; taking the newest")
            if not pip(py, *UNPINNED):
                raise SystemExit("python: cannot install Dask into " + venv)
    return py


def install_rusk(py, wheel_dir):
    maturin = os.path.join(ROOT, ".venv", "bin", "maturin")
    if not os.path.exists(maturin):
        log("python: no .venv/bin/maturin; running scripts/setup-python.sh")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup-python.sh")], check=True,
                       stdout=sys.stderr)
    cmd = [maturin, "build", "--release", "--locked", "--out", wheel_dir, "-i", py]
    log("python: " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=sys.stderr,
                   env=dict(os.environ, PYO3_PYTHON=py))
    wheels = glob.glob(os.path.join(wheel_dir, "rusk-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"python: expected one rusk wheel in {wheel_dir}, found {wheels}")
    if not pip(py, "--force-reinstall", "--no-deps", wheels[0]):
        raise SystemExit("python: cannot install " + wheels[0])


def versions(py):
    code = ("import sys, dask, distributed, numpy, cloudpickle, rusk; print(sys.version.split()[0], "
            "dask.__version__, distributed.__version__, numpy.__version__, cloudpickle.__version__, "
            "rusk.__version__)")
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    keys = ["python", "dask", "distributed", "numpy", "cloudpickle", "rusk"]
    return dict(zip(keys, out))


# --- running the sides ---


def run_side(py, env, out, *args):
    cmd = [py, os.path.join(HERE, "workload.py"), "--out", out, *args]
    log("python: " + " ".join(cmd[1:]))
    r = subprocess.run(cmd, stdout=sys.stderr, env=env)
    if r.returncode != 0 or not os.path.exists(out):
        log(f"python: failed (exit code {r.returncode})")
        return None
    with open(out) as f:
        return json.load(f)


def binary_mentions_stealing(rusk_bin):
    for sub in ("scheduler", "local"):
        try:
            r = subprocess.run([rusk_bin, sub, "--help"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "steal" in (r.stdout + r.stderr).lower():
            return True
    return False


def reps_for(args, table):
    out = []
    for name, n in table.items():
        out += ["--reps-for", f"{name}={1 if args.quick else min(n, args.reps)}"]
    return out


def run_all(args, py, env):
    reps = str(args.reps)
    benches = args.benches.split(",")
    throughput = ["--bench", "throughput", "--reps", reps, "--only", ",".join(benches)]
    long_reps = reps_for(args, LONG_REPS)
    if args.quick:
        throughput += ["--map-big", str(MAP_BIG_QUICK)]
    runs = {
        "rusk": ["--system", "rusk", *throughput, *long_reps],
        "dask": ["--system", "dask", *throughput, *long_reps,
                 *reps_for(args, LONG_REPS_DASK)],
        "hang-rusk": ["--system", "rusk", "--bench", "hang", "--reps", reps,
                      "--cap", str(args.rusk_cap)],
        "hang-rusk-5s": ["--system", "rusk", "--bench", "hang", "--reps", reps,
                         "--cap", str(args.rusk_cap), "--hang-timeout", "5s"],
        "hang-dask-ttl": ["--system", "dask", "--bench", "hang", "--reps", reps,
                          "--cap", str(args.dask_ttl_cap), "--worker-ttl", "5s"],
        "hang-dask-default": ["--system", "dask", "--bench", "hang", "--reps", reps,
                              "--cap", str(args.dask_default_cap)],
    }
    if NO_STEALING_ENV is not None and "uneven" in benches:
        runs["rusk-nosteal"] = ["--system", "rusk", "--bench", "throughput", "--reps", reps,
                                "--only", "uneven", *long_reps,
                                *[f"--rusk-env={k}={v}" for k, v in NO_STEALING_ENV.items()]]
    elif binary_mentions_stealing(env["RUSK_BIN"]):
        log("python: WARNING: this rusk binary has a work-stealing switch, but NO_STEALING_ENV in "
            "bench/python/suite.py is not set: uneven is measured with the default only (TODO)")
    data = {}
    for name in args.only.split(","):
        if name not in runs:
            log(f"python: skipping {name} (no work-stealing switch configured: NO_STEALING_ENV)")
            continue
        data[name] = run_side(py, env, os.path.join(args.out_dir, name + ".json"), *runs[name])
    return data


# --- report ---


def secs(x):
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def ratio_text(r):
    return f"{r:,.1f}" if r >= 10 else f"{r:.2f}"


def pct(x):
    return f"{100 * x:.1f}"


def target_text(name):
    t, strict = TARGETS[name]
    if name == "uneven":
        return ">= 1 (rusk's makespan <= Dask's)"
    if strict:
        return f"> {t:g} (rusk ahead)"
    return f">= {t:g}" + (" (no slower)" if t == 1 else "")


def meets(name, q):
    t, strict = TARGETS[name]
    return q > t if strict else q >= t


def figures(data, args):
    """(figure, value, unit, target, verdict) rows."""
    rows = []
    rusk, dask = data.get("rusk"), data.get("dask")
    nosteal = data.get("rusk-nosteal")
    for name in THROUGHPUT:
        r = rusk and rusk["benches"].get(name)
        d = dask and dask["benches"].get(name)
        if not r and not d:
            continue
        t = TITLES[name]
        n_big = (r or d or {}).get("n")
        if name == "map100k" and n_big and n_big != 100_000:
            t = f"map {n_big:,} no-ops + gather (map100k at a --quick size)"
        rusk_label = "rusk" if name != "uneven" else "rusk (default scheduler)"
        for label, b in ((rusk_label, r), ("Dask", d)):
            if b and "missing" in b:
                rows.append((f"{t}: {label}: not implemented ({b['missing']})", "-", "s", "", "-"))
            elif b:
                rows.append((f"{t}: {label}, median of {len(b['runs_s'])} (min / max)",
                             f"{secs(b['median_s'])} ({secs(b['min_s'])} / {secs(b['max_s'])})",
                             "s", "", "-"))
        ok_r = r and "missing" not in r
        ok_d = d and "missing" not in d
        if ok_r and name in ("map", "map100k"):
            rows.append((f"  rusk: map() call / gather(), medians",
                         f"{secs(r['submit_median_s'])} / {secs(r['gather_median_s'])}", "s", "",
                         "-"))
        if name == "tree":
            if ok_r and "client_share_median" in r:
                share = r["client_share_median"]
                rows.append((f"{t}: rusk client share (dask.compute to graph submitted, "
                             f"{secs(r['client_median_s'])} s, over the wall time)", pct(share),
                             "%", f"< {pct(CLIENT_SHARE_TARGET)}",
                             "PASS" if share < CLIENT_SHARE_TARGET else "MISS"))
            if ok_d and "client_share_median" in d:
                rows.append((f"  Dask client share (to _graph_to_futures returned, "
                             f"{secs(d['client_median_s'])} s)",
                             pct(d["client_share_median"]), "%", "", "-"))
        if name == "persist":
            sides = [(label, b) for label, b in (("rusk", r), ("Dask", d))
                     if b and "persist_median_s" in b]
            if sides:
                rows.append(("  persist + wait (not in the figure): " +
                             " / ".join(label for label, _ in sides),
                             " / ".join(secs(b["persist_median_s"]) for _, b in sides), "s", "",
                             "-"))
        if name == "uneven":
            for label, b in ((rusk_label, r), ("rusk without work stealing", nosteal and
                             nosteal["benches"].get("uneven")), ("Dask", d)):
                if b and "p99_median_s" in b:
                    rows.append((f"1,000 tasks of 1-100 ms: {label}: completion latency p50 / p99",
                                 f"{secs(b['p50_median_s'])} / {secs(b['p99_median_s'])}",
                                 "s", "", "-"))
            bound = next((b["busy_lower_bound_median_s"] for b in (r, d) if b and
                          "busy_lower_bound_median_s" in b), None)
            if bound is not None:
                rows.append(("  lower bound of the makespan (sum of the durations / 2)",
                             secs(bound), "s", "", "-"))
        if ok_r and ok_d:
            q = d["median_s"] / r["median_s"]
            rows.append((f"{t}: Dask/rusk", ratio_text(q), "x", target_text(name),
                         "PASS" if meets(name, q) else "MISS"))
        elif (r or d) and name in TARGETS:
            why = "rusk: not implemented" if r and "missing" in r else "a side is missing"
            rows.append((f"{t}: Dask/rusk ({why})", "-", "x", target_text(name), "MISS"))
        if name == "uneven":
            ns = nosteal and nosteal["benches"].get("uneven")
            if ns and ok_d:
                q = d["median_s"] / ns["median_s"]
                rows.append((f"{t}: rusk without work stealing, median of {len(ns['runs_s'])}",
                             secs(ns["median_s"]), "s", "", "-"))
                rows.append((f"{t}: Dask/rusk without work stealing", ratio_text(q), "x", "", "-"))
            elif ok_r and NO_STEALING_ENV is None:
                rows.append((f"{t}: rusk without work stealing: not measured (TODO: no switch "
                             "yet, see NO_STEALING_ENV)", "-", "s", "", "-"))
            if ok_r and ok_d:
                q = d["p99_median_s"] / r["p99_median_s"]
                rows.append(("1,000 tasks of 1-100 ms: p99 completion latency, Dask/rusk",
                             ratio_text(q), "x", "", "-"))
    hr, hr5 = data.get("hang-rusk"), data.get("hang-rusk-5s")
    hd, hdt = data.get("hang-dask-default"), data.get("hang-dask-ttl")

    def hang_value(h):
        if h["median_s"] is not None:
            return secs(h["median_s"])
        return f">= {h['cap_s']:g}"

    def hang_row(label, h):
        det = h.get("detected_median_s")
        runs = len(h["runs"])
        capped = f", {h['capped_runs']} capped" if h["capped_runs"] else ""
        rows.append((f"GIL-holding task recovered: {label}, median of {runs}{capped}",
                     hang_value(h), "s", "", "-"))
        if det is not None:
            rows.append((f"  {label}: hang's future failed (detected), median", secs(det), "s",
                         "", "-"))

    def hang_ratio(label, d, r, target):
        if r["median_s"] is None:
            rows.append((f"GIL-holding task: {label}", "-", "x", "> 1" if target else "",
                         "MISS" if target else "-"))
            return
        if d["median_s"] is None:
            value, ok = f">= {d['cap_s'] / r['median_s']:.1f}", True
        else:
            q = d["median_s"] / r["median_s"]
            value, ok = ratio_text(q), q > 1
        rows.append((f"GIL-holding task: {label}", value, "x", "> 1 (rusk faster)" if target else "",
                     ("PASS" if ok else "MISS") if target else "-"))

    if hr:
        hang_row("rusk (executor hang timeout 6 s, default)", hr)
    if hd:
        hang_row("Dask, default worker-ttl (5 min)", hd)
    if hdt:
        hang_row("Dask, worker-ttl=5s", hdt)
    if hr5:
        hang_row("rusk, RUSK_EXECUTOR_HANG_TIMEOUT=5s", hr5)
    if hr and hd:
        hang_ratio("Dask default / rusk default", hd, hr, True)
    if hr and hdt:
        hang_ratio("Dask worker-ttl=5s / rusk default", hdt, hr, True)
    if hr5 and hdt:
        hang_ratio("Dask worker-ttl=5s / rusk hang timeout 5s (like for like)", hdt, hr5, False)
    v = data.get("versions")
    if v:
        names = ["python", "distributed", "dask", "numpy", "cloudpickle"]
        rows.append(("versions: " + " / ".join(names), " / ".join(v[k] for k in names), "", "",
                     "-"))
    return rows


def load_results(out_dir):
    """{name: data} of the NAME.json files in `out_dir`."""
    data = {}
    for path in glob.glob(os.path.join(out_dir, "*.json")):
        with open(path) as f:
            data[os.path.basename(path)[:-5]] = json.load(f)
    return data


def print_tsv(rows):
    for row in rows:
        print("\t".join(["python", *row]), flush=True)


def print_markdown(rows):
    print("| figure | value | unit | target | |")
    print("|---|---:|---|---|---|")
    for f, v, u, t, verdict in rows:
        print(f"| {f.strip()} | {v} | {u} | {t} | {verdict if verdict != '-' else ''} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rusk", help="the rusk binary (default: target/release/rusk)")
    ap.add_argument("--out-dir", required=True, help="where the JSON results go")
    ap.add_argument("--venv", default=os.path.join(os.path.dirname(HERE), ".venv"))
    ap.add_argument("--quick", action="store_true",
                    help="1 run each, short caps: a smoke test, not a measurement")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed runs per figure (default 5; uneven and map100k at most 3, "
                    "map100k on Dask 1)")
    ap.add_argument("--only", default="rusk,dask,rusk-nosteal,hang-rusk,hang-dask-ttl,"
                    "hang-dask-default,hang-rusk-5s",
                    help="which of the runs (comma-separated; rusk and dask are the throughput "
                    "benchmarks 1-3 and 5-8, rusk-nosteal is uneven without work stealing, "
                    "the hang-* runs are 4)")
    ap.add_argument("--benches", default=",".join(THROUGHPUT),
                    help="which throughput benchmarks the rusk and dask runs do "
                    "(comma-separated, default %(default)s)")
    ap.add_argument("--rusk-cap", type=float, default=60)
    ap.add_argument("--dask-ttl-cap", type=float, default=60)
    ap.add_argument("--dask-default-cap", type=float, default=None, help="default 60 s")
    ap.add_argument("--no-install", action="store_true",
                    help="use the venv as it is (no pip, no wheel build)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the figures of the JSON files already in --out-dir")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    args.reps = args.reps or (1 if args.quick else 5)
    # Any cap below Dask's default TTL (5 min) gives the same verdict: Dask cannot recover sooner.
    args.dask_default_cap = args.dask_default_cap or (20 if args.quick else 60)
    os.makedirs(args.out_dir, exist_ok=True)

    if args.report_only:
        rows = figures(load_results(args.out_dir), args)
        (print_markdown if args.markdown else print_tsv)(rows)
        return 0 if rows else 1

    py = os.path.join(args.venv, "bin", "python")
    tmp = tempfile.mkdtemp(prefix="rusk-bench-python-")
    try:
        if not args.no_install:
            py = ensure_venv(args.venv)
            install_rusk(py, os.path.join(tmp, "wheels"))
        rusk_bin = os.path.join(tmp, "rusk")
        shutil.copy2(args.rusk or os.path.join(ROOT, "target", "release", "rusk"), rusk_bin)
        env = dict(os.environ, RUSK_BIN=rusk_bin)
        env.pop("RUSK_PYTHON", None)  # executors run the client's interpreter
        v = versions(py)
        log("python: " + ", ".join(f"{k} {x}" for k, x in v.items()))
        data = run_all(args, py, env)
        data["versions"] = v
        with open(os.path.join(args.out_dir, "versions.json"), "w") as f:
            json.dump(v, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = figures(data, args)
    (print_markdown if args.markdown else print_tsv)(rows)
    ran = [k for k in args.only.split(",") if k in data]
    return 0 if all(data.get(k) for k in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
