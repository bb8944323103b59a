"""The `python` suite of bench/run: rusk's Python client against Dask distributed, same machine,
same run, 2 worker processes x 1 thread on both sides, medians of 5 (stdlib only; both sides run
in the benchmark's venv).

  1. map     client.map of 10,000 no-op functions, then client.gather     target: Dask/rusk >= 5
  2. tree    a tree reduction over 4,096 dask.delayed leaves                target: Dask/rusk >= 5
  3. array   da.random.random((20000, 20000), chunks=(1000, 1000)).sum()
             through client.get                                            target: Dask/rusk >= 1
  4. hang    a task holding the GIL (ctypes.PyDLL(None).sleep(600)): wall time from its
             submission until it has failed and both slots run tasks again target: rusk faster
             than Dask, with Dask's default worker-ttl (capped) and with worker-ttl=5s

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
}
TARGETS = {"map": 5.0, "tree": 5.0, "array": 1.0}


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


def run_all(args, py, env):
    reps = str(args.reps)
    runs = {
        "rusk": ["--system", "rusk", "--bench", "throughput", "--reps", reps],
        "dask": ["--system", "dask", "--bench", "throughput", "--reps", reps],
        "hang-rusk": ["--system", "rusk", "--bench", "hang", "--reps", reps,
                      "--cap", str(args.rusk_cap)],
        "hang-rusk-5s": ["--system", "rusk", "--bench", "hang", "--reps", reps,
                         "--cap", str(args.rusk_cap), "--hang-timeout", "5s"],
        "hang-dask-ttl": ["--system", "dask", "--bench", "hang", "--reps", reps,
                          "--cap", str(args.dask_ttl_cap), "--worker-ttl", "5s"],
        "hang-dask-default": ["--system", "dask", "--bench", "hang", "--reps", reps,
                              "--cap", str(args.dask_default_cap)],
    }
    data = {}
    for name in args.only.split(","):
        data[name] = run_side(py, env, os.path.join(args.out_dir, name + ".json"), *runs[name])
    return data


# --- report ---


def secs(x):
    return "-" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}" if x < 100 else f"{x:.1f}"


def ratio_text(r):
    return f"{r:,.1f}" if r >= 10 else f"{r:.2f}"


def figures(data, args):
    """(figure, value, unit, target, verdict) rows."""
    rows = []
    rusk, dask = data.get("rusk"), data.get("dask")
    for name in ("map", "tree", "array"):
        r = rusk and rusk["benches"].get(name)
        d = dask and dask["benches"].get(name)
        if not r and not d:
            continue
        t = TITLES[name]
        for label, b in (("rusk", r), ("Dask", d)):
            if b:
                rows.append((f"{t}: {label}, median of {len(b['runs_s'])} (min / max)",
                             f"{secs(b['median_s'])} ({secs(b['min_s'])} / {secs(b['max_s'])})",
                             "s", "", "-"))
        if r and name == "map":
            rows.append((f"  rusk: map() call / gather(), medians",
                         f"{secs(r['submit_median_s'])} / {secs(r['gather_median_s'])}", "s", "",
                         "-"))
        if r and d:
            q = d["median_s"] / r["median_s"]
            target = TARGETS[name]
            rows.append((f"{t}: Dask/rusk", ratio_text(q), "x",
                         f">= {target:g}" + (" (no slower)" if target == 1 else ""),
                         "PASS" if q >= target else "MISS"))
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
    ap.add_argument("--reps", type=int, default=None, help="timed runs per figure (default 5)")
    ap.add_argument("--only", default="rusk,dask,hang-rusk,hang-dask-ttl,hang-dask-default,"
                    "hang-rusk-5s", help="which of the six runs (comma-separated)")
    ap.add_argument("--rusk-cap", type=float, default=60)
    ap.add_argument("--dask-ttl-cap", type=float, default=60)
    ap.add_argument("--dask-default-cap", type=float, default=None, help="default 120 s")
    ap.add_argument("--no-install", action="store_true",
                    help="use the venv as it is (no pip, no wheel build)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the figures of the JSON files already in --out-dir")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    args.reps = args.reps or (1 if args.quick else 5)
    args.dask_default_cap = args.dask_default_cap or (20 if args.quick else 120)
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
    return 0 if all(data.get(k) for k in args.only.split(",")) else 1


if __name__ == "__main__":
    sys.exit(main())
