"""rusk Python executor: runs Python tasks for a rusk worker.

The worker starts one of these per task slot (``python -u rusk-executor-HASH.py``; the worker
embeds this file, so any interpreter with ``cloudpickle`` installed works) and speaks to it over
the process's stdin and stdout. This file must not import the ``rusk`` package.

Frames, both ways: a 13-byte header ``kind: u8, id: u64 BE, len: u32 BE`` then ``len`` bytes.

worker -> executor
    ``T`` task    body: ``n: u32 BE``, ``n`` lengths ``u64 BE``, then ``n`` blobs: the payload,
                  then the task's inputs (the results of its dependencies, in order).
    ``C`` cancel  drop the queued task ``id`` if it has not started (answered by ``X``).
executor -> worker
    ``H`` hello   once, first: JSON ``{"py", "python", "cloudpickle", "pid", "executable"}``,
                  or ``{"error": "..."}`` when the executor cannot run tasks (then it exits).
    ``P`` ping    every 100 ms from a background thread. A C call that holds the GIL stops them:
                  that is how the worker detects a hung executor.
    ``S`` started task ``id`` begins.
    ``R`` result  the pickled return value of task ``id``.
    ``E`` error   ``msg_len: u32 BE``, the UTF-8 message, then the pickled
                  ``(exception, traceback_text)`` of task ``id`` (nothing when the task
                  failed before running, e.g. on a version mismatch).
    ``X`` skipped task ``id`` was cancelled before it started.

Every ``T`` is answered by exactly one of ``R``, ``E`` (each after an ``S``) and ``X``; tasks
start in the order they were received. End of stdin means: exit.

A payload is a one-line JSON header (``{"py": "3.11", "cloudpickle": "3.1.1", "rusk": 1}``)
then ``cloudpickle.dumps((func, args, kwargs, dep_paths), protocol=5)``; input ``i`` is unpickled
and put at ``dep_paths[i]``, a path into ``(args, kwargs)``.
"""

import os
import struct
import sys
import threading
import time

HEADER = struct.Struct(">BQI")
HEADER_LEN = HEADER.size
PING_INTERVAL = 0.1
RUSK_PROTOCOL = 1
# Bodies at least this big are read straight into their own buffer.
BIG_BODY = 1 << 20

K_TASK = ord("T")
K_CANCEL = ord("C")
PING = HEADER.pack(ord("P"), 0, 0)


def frame(kind, fid, *parts):
    """A frame as a list of buffers."""
    length = 0
    for p in parts:
        length += len(p)
    bufs = [HEADER.pack(kind, fid, length)]
    bufs.extend(parts)
    return bufs


class Output:
    """Frames to the worker; the ping thread and the main thread share the pipe."""

    def __init__(self, fd):
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, kind, fid, *parts):
        self.write(frame(kind, fid, *parts))

    def write(self, bufs):
        with self.lock:
            self._write(bufs)

    def _write(self, bufs):
        try:
            bufs = [memoryview(b).cast("B") for b in bufs if len(b)]
            while bufs:
                n = os.writev(self.fd, bufs)
                while bufs and n >= len(bufs[0]):
                    n -= len(bufs[0])
                    bufs.pop(0)
                if bufs and n:
                    bufs[0] = bufs[0][n:]
        except OSError:
            # The worker is gone.
            os._exit(0)

    def pinger(self):
        while True:
            time.sleep(PING_INTERVAL)
            with self.lock:
                self._write([PING])


class Input:
    """Frames from the worker: tasks queue up in ``frames``; a cancel removes its task from
    the queue at once (answered by ``X``) or, if it has started, is ignored."""

    def __init__(self, fd, out):
        import select
        from collections import deque

        self.fd = fd
        self.out = out
        self.buf = bytearray()
        self.frames = deque()
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def fill(self, block):
        """Read what is available; with ``block``, wait for at least one task."""
        while True:
            if not block and not self.poller.poll(0):
                return
            data = os.read(self.fd, 1 << 18)
            if not data:
                raise EOFError
            self.buf += data
            self._parse()
            if self.frames or not block:
                return

    def _parse(self):
        buf = self.buf
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            kind, fid, length = HEADER.unpack_from(buf, pos)
            start = pos + HEADER_LEN
            if end - start >= length:
                body = buf[start : start + length]
                pos = start + length
            elif length >= BIG_BODY:
                body = bytearray(length)
                have = end - start
                body[:have] = buf[start:end]
                view = memoryview(body)
                while have < length:
                    n = os.readv(self.fd, [view[have:]])
                    if n == 0:
                        raise EOFError
                    have += n
                view.release()
                pos = end
            else:
                break
            if kind == K_TASK:
                self.frames.append((fid, body))
            elif kind == K_CANCEL:
                self._cancel(fid)
            else:
                sys.stderr.write("rusk executor: unexpected frame kind %r\n" % kind)
                os._exit(2)
        if pos:
            del buf[:pos]

    def _cancel(self, fid):
        for f in self.frames:
            if f[0] == fid:
                self.frames.remove(f)
                self.out.send(ord("X"), fid)
                return


def main():
    # Take the protocol pipes away from fds 0 and 1 so that task code printing, or reading
    # stdin, cannot corrupt them: print() goes to stderr, input() sees /dev/null.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    out = Output(proto_out)
    threading.Thread(target=out.pinger, name="rusk-executor-ping", daemon=True).start()

    import signal

    # Ctrl-C in a terminal is for the worker; it ends us (we die with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import faulthandler

        faulthandler.enable()
    except Exception:
        pass
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        # Like `python -c`: the current directory, not the worker's work dir.
        sys.path[0] = ""

    import json

    py = "%d.%d" % sys.version_info[:2]
    try:
        import cloudpickle
    except ImportError as e:
        hello = {
            "error": "the Python executor's interpreter %s (Python %s) cannot import cloudpickle "
            "(%s): install it there (pip install cloudpickle) or point the worker at another "
            "interpreter with --python / RUSK_PYTHON" % (sys.executable, py, e)
        }
        out.send(ord("H"), 0, json.dumps(hello).encode())
        sys.exit(3)
    cp = getattr(cloudpickle, "__version__", "unknown")
    hello = {
        "py": py,
        "python": sys.version.split()[0],
        "cloudpickle": cp,
        "pid": os.getpid(),
        "executable": sys.executable,
    }
    out.send(ord("H"), 0, json.dumps(hello).encode())
    Executor(out, Input(proto_in, out), py, cp, cloudpickle).run()


class Executor:
    def __init__(self, out, inp, py, cp, cloudpickle):
        import pickle

        self.out = out
        self.inp = inp
        self.py = py
        self.cp = cp
        self.cloudpickle = cloudpickle
        self.pickle = pickle
        self.good_header = None
        self.max_result = int(os.environ.get("RUSK_MAX_RESULT_BYTES", str(128 << 20)))
        self.simple = (type(None), bool, int, float, complex, str, bytes)

    def run(self):
        inp = self.inp
        frames = inp.frames
        out = self.out
        held = None  # the last task's answer, written with the next task's start
        while True:
            try:
                if frames:
                    # Pick up cancels that came meanwhile.
                    inp.fill(False)
                else:
                    if held is not None:
                        out.write(held)
                        held = None
                    inp.fill(True)
            except EOFError:
                return
            if not frames:
                continue
            tid, body = frames.popleft()
            started = frame(ord("S"), tid)
            if held is not None:
                held.extend(started)
                out.write(held)
            else:
                out.write(started)
            held = self.task(tid, body)

    def task(self, tid, body):
        """Run one task; returns its answer frame."""
        pickle = self.pickle
        try:
            (n,) = struct.unpack_from(">I", body, 0)
            lens = struct.unpack_from(">%dQ" % n, body, 4)
        except struct.error:
            return self.fail(tid, "malformed task frame from the worker")
        view = memoryview(body)
        off = 4 + 8 * n
        plen = lens[0]
        nl = body.find(b"\n", off, off + plen)
        if nl < 0:
            return self.fail(tid, "the task's payload has no header line (not made by a rusk client?)")
        header = bytes(view[off:nl])
        if header != self.good_header:
            problem = self.check_header(header)
            if problem:
                return self.fail(tid, problem)
            self.good_header = header
        try:
            func, args, kwargs, dep_paths = pickle.loads(view[nl + 1 : off + plen])
        except BaseException as exc:
            return self.fail_exc(tid, exc, "cannot unpickle the task's function and arguments: ")
        off += plen
        if len(dep_paths) != n - 1:
            return self.fail(
                tid,
                "the task's payload places %d dependencies but the worker gave it %d inputs"
                % (len(dep_paths), n - 1),
            )
        if dep_paths:
            root = [args, kwargs]
            for i, path in enumerate(dep_paths):
                ln = lens[i + 1]
                try:
                    value = pickle.loads(view[off : off + ln])
                except BaseException as exc:
                    return self.fail_exc(tid, exc, "cannot unpickle input %d: " % i)
                off += ln
                try:
                    root = _put(root, path, 0, value)
                except Exception as exc:
                    return self.fail_exc(tid, exc, "cannot place input %d at %r: " % (i, path))
            args, kwargs = root
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            return self.fail_exc(tid, exc, "", user=True)
        del args, kwargs, func
        try:
            if type(result) in self.simple:
                data = pickle.dumps(result, protocol=5)
            else:
                data = self.cloudpickle.dumps(result, protocol=5)
        except BaseException as exc:
            return self.fail_exc(tid, exc, "cannot pickle the task's result: ")
        del result
        if len(data) > self.max_result:
            return self.fail(
                tid,
                "the task's pickled result of %d bytes exceeds the limit of %d bytes"
                % (len(data), self.max_result),
            )
        return frame(ord("R"), tid, data)

    def check_header(self, header):
        import json

        try:
            h = json.loads(header)
            py, cp, proto = h.get("py"), h.get("cloudpickle"), h.get("rusk")
        except Exception:
            return "the task's payload header %r is not valid JSON" % header[:200]
        if proto != RUSK_PROTOCOL:
            return (
                "the task's payload uses rusk payload format %r but this worker's Python "
                "executor speaks format %d: use a client and workers of the same rusk release"
                % (proto, RUSK_PROTOCOL)
            )
        if py != self.py or cp != self.cp:
            return (
                "version mismatch: the client pickled this task with Python %s and cloudpickle "
                "%s, but the worker's Python executor (%s) has Python %s and cloudpickle %s; "
                "install the same versions on both sides (the worker's interpreter is set with "
                "--python / RUSK_PYTHON)" % (py, cp, sys.executable, self.py, self.cp)
            )
        return None

    def fail(self, tid, message):
        # No exception to re-raise: the client raises its own error with the message.
        return self._error(tid, message, b"")

    def fail_exc(self, tid, exc, prefix, user=False):
        import traceback

        tb = exc.__traceback__
        if user:
            # Hide this file's frames: the traceback starts in the task's function.
            while tb is not None and tb.tb_frame.f_globals is globals():
                tb = tb.tb_next
        try:
            tb_text = "".join(traceback.format_exception(type(exc), exc, tb))
        except BaseException:
            tb_text = ""
        text = _exc_text(exc)
        message = prefix + text
        try:
            last = traceback.extract_tb(tb)[-1] if tb is not None else None
        except BaseException:
            last = None
        if last is not None:
            message += '\n  File "%s", line %s, in %s' % (last.filename, last.lineno, last.name)
        detail = None
        try:
            detail = self.cloudpickle.dumps((exc, tb_text), protocol=5)
            self.pickle.loads(detail)  # an exception that pickles may still not unpickle
        except BaseException:
            detail = None
        if detail is None:
            try:
                detail = self.pickle.dumps((RuntimeError(text), tb_text), protocol=5)
            except BaseException:
                detail = self.pickle.dumps((RuntimeError(text), ""), protocol=5)
        return self._error(tid, message, detail)

    def _error(self, tid, message, detail):
        msg = message.encode("utf-8", "replace")
        return frame(ord("E"), tid, struct.pack(">I", len(msg)), msg, detail)


def _exc_text(exc):
    try:
        s = str(exc)
    except BaseException:
        s = "<unprintable>"
    name = type(exc).__name__
    return "%s: %s" % (name, s) if s else name


def _put(container, path, k, value):
    """Return ``container`` with ``value`` at ``path[k:]`` (tuples are rebuilt)."""
    key = path[k]
    child = value if k == len(path) - 1 else _put(container[key], path, k + 1, value)
    if isinstance(container, tuple):
        items = list(container)
        items[key] = child
        if hasattr(container, "_make"):  # a namedtuple
            return container._make(items)
        return tuple(items)
    container[key] = child
    return container


if __name__ == "__main__":
    main()
