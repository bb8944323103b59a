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
