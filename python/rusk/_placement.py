"""Where and in which order tasks run: Dask's ``priority=``, ``resources=``, ``workers=`` and
``allow_other_workers=``, from keyword arguments and from ``dask.annotate``, as task fields.

The scheduler enforces them (see ARCHITECTURE.md, "Placement"): higher ``priority`` first, a
task holds its ``resources`` on its worker while it runs there, and ``workers`` restricts it to
those workers (names as ``rusk status`` shows them, data addresses or host names) unless
``allow_other_workers``. A task no worker can ever run fails with an error naming what it asked
for, after the scheduler's ``--no-worker-timeout``.
"""

import math
import numbers

#: The keyword arguments of submit/map/compute/persist/get that place tasks.
PLACEMENT_KEYWORDS = ("priority", "resources", "workers", "allow_other_workers", "retries")


def _worker_names(workers):
    if isinstance(workers, str):
        workers = [workers]
    try:
        names = list(workers)
    except TypeError:
        raise TypeError("workers= must be a worker name or address, or a list of them; got %r" % (workers,)) from None
    out = []
    for w in names:
        if not isinstance(w, str) or not w:
            raise TypeError("workers= must name workers by non-empty strings; got %r" % (w,))
        for scheme in ("tcp://", "tls://"):
            if w.startswith(scheme):
                w = w[len(scheme) :]
        out.append(w)
    if not out:
        raise ValueError("workers= is an empty list: no worker could run the task")
    return out


def _resources(resources):
    if not isinstance(resources, dict):
        raise TypeError("resources= must be a dict such as {'GPU': 1}; got %r" % (resources,))
    out = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise TypeError("resource names must be non-empty strings; got %r" % (name,))
        if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
            raise TypeError("resource %r: the amount must be a number; got %r" % (name, amount))
        amount = float(amount)
        if not math.isfinite(amount) or amount < 0:
            raise ValueError("resource %r: the amount must be finite and not negative; got %r" % (name, amount))
        out[name] = amount
    return out


def fields(priority=None, resources=None, workers=None, allow_other_workers=None, retries=None):
    """The task fields for these keyword arguments (omitted when they are the defaults).
    Raises ``TypeError``/``ValueError`` for malformed ones, before anything is sent."""
    out = {}
    if priority:
        if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
            if isinstance(priority, numbers.Real) and float(priority).is_integer():
                priority = int(priority)
            else:
                raise TypeError("priority= must be an integer; got %r" % (priority,))
        if not -(2**31) <= priority < 2**31:
            raise ValueError("priority= must fit in 32 bits; got %r" % (priority,))
        out["priority"] = int(priority)
    if resources:
        out["resources"] = _resources(resources)
    if workers is not None:
        out["workers"] = _worker_names(workers)
        if allow_other_workers:
            out["allow_other_workers"] = True
    if retries:
        if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
            raise TypeError("retries= must be a non-negative integer; got %r" % (retries,))
        out["retries"] = int(retries)
    return out


def split_keywords(kwargs):
    """``(placement, rest)``: the placement keywords of ``kwargs`` and the others."""
    placement = {k: kwargs.pop(k) for k in PLACEMENT_KEYWORDS if k in kwargs}
    return placement, kwargs


def annotated(dsk):
    """``{annotation: {key: value}}`` of a Dask graph or expression (``dask.annotate``), only
    the ones that place tasks."""
    get = getattr(dsk, "__dask_annotations__", None)
    if get is None:
        return {}
    try:
        annotations = get() or {}
    except Exception:
        return {}
    return {k: v for k, v in annotations.items() if k in PLACEMENT_KEYWORDS and v}


def per_key(base, annotations, key):
    """The fields of one Dask key: the call's keywords, overridden by the key's annotations."""
    if not annotations:
        return base
    over = {name: values[key] for name, values in annotations.items() if key in values}
    if not over:
        return base
    kw = {}
    for name in PLACEMENT_KEYWORDS:
        if name in over:
            kw[name] = over[name]
    merged = dict(base)
    merged.update(fields(**kw))
    return merged
