"""A task's code runs once, even when the worker's executor pool copies a queued task to an
idle executor (a task waiting behind a long one is stolen): the executors claim it first."""

import collections
import os
import time

import rusk


def stamp(path, tag, hold=0.0):
    time.sleep(hold)
    with open(path, "a") as f:
        f.write("%s %d\n" % (tag, os.getpid()))
    return tag


def test_no_task_runs_twice_when_executors_steal_queued_tasks(tmp_path):
    # One worker, two executors. Each round: two long tasks start at once (one per executor)
    # and short ones queue behind them, one in each executor's pipe. The executor whose long
    # task ends first runs the short ones, then, idle, takes a copy of the one queued behind
    # the other long task (running for more than STEAL_AFTER). The other long task ends a
    # little later each round, so that in some rounds it ends just as the copy starts: then,
    # before claims, the other executor started its own copy too, before the cancel arrived.
    log = str(tmp_path / "runs")
    with rusk.Client(n_workers=1, threads_per_worker=2, set_as_default=False) as c:
        c.gather(c.map(stamp, [os.devnull] * 4, range(4), pure=False))
        tags = []
        for r in range(120):
            holds = [0.02, 0.02 + r * 0.0001]
            long = [c.submit(stamp, log, "long%d-%d" % (r, i), hold=h, pure=False) for i, h in enumerate(holds)]
            short = c.map(stamp, [log] * 4, ["short%d-%d" % (r, i) for i in range(4)], pure=False)
            tags += c.gather(long + short)
    with open(log) as f:
        runs = collections.Counter(line.split()[0] for line in f)
    twice = {t: n for t, n in runs.items() if n > 1}
    assert not twice, "tasks whose code ran more than once: %s" % twice
    assert sorted(runs) == sorted(tags)
