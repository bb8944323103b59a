"""The `data` suite of bench/run: rusk's data plane against Dask distributed, same machine, same
run, 2 worker processes x 1 thread on both sides, medians of 3 (stdlib only; both sides run in
the benchmark's venv, prepared as for the `python` suite, plus dask[dataframe] and psutil).

  1.  rechunk (4000, 100) -> (100, 4000) chunks of a 4000 x 4000 array, .sum(axis=1)  Dask/rusk >= 1.5
  2.  dataframe merge, 300,000 x 200,000 rows, shuffle_method="tasks"               Dask/rusk >= 1.5
  3.  x.dot(x.T).sum(), 3000 x 3000 in 500 x 500 chunks                              Dask/rusk >= 1
  4.  one 200 MB chunk returned to the client                                        rusk <= 0.64 s
  5.  (x + x.T).sum(); da.linalg.tsqr of 200,000 x 100; map_overlap depth 1          Dask/rusk >= 1
      everyday work: a dataframe groupby-agg and sort_values, bag word frequencies, 5,000
      delayed calls of a lambda each                                                 Dask/rusk >= 1
  6.  1 GiB from a task on worker A to a task on worker B            rusk >= 0.5 x loopback TCP copy
  7.  peak RSS of the receiving worker meanwhile (< 1.2 GiB); a worker's RSS for a stored value of
      N bytes (<= N + 64 KiB)
  (8. map of 10,000 no-ops and a 4,096-leaf delayed tree are the `python` suite's.)

Rechunk and merge use Dask's "tasks" method on both sides (rusk cannot run Dask's p2p extension);
Dask with its own default (p2p here) is measured too, for information. Every side and shape runs
in its own process (bench/data/workload.py) with a time limit (--timeout, 300 s): a shape that
fails or hangs is a MISS with its error's first line, and the suite goes on. Prints tab-separated
figure lines (suite, figure, value, unit, target, verdict) on stdout, progress on stderr; the raw
timings are kept as JSON in --out-dir.
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)


def _load_python_suite():
    """bench/python/suite.py (its venv, wheel and formatting helpers), under another name: this
    file is called suite.py too."""
    spec = importlib.util.spec_from_file_location("python_suite", os.path.join(BENCH, "python", "suite.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ps = _load_python_suite()
log, secs, ratio_text = ps.log, ps.secs, ps.ratio_text
EXTRAS = ["dask[dataframe]==2026.8.*", "pandas", "pyarrow", "psutil"]
EXTRAS_UNPINNED = ["dask[dataframe]", "pandas", "pyarrow", "psutil"]
EXTRAS_CHECK = "import dask.dataframe, pandas, pyarrow, psutil"

COMPARED = ["rechunk", "merge", "dot", "gather", "transpose", "tsqr", "overlap", "groupby",
            "sort", "bag", "lambdas", "transfer", "stored"]
DASK_DEFAULT = ["rechunk-default", "merge-default"]
TARGETS = {"rechunk": 1.5, "merge": 1.5, "dot": 1.0, "transpose": 1.0, "tsqr": 1.0,
           "overlap": 1.0, "groupby": 1.0, "sort": 1.0, "bag": 1.0, "lambdas": 1.0}
GATHER_TARGET_S = 0.64  # Dask on Ray's figure for the same shape, measured earlier on this machine
TRANSFER_TARGET = 0.5  # of the loopback socket's bandwidth
RSS_TARGET = 1.2 * (1 << 30)
STORED_OVERHEAD_TARGET = 64 * 1024
GIB, MIB = float(1 << 30), float(1 << 20)


# --- preparing the venv ---


def ensure_extras(py):
    if subprocess.run([py, "-c", EXTRAS_CHECK], capture_output=True).returncode != 0:
        if not ps.pip(py, *EXTRAS) and not ps.pip(py, *EXTRAS_UNPINNED):
            raise SystemExit("data: cannot install %s" % " ".join(EXTRAS_UNPINNED))


def more_versions(py):
    code = "import pandas, pyarrow; print(pandas.__version__, pyarrow.__version__)"
    out = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return dict(zip(["pandas", "pyarrow"], out))


# --- running one side and shape, with a time limit ---


def descendants(pid):
    """Pids of every live descendant of `pid` (from /proc)."""
    parent = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parent[int(stat.split("/")[2])] = int(fields[1])
        except (OSError, IndexError, ValueError):
            pass
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        frontier += kids
    return found


def kill_tree(proc):
    """SIGKILL a workload process and everything it started (by pid, leaves first)."""
    pids = descendants(proc.pid)
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.kill()
    proc.wait()


def run_one(args, py, env, system, shape):
    out = os.path.join(args.out_dir, "%s-%s.json" % (system, shape))
    if os.path.exists(out):
        os.unlink(out)
    # The socket baseline is cheap: more runs make its median steadier on a busy machine.
    reps = max(args.reps, 5) if system == "socket" else args.reps
    cmd = [py, os.path.join(HERE, "workload.py"), "--system", system, "--shape", shape,
           "--out", out, "--reps", str(reps), "--warmup", str(args.warmup)]
    if args.quick:
        cmd.append("--quick")
    log("data: " + " ".join(cmd[1:]))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=sys.stderr, env=env)
    timed_out = False
    try:
        proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        log("data: %s %s: no result after %g s; killing it" % (system, shape, args.timeout))
        kill_tree(proc)
    res = None
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
    if res is None:
        res = {"system": system, "shape": shape, "runs_s": [], "extras": [], "error": None}
    if timed_out:
        res["error"] = "timed out after %g s (%d of %d runs done)" % (
            args.timeout, len(res["runs_s"]), reps)
        res["error_phase"] = "time limit"
    elif proc.returncode != 0 and not res.get("error"):
        res["error"] = "workload exited with code %s" % proc.returncode
    if res["runs_s"] and "median_s" not in res:
        res["median_s"] = statistics.median(res["runs_s"])
        res["min_s"], res["max_s"] = min(res["runs_s"]), max(res["runs_s"])
    res["wall_s"] = time.monotonic() - t0
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    return res


def run_all(args, py, env):
    data = {}
    shapes = [s for s in COMPARED if s in args.only]
    for shape in shapes:
        for system in ("rusk", "dask"):
            if system in args.systems:
                data["%s-%s" % (system, shape)] = run_one(args, py, env, system, shape)
        if shape == "transfer":
            data["socket-socket"] = run_one(args, py, env, "socket", "socket")
    if args.dask_default and "dask" in args.systems:
        for shape in DASK_DEFAULT:
            if shape.replace("-default", "") in args.only:
                data["dask-" + shape] = run_one(args, py, env, "dask", shape)
    return data


# --- report ---


def title(shape, size):
    if shape == "rechunk":
        n, c = size
        return "1. rechunk %d x %d: (%d, %d) to (%d, %d) chunks, .sum(axis=1)" % (n, n, n, c, c, n)
    if shape == "merge":
        nl, nr, pl, pr = size
        return "2. dataframe merge %s x %s rows (%d x %d partitions)" % (
            f"{nl:,}", f"{nr:,}", pl, pr)
    if shape == "dot":
        n, c = size
        return "3. x.dot(x.T).sum(), %d x %d in %d x %d chunks" % (n, n, c, c)
    if shape == "gather":
        return "4. one %d MB chunk returned to the client" % (size * 8 // 1_000_000)
    if shape == "transpose":
        n, c = size
        return "5a. (x + x.T).sum(), %d x %d in %d x %d chunks" % (n, n, c, c)
    if shape == "tsqr":
        rows, cols, c = size
        return "5b. da.linalg.tsqr, %s x %d in %s-row chunks" % (f"{rows:,}", cols, f"{c:,}")
    if shape == "overlap":
        n, c = size
        return "5c. map_overlap(5-point stencil, depth=1), %d x %d in %d x %d chunks" % (n, n, c, c)
    if shape == "groupby":
        rows, parts = size
        return "5d. dataframe groupby-agg, %s rows in %d partitions" % (f"{rows:,}", parts)
    if shape == "sort":
        rows, parts = size
        return "5e. dataframe sort_values, %s rows in %d partitions" % (f"{rows:,}", parts)
    if shape == "bag":
        lines, parts = size
        return "5f. bag word frequencies, %s lines in %d partitions" % (f"{lines:,}", parts)
    if shape == "lambdas":
        return "5g. %s delayed calls, each of its own lambda" % f"{size:,}"
    if shape == "transfer":
        return "6. %s worker A to worker B" % size_text(size)
    if shape == "stored":
        return "7b. a stored value of N = %s" % size_text(size)
    return shape


def size_text(n):
    return "%.4g GiB" % (n / GIB) if n >= GIB else "%.4g MiB" % (n / MIB)


def gib(x):
    return "%.2f" % (x / GIB)


def err_text(r):
    """FAILED and the error's first line, long task keys cut short."""
    phase = r.get("error_phase")
    where = "" if phase in (None, "run", "time limit") else " in %s" % phase
    text = re.sub(r'dependency "[^"]*" failed: ', "", r["error"])
    text = re.sub(r'"([^"]{12})[^"]{8,}"', r'"\1..."', text)
    return "FAILED%s: %s" % (where, text[:200])


def timing_row(rows, t, label, r, note=""):
    """A side's median (min / max) row, or its failure; True when it has a median."""
    if r is None:
        return False
    n = len(r["runs_s"])
    if r.get("error"):
        done = " (%d runs done)" % n if n else ""
        rows.append(("%s: %s%s %s%s" % (t, label, note, err_text(r), done), "-", "s", "", "-"))
        return False
    rows.append(("%s: %s%s, median of %d (min / max)" % (t, label, note, n),
                 "%s (%s / %s)" % (secs(r["median_s"]), secs(r["min_s"]), secs(r["max_s"])),
                 "s", "", "-"))
    return True


def median_extra(r, key):
    vals = [e[key] for e in r["extras"] if e.get(key) is not None]
    return statistics.median(vals) if vals else None


def figures(data):
    rows = []
    for shape in COMPARED:
        rr, dr = data.get("rusk-" + shape), data.get("dask-" + shape)
        if rr is None and dr is None:
            continue
        size = (rr or dr).get("size")
        t = title(shape, size)
        if shape in ("rechunk", "merge"):
            t += ', method "tasks"'
        if shape == "transfer":
            transfer_rows(rows, t, rr, dr, data.get("socket-socket"))
            continue
        if shape == "stored":
            stored_rows(rows, t, rr, dr)
            continue
        r_ok = timing_row(rows, t, "rusk", rr)
        d_ok = timing_row(rows, t, "Dask", dr)
        if shape == "gather":
            if rr is not None:
                v = rr.get("median_s")
                rows.append((t + ": rusk time (Dask on Ray: 0.64 s)",
                             secs(v) if r_ok else "-", "s", "<= %g" % GATHER_TARGET_S,
                             "PASS" if r_ok and v <= GATHER_TARGET_S else "MISS"))
            if r_ok and d_ok:
                rows.append((t + ": Dask/rusk", ratio_text(dr["median_s"] / rr["median_s"]), "x",
                             "", "-"))
            continue
        target = TARGETS[shape]
        tt = ">= %g" % target + (" (no slower)" if target == 1 else "")
        if r_ok and d_ok:
            q = dr["median_s"] / rr["median_s"]
            rows.append((t + ": Dask/rusk", ratio_text(q), "x", tt, "PASS" if q >= target else "MISS"))
        elif rr is not None and dr is not None:
            rows.append((t + ": Dask/rusk", "-", "x", tt, "MISS" if not r_ok else "-"))
    for shape in DASK_DEFAULT:
        r = data.get("dask-" + shape)
        if r:
            base = shape.replace("-default", "")
            t = title(base, r["size"])
            ok = timing_row(rows, t, "Dask", r, note=" with its default method (p2p here)")
            rr = data.get("rusk-" + base)
            if ok and rr and not rr.get("error") and rr.get("median_s"):
                rows.append((t + ": Dask with its default method / rusk with tasks",
                             ratio_text(r["median_s"] / rr["median_s"]), "x", "", "-"))
    loads = [x for r in data.values() for x in (r.get("loadavg_start"), r.get("loadavg_end"))
             if x is not None]
    if loads:
        rows.append(("1-minute load average at the start and end of each side and shape, min / max",
                     "%.1f / %.1f" % (min(loads), max(loads)), "", "", "-"))
    v = data.get("versions")
    if v:
        names = ["python", "distributed", "dask", "numpy", "pandas", "pyarrow"]
        rows.append(("versions: " + " / ".join(names), " / ".join(v.get(k, "?") for k in names),
                     "", "", "-"))
    return rows


def transfer_rows(rows, t, rr, dr, sr):
    size = (rr or dr or {}).get("size") or 0
    sock_ok = timing_row(rows, "6. loopback TCP socket, %s into one buffer" % size_text(size),
                         "plain Python sockets", sr) if sr else False
    r_ok = timing_row(rows, t, "rusk", rr, note=" (consumer placed on B by occupying A)")
    if r_ok:
        crossed = [e.get("crossed") for e in rr["extras"]]
        rows.append((t + ": rusk consumer ran on the other worker (runs)",
                     "%d of %d" % (sum(bool(c) for c in crossed), len(crossed)), "", "", "-"))
        prod = median_extra(rr, "produce_s")
        start = median_extra(rr, "consumer_started_s")
        rows.append((t + ": rusk producer / consumer started after submission, medians",
                     "%s / %s" % (secs(prod), secs(start)), "s", "", "-"))
    d_ok = timing_row(rows, t, "Dask", dr, note=" (workers= pinned)")
    if d_ok:
        prod = median_extra(dr, "produce_s")
        start = median_extra(dr, "consumer_started_s")
        rows.append((t + ": Dask producer / consumer started after submission, medians",
                     "%s / %s" % (secs(prod), secs(start)), "s", "", "-"))
    if sock_ok:
        sock_bw = size / sr["median_s"]
        rows.append(("6. loopback TCP socket bandwidth", gib(sock_bw), "GiB/s", "", "-"))
    for label, r, ok, target in (("rusk", rr, r_ok, True), ("Dask", dr, d_ok, False)):
        if r is None:
            continue
        bw = size / r["median_s"] if ok else None
        if ok:
            rows.append((t + ": %s bandwidth" % label, gib(bw), "GiB/s", "", "-"))
        if sr is not None and target:
            q = bw / (size / sr["median_s"]) if ok and sock_ok else None
            rows.append((t + ": rusk bandwidth / socket bandwidth", "-" if q is None else "%.2f" % q,
                         "x", ">= %g" % TRANSFER_TARGET,
                         "PASS" if q is not None and q >= TRANSFER_TARGET else "MISS"))
        elif ok and sock_ok:
            rows.append((t + ": Dask bandwidth / socket bandwidth",
                         "%.2f" % (sr["median_s"] / r["median_s"]), "x", "", "-"))
    if r_ok and d_ok:
        rows.append((t + ": Dask/rusk", ratio_text(dr["median_s"] / rr["median_s"]), "x", "", "-"))
    # 7a: the receiving worker's memory meanwhile.
    ta = "7a. receiving %s: peak memory of the receiving worker" % size_text(size)
    for label, r, ok in (("rusk", rr, r_ok), ("Dask", dr, d_ok)):
        if r is None:
            continue
        is_rusk = label == "rusk"
        tgt = "< 1.2" if is_rusk else ""
        what = " (worker + executors)" if is_rusk else " (worker process)"
        peaks = [e for e in r["extras"] if e.get("peak")]
        if not ok or not peaks:
            why = "FAILED (see 6)" if r.get("error") else "no samples"
            rows.append((ta + ": %s%s %s" % (label, what, why), "-", "GiB", tgt,
                         "MISS" if is_rusk else "-"))
            continue
        e = max(peaks, key=lambda e: e["peak"]["total"])
        fp = e["peak"]
        rows.append((ta + ": %s%s, footprint, highest of %d runs (%d samples in that run)"
                     % (label, what, len(peaks), e["samples"]), gib(fp["total"]), "GiB", tgt,
                     ("PASS" if fp["total"] < RSS_TARGET else "MISS") if is_rusk else "-"))
        rows.append((ta + ": %s anonymous / shared-memory objects at that peak" % label,
                     "%s / %s" % (gib(fp["private"]), gib(fp["shm"])), "GiB", "", "-"))
        rows.append((ta + ": %s VmRSS summed (anon / file / shmem) at that peak" % label,
                     "%s (%s / %s / %s)" % (gib(fp["VmRSS"]), gib(fp["RssAnon"]), gib(fp["RssFile"]),
                                            gib(fp["RssShmem"])), "GiB", "", "-"))
        hwm = e.get("hwm_per_pid") or {}
        if hwm:
            rows.append((ta + ": %s VmHWM per process (worker first)" % label,
                         " / ".join(gib(v or 0) for v in hwm.values()), "GiB", "", "-"))


def stored_rows(rows, t, rr, dr):
    for label, r in (("rusk", rr), ("Dask", dr)):
        if r is None:
            continue
        is_rusk = label == "rusk"
        n = r.get("size") or 0
        tgt = "<= 64" if is_rusk else ""
        what = "worker + executors" if is_rusk else "worker"
        if r.get("error") or not r["extras"]:
            rows.append(("%s: %s footprint delta (%s) - N %s" % (t, label, what, err_text(r) if r.get("error") else ""),
                         "-", "KiB", tgt, "MISS" if is_rusk else "-"))
            continue
        k = len(r["extras"])

        def med(key):
            return statistics.median(e["delta"][key] for e in r["extras"])

        d = med("total")
        rows.append(("%s: %s footprint delta (%s) - N, median of %d" % (t, label, what, k),
                     "%.0f" % ((d - n) / 1024), "KiB", tgt,
                     ("PASS" if d - n <= STORED_OVERHEAD_TARGET else "MISS") if is_rusk else "-"))
        rows.append(("%s: %s deltas: anonymous / shared-memory objects / VmRSS" % (t, label),
                     "%.2f / %.2f / %.2f" % (med("private") / MIB, med("shm") / MIB, med("VmRSS") / MIB),
                     "MiB", "", "-"))


def print_tsv(rows):
    for row in rows:
        print("\t".join(["data", *row]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rusk", help="the rusk binary (default: target/release/rusk)")
    ap.add_argument("--out-dir", required=True, help="where the JSON results go")
    ap.add_argument("--venv", default=os.path.join(BENCH, ".venv"))
    ap.add_argument("--quick", action="store_true",
                    help="smaller shapes, 1 run each, no warm-up: a smoke test, not a measurement")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per figure (default 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per side and shape (default 300, --quick 120)")
    ap.add_argument("--only", default=",".join(COMPARED), help="shapes (comma-separated)")
    ap.add_argument("--systems", default="rusk,dask")
    ap.add_argument("--no-dask-default", dest="dask_default", action="store_false",
                    help="skip Dask's default (p2p) rechunk and merge")
    ap.add_argument("--no-install", action="store_true",
                    help="use the venv as it is (no pip, no wheel build)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the figures of the JSON files already in --out-dir")
    ap.add_argument("--markdown", action="store_true", help="with --report-only: a Markdown table")
    args = ap.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    args.timeout = args.timeout or (120 if args.quick else 300)
    args.only = args.only.split(",")
    args.systems = args.systems.split(",")
    if args.quick:
        args.dask_default = False
    os.makedirs(args.out_dir, exist_ok=True)

    if args.report_only:
        rows = figures(ps.load_results(args.out_dir))
        (ps.print_markdown if args.markdown else print_tsv)(rows)
        return 0 if rows else 1

    py = os.path.join(args.venv, "bin", "python")
    tmp = tempfile.mkdtemp(prefix="rusk-bench-data-")
    try:
        if not args.no_install:
            py = ps.ensure_venv(args.venv)
            ensure_extras(py)
            ps.install_rusk(py, os.path.join(tmp, "wheels"))
        rusk_bin = os.path.join(tmp, "rusk")
        shutil.copy2(args.rusk or os.path.join(os.path.dirname(BENCH), "target", "release", "rusk"),
                     rusk_bin)
        env = dict(os.environ, RUSK_BIN=rusk_bin)
        env.pop("RUSK_PYTHON", None)  # executors run the client's interpreter
        v = ps.versions(py)
        v.update(more_versions(py))
        log("data: " + ", ".join(f"{k} {x}" for k, x in v.items()))
        t0 = time.monotonic()
        data = run_all(args, py, env)
        log("data: all shapes in %.0f s" % (time.monotonic() - t0))
        with open(os.path.join(args.out_dir, "versions.json"), "w") as f:
            json.dump(v, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    data["versions"] = v
    print_tsv(figures(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
