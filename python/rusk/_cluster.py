"""A rusk cluster on this machine: a scheduler and a nanny with its workers, as real child
processes of this one, stopped on :meth:`LocalCluster.close` or at interpreter exit."""

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

#: How long a new cluster may take to come up.
STARTUP_TIMEOUT = 30.0
#: SIGTERM, then SIGKILL after this long.
STOP_GRACE = 5.0
# A scheduler with a journal that dies is started again on it this many times at most over a
# cluster's life (then it stays down and clients give up after their scheduler_lost_timeout).
SCHEDULER_RESTARTS_MAX = 10
# How often the supervisor looks at the scheduler process.
SUPERVISE_INTERVAL = 0.05


def find_rusk_binary():
    """The ``rusk`` executable: ``$RUSK_BIN``, next to this interpreter (a virtualenv's
    ``bin/``), on ``PATH``, or the repository's ``target/release`` build (a development
    install)."""
    env = os.environ.get("RUSK_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError("RUSK_BIN=%s is not an executable" % env)
        return env
    candidates = [Path(sys.executable).parent / "rusk"]
    on_path = shutil.which("rusk")
    if on_path:
        candidates.append(Path(on_path))
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo / "target" / "release" / "rusk", repo / "target" / "debug" / "rusk"]
    for c in candidates:
        if c.is_file() and os.access(str(c), os.X_OK):
            return str(c)
    raise FileNotFoundError(
        "cannot find the rusk executable: set RUSK_BIN, or put rusk on PATH "
        "(bash scripts/setup-python.sh installs it into .venv/bin)"
    )


def read_scheduler_file(path):
    """``(address, token)`` from a scheduler file written by ``rusk scheduler``."""
    with open(path) as f:
        data = json.load(f)
    return data["address"], data["token"]


def scheduler_file_tls(path):
    """The ``tls`` section of a scheduler file (JSON text), or ``None`` when the cluster does
    not encrypt: what a client needs to join over TLS."""
    with open(path) as f:
        tls = json.load(f).get("tls")
    return None if tls is None else json.dumps(tls)


def _pdeathsig_setter():
    """A ``preexec_fn`` making the child die (SIGKILL) with this process, resolved here in the
    parent so that the child, between fork and exec, only makes one foreign call (no dlopen,
    whose loader lock another thread may have held at fork time)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.restype = ctypes.c_int
        args = tuple(ctypes.c_ulong(v) for v in (1, int(signal.SIGKILL), 0, 0, 0))  # PR_SET_PDEATHSIG
    except Exception:
        return None

    def preexec():
        prctl(*args)

    return preexec


def _child_env(extra):
    env = dict(os.environ)
    # Executors run tasks with this interpreter, and can import what this process imports.
    env.setdefault("RUSK_PYTHON", sys.executable)
    # Skip the interpreter's own directories: the executors' interpreter has them already.
    prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    paths = [p if p else os.getcwd() for p in sys.path]
    paths = [p for p in paths if not p.startswith(prefixes)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("RUSK_LOG", "info")
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


class LocalCluster:
    """``rusk scheduler`` on a free loopback port and ``rusk nanny`` with ``n_workers`` workers
    of ``threads_per_worker`` threads each. Logs go to files in :attr:`directory`
    (see :meth:`logs`). ``dashboard`` is where the scheduler serves its dashboard
    (``host:port``, ``"none"`` for none; default: the scheduler's default, another free port if
    that one is taken); :attr:`dashboard_link` is its URL.

    ``resources`` (``{"GPU": 2}`` or ``"GPU=2"``) are what each worker offers to tasks that ask
    for resources. ``scheduler_args`` and ``nanny_args`` are extra command-line flags (e.g.
    ``["--worker-ttl", "2s"]``); ``env`` adds environment variables for both. ``journal``
    (default on) gives the scheduler a journal in the cluster's directory; a scheduler that dies
    is then started again on it (at most ``SCHEDULER_RESTARTS_MAX`` times), as the same cluster:
    workers keep their results and clients their futures."""

    def __init__(
        self,
        n_workers=2,
        threads_per_worker=1,
        memory_limit=None,
        scheduler_args=(),
        nanny_args=(),
        env=None,
        dashboard=None,
        startup_timeout=STARTUP_TIMEOUT,
        rusk_bin=None,
        resources=None,
        journal=True,
    ):
        self.n_workers = int(n_workers)
        self.threads_per_worker = int(threads_per_worker)
        self.binary = rusk_bin or find_rusk_binary()
        self.directory = tempfile.mkdtemp(prefix="rusk-cluster-")
        self.scheduler_file = os.path.join(self.directory, "scheduler.json")
        self.nanny_name = "local-%d" % os.getpid()
        self._procs = []
        self._log_files = []
        self._closed = False
        self.dashboard_link = None
        self.tls = None
        self.journal = bool(journal)
        self.scheduler_restarts = 0
        self._spawn_lock = threading.Lock()
        env = _child_env(env)
        if dashboard is not None:
            scheduler_args = ["--dashboard", str(dashboard)] + list(scheduler_args)
        self._scheduler_cmd = [
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--scheduler-file",
            self.scheduler_file,
            # One machine: a journal commit need only survive the scheduler process
            # (`--journal-sync process`: no fsync per commit, which every submit would wait for).
            *(
                ["--journal", os.path.join(self.directory, "journal.redb"), "--journal-sync", "process"]
                if journal
                else []
            ),
            *scheduler_args,
        ]
        self._env = env
        try:
            self.scheduler = self._spawn("scheduler", self._scheduler_cmd, env)
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    self.address, self.token = read_scheduler_file(self.scheduler_file)
                    self.tls = scheduler_file_tls(self.scheduler_file)
                    with open(self.scheduler_file) as f:
                        self.dashboard_link = json.load(f).get("dashboard")
                    break
                except (OSError, ValueError, KeyError):
                    pass
                if self.scheduler.poll() is not None:
                    raise RuntimeError(
                        "the rusk scheduler exited during start-up (%s):\n%s"
                        % (self.scheduler.returncode, self.logs("scheduler"))
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError("the rusk scheduler did not start within %.0f s" % startup_timeout)
                time.sleep(0.02)
            nanny = [
                "nanny",
                "--scheduler-file",
                self.scheduler_file,
                "--nworkers",
                str(self.n_workers),
                "--nthreads",
                str(self.threads_per_worker),
                "--name",
                self.nanny_name,
            ]
            if memory_limit is not None:
                nanny += ["--memory-limit", str(memory_limit)]
            if resources:
                if isinstance(resources, dict):
                    resources = ",".join("%s=%s" % (k, v) for k, v in resources.items())
                nanny += ["--resources", str(resources)]
            self.nanny = self._spawn("nanny", nanny + list(nanny_args), env)
        except BaseException:
            self.close()
            raise
        _live_clusters.add(self)
        if self.journal:
            threading.Thread(target=self._supervise, name="rusk-scheduler-supervisor", daemon=True).start()

    def _supervise(self):
        """Start the scheduler again on its journal when it dies (kill -9, a crash), as
        ``rusk local`` does: the same address and token, so workers and clients reconnect."""
        while not self._closed:
            time.sleep(SUPERVISE_INTERVAL)
            p = self.scheduler
            if self._closed or p.poll() is None:
                continue
            if self.scheduler_restarts >= SCHEDULER_RESTARTS_MAX:
                return
            self.scheduler_restarts += 1
            try:
                with self._spawn_lock:
                    if self._closed:
                        return
                    self.scheduler = self._spawn("scheduler", self._scheduler_cmd, self._env)
            except OSError:
                return

    def _spawn(self, name, args, env):
        log = open(os.path.join(self.directory, name + ".log"), "ab")
        self._log_files.append(log)
        p = subprocess.Popen(
            [self.binary] + list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_pdeathsig_setter(),
        )
        self._procs.append(p)
        return p

    def logs(self, name=None):
        """The scheduler's and nanny's (and their workers') logs so far."""
        out = []
        for n in [name] if name else ["scheduler", "nanny"]:
            try:
                with open(os.path.join(self.directory, n + ".log"), "rb") as f:
                    out.append("== %s\n%s" % (n, f.read().decode(errors="replace")))
            except OSError:
                pass
        return "\n".join(out)

    def check_alive(self):
        """Raise if the scheduler or the nanny exited."""
        for name, p in (("scheduler", self.scheduler), ("nanny", getattr(self, "nanny", None))):
            if p is not None and p.poll() is not None:
                raise RuntimeError("the local rusk %s exited (%s)" % (name, p.returncode))

    def close(self):
        """Stop the nanny (and so its workers), then the scheduler."""
        if self._closed:
            return
        with self._spawn_lock:
            self._closed = True
        _live_clusters.discard(self)
        for p in reversed(self._procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except OSError:
                    pass
            try:
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._log_files:
            f.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<rusk.LocalCluster %s: %d worker(s) x %d thread(s)%s>" % (
            getattr(self, "address", "?"),
            self.n_workers,
            self.threads_per_worker,
            " (closed)" if self._closed else "",
        )


_live_clusters = weakref.WeakSet()


@atexit.register
def _close_all():
    for c in list(_live_clusters):
        try:
            c.close()
        except Exception:
            pass
