"""The task payload shared with the worker's executor (``_executor.py``).

A Python task's payload is a header line, JSON with the client's versions::

    b'{"py": "3.11", "cloudpickle": "3.1.1", "rusk": 1}\\n'

followed by ``cloudpickle.dumps((func, args, kwargs, dep_paths), protocol=5)``, or, for the tasks
of one graph encoded together (:func:`encode_calls`), by ``b"S"``, the length of a *prelude*
(4 bytes, big-endian), the prelude, and a pickle of the call whose functions and classes are
persistent ids into the prelude: the prelude is ``cloudpickle.dumps`` of a dict from those ids
to the functions and classes the call uses, pickled once for all the calls that use the same
ones (a function used by 4,000 tasks is pickled once, not 4,000 times; a task with a lambda of
its own carries only that lambda), and each executor unpickles a prelude once. Each dependency's
value sits in ``(args, kwargs)`` as a ``None`` placeholder at ``dep_paths[i]``: ``(0, 2)`` is
``args[2]``, ``(1, "x")`` is ``kwargs["x"]``, ``(0, 1, "k", 0)`` is ``args[1]["k"][0]``. The task's
``deps`` list names the key of each path, in the same order (a key may appear several times).

A call whose big literals (numpy arrays, pandas frames: ``BIG_LITERAL_MIN``) were taken out
(``encode_calls(big=...)``, when those of the submission pass ``BIG_LITERALS_PUT_MIN_TOTAL``)
refers to each by the persistent id ``("v", j)``: the task's input ``j``. Those inputs come
first, before the dependencies placed at ``dep_paths``; they are put on workers by the client
(``_data.put_literals``) and named by the task's first ``deps``.

A result is a value as ``_executor.dump_value`` lays it out (a plain pickle, or the ``RSKV``
layout with out-of-band buffers); a failure's detail is
``cloudpickle.dumps((exception, traceback_text))``.
"""

import json
import os
import pickle
import sys
import types

import cloudpickle

from . import _executor

# What a graph's prelude holds (besides classes): functions, shared by reference from each task.
_SHARED_TYPES = frozenset((types.FunctionType, types.BuiltinFunctionType, types.MethodType))

#: Version of the payload format (2: the shared prelude).
PAYLOAD_VERSION = 2

PICKLE_PROTOCOL = 5

HEADER = (
    json.dumps(
        {
            "py": "%d.%d" % sys.version_info[:2],
            "cloudpickle": cloudpickle.__version__,
            "rusk": PAYLOAD_VERSION,
        }
    ).encode()
    + b"\n"
)


def encode_call(func, args, kwargs, dep_paths):
    """The payload of one call. Raises whatever pickling raises (an unpicklable function)."""
    body = cloudpickle.dumps(
        (func, tuple(args), dict(kwargs), [tuple(p) for p in dep_paths]),
        protocol=PICKLE_PROTOCOL,
    )
    return HEADER + body


#: Literal objects (numpy arrays, pandas frames) this big or bigger are candidates to be
#: put on a worker rather than pickled into their tasks' payloads.
BIG_LITERAL_MIN = 1 << 20
#: ... which they are once the distinct ones of one submission pass this many bytes in all:
#: below it they stay in the payloads, which travel through the scheduler (and its journal)
#: but keep the graph's lineage whole (a task can always run again).
BIG_LITERALS_PUT_MIN_TOTAL = 64 << 20


def size_hint(value):
    """The bytes of ``value``'s data, cheaply (no pickling): numpy arrays, pandas objects,
    bytes; 0 for what it cannot tell."""
    n = getattr(value, "nbytes", None)
    if isinstance(n, int):
        return n
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    usage = getattr(value, "memory_usage", None)
    if callable(usage):
        try:
            u = usage(index=True, deep=False)
            return int(u.sum() if hasattr(u, "sum") else u)
        except Exception:
            return 0
    return 0


def may_put(args, kwargs):
    """Whether the big literals among a call's arguments (and one level into its lists,
    tuples and dicts) pass ``BIG_LITERALS_PUT_MIN_TOTAL``: a cheap look before
    ``encode_calls(big=...)``, which costs more than ``encode_call``."""
    types = _big_types()
    if not types:
        return False
    total = 0
    for a in list(args) + list(kwargs.values()):
        items = a.values() if type(a) is dict else a if type(a) in (list, tuple) else (a,)
        for x in items:
            if type(x) in types:
                total += size_hint(x)
    return total >= BIG_LITERALS_PUT_MIN_TOTAL


def _big_types():
    """The exact types whose big instances ``encode_calls`` takes out of payloads (those of
    numpy and pandas, when they are imported: no import here)."""
    out = set()
    np = sys.modules.get("numpy")
    if np is not None:
        out.add(np.ndarray)
    pd = sys.modules.get("pandas")
    if pd is not None:
        out.update((pd.DataFrame, pd.Series))
    return frozenset(out)


def encode_calls(calls, normalized=False, each=(), big=None):
    """``_encode_calls``; with a list ``big``, big literal objects are taken out of the
    payloads when those of the whole submission pass ``BIG_LITERALS_PUT_MIN_TOTAL``: each call
    refers to its own by persistent id ``("v", j)``, the executor's input ``j`` (the first
    inputs of the task, before its dependencies), and ``big`` gets, per call, the list of its
    objects in that order, for the caller to put on workers as the tasks' first
    dependencies. Otherwise ``big`` gets an empty list per call."""
    if big is None:
        return _encode_calls(calls, normalized, each, False)
    found = []
    out = _encode_calls(calls, normalized, each, found)
    distinct = {id(o): o for objs in found for o in objs}
    if sum(size_hint(o) for o in distinct.values()) < BIG_LITERALS_PUT_MIN_TOTAL:
        big.extend([] for _ in found)
        return _encode_calls(calls, normalized, each, False) if distinct else out
    big.extend(found)
    return out


def _encode_calls(calls, normalized, each, found):
    """The payloads of many calls ``(func, args, kwargs, dep_paths)`` at once, their functions
    and classes pickled once, by cloudpickle, in a shared prelude. The rest of the calls is
    pickled by the standard pickler (2-3x faster than cloudpickle, since everything only
    cloudpickle can pickle is a function or a class) in one pass for all of them (see
    :func:`_dump_all`), or call by call, by cloudpickle where the standard pickler fails.
    ``normalized``: each call is a tuple whose ``args`` is a tuple, ``kwargs`` a dict and
    ``dep_paths`` a tuple or list of tuples already. ``each``: the indexes of calls to pickle
    one by one, with a memo, as calls that repeat objects (a Dask node names its
    dependencies' keys several times) are best pickled. Raises whatever pickling raises."""
    import struct

    shared = []
    index = {}
    shared_types = _SHARED_TYPES
    plain_types = _PLAIN_TYPES
    sep = os.urandom(16)  # between the calls of the one-pass pickle (`_dump_all`)
    # The shared objects each call refers to, so that its prelude holds only those (a prelude
    # of every function of the graph in every payload is quadratic: a graph of 5,000 tasks
    # each with its own lambda would send 5,000 x 5,000 functions).
    used = []
    current = set()
    # `found` (a list): big literals are taken out, by id per call: (j, object).
    big_types = _big_types() if found is not False else frozenset()
    bigs = []
    current_big = {}

    def persistent_id(obj):
        nonlocal current, current_big
        t = type(obj)
        if t in plain_types:
            if obj is sep:
                used.append(current)
                bigs.append(current_big)
                current, current_big = set(), {}
            return None
        if t in shared_types or isinstance(obj, type):
            i = index.get(id(obj))
            if i is None:
                i = index[id(obj)] = len(shared)
                shared.append(obj)
            current.add(i)
            return i
        if t in big_types and size_hint(obj) >= BIG_LITERAL_MIN:
            e = current_big.get(id(obj))
            if e is None:
                e = current_big[id(obj)] = (len(current_big), obj)
            return ("v", e[0])
        return None

    def end_call():
        nonlocal current, current_big
        used.append(current)
        bigs.append(current_big)
        current, current_big = set(), {}

    if not normalized:
        calls = [(f, tuple(a), dict(kw), [tuple(p) for p in paths]) for f, a, kw, paths in calls]
    one_by_one = set(each)
    together = [c for i, c in enumerate(calls) if i not in one_by_one] if one_by_one else calls
    bodies = _dump_all(together, persistent_id, sep) if together else []
    if bodies is None:  # every call on its own, then
        one_by_one = set(range(len(calls)))
        bodies = []
        used.clear()
        bigs.clear()
        current, current_big = set(), {}
    if one_by_one:
        together_marks = list(zip(used, bigs))
        used.clear()
        bigs.clear()
        alone = iter(_dump_each([calls[i] for i in sorted(one_by_one)], persistent_id, end_call))
        marks_alone = iter(list(zip(used, bigs)))
        rest, marks_rest = iter(bodies), iter(together_marks)
        bodies, used[:], bigs[:] = [], [], []
        for i in range(len(calls)):
            body, marks = (next(alone), next(marks_alone)) if i in one_by_one else (next(rest), next(marks_rest))
            bodies.append(body)
            used.append(marks[0])
            bigs.append(marks[1])
    if found is not False:
        found.extend([o for _, o in sorted(d.values(), key=lambda e: e[0])] for d in bigs)
    # One prelude per distinct set of shared objects: a function all tasks use is pickled
    # once, and each task with a lambda of its own carries only that lambda.
    heads = {}
    out = []
    for body, refs in zip(bodies, used):
        key = frozenset(refs)
        head = heads.get(key)
        if head is None:
            prelude = cloudpickle.dumps({i: shared[i] for i in sorted(key)}, protocol=PICKLE_PROTOCOL)
            head = heads[key] = HEADER + b"S" + struct.pack(">I", len(prelude)) + prelude
        out.append(head + body)
    return out


# Types the prelude never holds: most of what a call is made of (faster `persistent_id`).
_PLAIN_TYPES = frozenset((type(None), bool, int, float, str, bytes, tuple, list, dict))


def _dump_all(calls, persistent_id, sep):
    """The pickles of ``calls``, made in ONE pass of the standard pickler (one ``dump`` of
    them all, not one per call), or None if it fails.

    The pass runs without a memo (``fast``) and with protocol 3 (no framing), so the pickle of
    each call is self-contained: the one of the tuple ``(call0, SEP, call1, SEP, ...)`` is
    ``PROTO MARK call0 SEP call1 SEP ... TUPLE STOP``, where ``SEP`` is a fresh random bytes
    object pickled as ``SHORT_BINBYTES 16 <its bytes>``. Split at those, each piece plus a
    ``STOP`` is the pickle of one call. Cyclic objects (which ``fast`` refuses), objects the
    standard pickler cannot pickle or that need protocol 5, and a separator that also occurs
    in the data all give None: the caller then pickles call by call."""
    import io

    class Fast(pickle.Pickler):
        pass

    Fast.persistent_id = staticmethod(persistent_id)
    seq = [sep] * (2 * len(calls))
    seq[::2] = calls
    buf = io.BytesIO()
    pickler = Fast(buf, protocol=3)
    pickler.fast = True
    try:
        pickler.dump(tuple(seq))
    except Exception:  # the pickler's fast mode has its own failures (KeyError, deep nesting)
        return None
    data = buf.getvalue()
    del seq, buf
    if data[:3] != b"\x80\x03(" or data[-2:] != b"t.":
        return None
    pieces = data[3:-2].split(b"C\x10" + sep)
    if len(pieces) != len(calls) + 1 or pieces[-1]:
        return None
    pieces.pop()
    return [piece + b"." for piece in pieces]


def _dump_each(calls, persistent_id, end_call):
    """The pickles of ``calls``, one ``dump`` each: by the standard pickler, or by cloudpickle
    where that fails. ``end_call()`` after each."""
    import io

    class Fast(pickle.Pickler):
        pass

    class Full(cloudpickle.Pickler):
        pass

    Fast.persistent_id = Full.persistent_id = staticmethod(persistent_id)
    buf = io.BytesIO()
    fast = Fast(buf, protocol=PICKLE_PROTOCOL)
    full = None
    bodies = []
    for call in calls:
        buf.seek(0)
        buf.truncate()
        fast.clear_memo()
        try:
            fast.dump(call)
        except (pickle.PicklingError, TypeError, AttributeError):
            buf.seek(0)
            buf.truncate()
            if full is None:
                full = Full(buf, protocol=PICKLE_PROTOCOL)
            full.clear_memo()
            full.dump(call)
        bodies.append(buf.getvalue())
        end_call()
    return bodies


def extract_placeholders(args, kwargs, is_placeholder):
    """Replace each object for which ``is_placeholder`` holds, in ``args`` (a tuple) and
    ``kwargs`` (a dict) and inside the lists, tuples and dicts they contain, by ``None``.

    Returns ``(args, kwargs, found)`` where ``found`` is a list of ``(path, object)`` in a
    deterministic order. Containers without placeholders are returned unchanged (same object).
    """
    found = []

    def walk(obj, path):
        if is_placeholder(obj):
            found.append((path, obj))
            return None
        t = type(obj)
        if t is list or t is tuple:
            out = None
            for i, item in enumerate(obj):
                new = walk(item, path + (i,))
                if new is not item:
                    if out is None:
                        out = list(obj)
                    out[i] = new
            if out is None:
                return obj
            return out if t is list else tuple(out)
        if t is dict:
            out = None
            for k, item in obj.items():
                new = walk(item, path + (k,))
                if new is not item:
                    if out is None:
                        out = dict(obj)
                    out[k] = new
            return obj if out is None else out
        return obj

    try:
        new_args = walk(tuple(args), (0,))
        new_kwargs = walk(dict(kwargs), (1,))
    finally:
        # `walk` refers to itself through its closure: empty its cell, or the cycle keeps
        # `found` (the futures passed as arguments) alive until the next garbage collection.
        del walk
    return new_args, new_kwargs, found


def loads(data):
    """A result as the executor pickled it: a plain pickle, or the ``RSKV`` layout whose
    out-of-band buffers (numpy, pandas, Arrow data) become views of ``data``, not copies.

    ``data`` is ``bytes``, or ``(fd, size)``: a large value as the extension received it, in
    shared memory that is mapped here (and the fd closed), so it is never copied."""
    if isinstance(data, tuple):
        fd, size = data
        try:
            view = _executor.map_segment("/proc/self/fd/%d" % fd, 0, size)
        finally:
            os.close(fd)
        return _executor.load_value(view, pickle.loads)
    return _executor.load_value(memoryview(data), pickle.loads)


class RemoteTraceback(Exception):
    """Carries the traceback of an exception raised in a task on a worker; it is attached as
    the ``__cause__`` of the re-raised exception, so Python prints it above the local one."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return "\n\nRemote traceback (on the rusk worker):\n" + '"""\n%s"""' % self.tb


class TaskError(RuntimeError):
    """A task failed without a Python exception to re-raise (a time limit, a worker that
    kept dying under it, an executor that hung, an exception that could not be unpickled...)."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


def decode_failure(key, error, detail):
    """The exception to raise for a failed task: the original one (with the remote traceback as
    its cause) when the executor sent it, else a :class:`TaskError` with the scheduler's
    message."""
    if detail:
        try:
            exc, tb = pickle.loads(detail)
        except Exception as e:  # the exception's class may not exist here
            return TaskError("%s (the remote exception could not be unpickled: %r)" % (error, e), key)
        if isinstance(exc, BaseException):
            if tb:
                exc.__cause__ = RemoteTraceback(tb)
            return exc
    return TaskError(error or "task %r failed" % (key,), key)
