"""Progress bars on a terminal."""


def _stderr_is_terminal():
    import sys

    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except Exception:
        return False


class _ProgressBar:
    """One line on stderr: ``[#####.....] 1234/5000 tasks``."""

    WIDTH = 40

    def __init__(self):
        self.drawn = False
        self.last = None

    def draw(self, done, erred, total):
        import sys

        if total <= 0 or (done, erred, total) == self.last:
            return
        self.last = (done, erred, total)
        filled = min(self.WIDTH, (done + erred) * self.WIDTH // total)
        extra = ", %d erred" % erred if erred else ""
        sys.stderr.write("\r[%s%s] %d/%d tasks%s" % ("#" * filled, "." * (self.WIDTH - filled), done, total, extra))
        sys.stderr.flush()
        self.drawn = True

    def finish(self):
        import sys

        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


# === rusk.progress ===

#: How often the terminal bar is redrawn while waiting, in seconds.
PROGRESS_INTERVAL = 0.1


def _futures_in(items):
    """The futures in ``items``: futures, lists/tuples/sets/dicts of them, and Dask collections
    whose graphs hold futures (persisted ones)."""
    from ._futures import Future

    out = []
    seen = set()

    def add(f):
        if id(f._state) not in seen:
            seen.add(id(f._state))
            out.append(f)

    def walk(x):
        if isinstance(x, Future):
            add(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple, set, frozenset)):
            for v in x:
                walk(v)
        elif hasattr(x, "__dask_graph__"):
            graph = x.__dask_graph__()
            if graph is not None:
                for v in dict(graph).values():
                    if isinstance(v, Future):
                        add(v)

    try:
        walk(items)
    finally:
        del walk  # it refers to itself: break the cycle that would keep the futures alive
    return out


def _in_notebook():
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _counts(futures):
    done = sum(1 for f in futures if f.status == "finished")
    erred = sum(1 for f in futures if f.status in ("error", "lost", "cancelled"))
    return done, erred, len(futures)


def progress(*futures, notebook=None, multi=True, complete=True, **kwargs):
    """Show the progress of futures or persisted collections, as ``distributed.progress``.

    In a terminal (or any non-notebook process) a bar is drawn on stdout until every future
    is done. In Jupyter a widget (``ipywidgets``, else an HTML display updated in place) is
    shown and the call returns at once; the widget follows the futures as they finish."""
    del multi, complete, kwargs
    fs = _futures_in(futures)
    if not fs:
        raise ValueError(
            "progress needs futures, or a collection persisted on the cluster "
            "(x = client.persist(x) or x.persist()): nothing here is running"
        )
    if notebook is None:
        notebook = _in_notebook()
    if notebook:
        return NotebookProgress(fs)
    TextProgress(fs).run()
    return None


class TextProgress:
    """``[########################################] | 100% Completed | 1.2s`` on stdout."""

    WIDTH = 40

    def __init__(self, futures, out=None):
        import sys

        self.futures = futures
        self.out = out or sys.stdout
        self.last = None

    def line(self, elapsed):
        done, erred, total = _counts(self.futures)
        frac = (done + erred) / total
        filled = int(round(frac * self.WIDTH))
        extra = " | %d erred" % erred if erred else ""
        return "[%s%s] | %3d%% Completed | %.1fs%s" % (
            "#" * filled,
            " " * (self.WIDTH - filled),
            int(frac * 100),
            elapsed,
            extra,
        )

    def run(self):
        import time

        from ._futures import wait

        t0 = time.monotonic()
        while True:
            try:
                wait(self.futures, timeout=PROGRESS_INTERVAL)
                finished = True
            except TimeoutError:
                finished = False
            text = self.line(time.monotonic() - t0)
            if text != self.last:
                self.out.write("\r" + text)
                self.out.flush()
                self.last = text
            if finished:
                self.out.write("\n")
                self.out.flush()
                return


class NotebookProgress:
    """A progress widget in Jupyter, updated from the futures' done-callbacks."""

    def __init__(self, futures, display=None):
        import threading
        import time

        self.futures = futures
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.widget = self.handle = None
        try:
            import ipywidgets

            self.bar = ipywidgets.IntProgress(min=0, max=len(futures), description="0/%d" % len(futures))
            self.label = ipywidgets.HTML()
            self.widget = ipywidgets.HBox([self.bar, self.label])
        except ImportError:
            self.bar = None
        if display is None:
            from IPython.display import display
        self._display = display
        if self.widget is not None:
            display(self.widget)
        else:
            self.handle = display(self._html(), display_id=True)
        self.update()
        for f in futures:
            f.add_done_callback(lambda _f: self.update())

    def _html(self):
        import time

        done, erred, total = _counts(self.futures)
        pct = 100.0 * (done + erred) / total
        colour = "#d9534f" if erred else "#5cb85c"
        html = (
            '<div style="width:30em;border:1px solid #999;height:1.2em">'
            '<div style="width:%.1f%%;background:%s;height:100%%"></div></div>'
            "<div>%d/%d done%s, %.1f s</div>"
            % (pct, colour, done + erred, total, " (%d erred)" % erred if erred else "", time.monotonic() - self.t0)
        )
        return _HTML(html)

    def update(self):
        with self._lock:
            done, erred, total = _counts(self.futures)
            if self.bar is not None:
                self.bar.value = done + erred
                self.bar.description = "%d/%d" % (done + erred, total)
                if erred:
                    self.bar.bar_style = "danger"
                elif done == total:
                    self.bar.bar_style = "success"
                self.label.value = self._html().data
            elif self.handle is not None:
                self.handle.update(self._html())

    def _repr_html_(self):
        return self._html().data


class _HTML:
    """What ``IPython.display.HTML`` is, without needing IPython to build one."""

    def __init__(self, data):
        self.data = data

    def _repr_html_(self):
        return self.data
