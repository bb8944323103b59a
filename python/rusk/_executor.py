"""rusk Python executor: runs Python tasks for a rusk worker.

The worker starts one of these per task slot (``python -u rusk-executor-HASH.py``; the worker
embeds this file, so any interpreter with ``cloudpickle`` installed works) and speaks to it over
the process's stdin and stdout. This file must not import the ``rusk`` package.

Frames, both ways: a 13-byte header ``kind: u8, id: u64 BE, len: u32 BE`` then ``len`` bytes.

worker -> executor
    ``T`` task    body: ``n: u32 BE``, then ``n`` descriptors of 24 bytes
                  (``kind: u8, 3 pad, fd: u32 BE, offset: u64 BE, len: u64 BE``), then the
                  inline blobs, in order. Blob 0 is the payload, the others are the task's
                  inputs (the results of its dependencies, in order). ``kind`` 0: the blob is
                  inline; 1: it is ``len`` bytes at ``offset`` of the worker's shared-memory
                  segment ``/proc/<worker pid>/fd/<fd>``, which the executor maps read-only:
                  numpy, pandas and Arrow buffers in it are used in place, never copied.
    ``K`` claim   body ``claim: u32 BE``: the next ``T`` of task ``id`` may be held by another
                  executor too. Before starting it, create ``<id>.<claim>`` in
                  ``RUSK_CLAIMS_DIR`` exclusively (``O_EXCL``: atomic between processes); if
                  it exists, another executor took the task: skip it (``X``).
    ``C`` cancel  drop the queued task ``id`` if it has not started (answered by ``X``).
    ``F`` free    the worker has mapped the result segment of task ``id``: close our fd.
    ``G`` grant   the answer to task ``id``'s ``A``: ``1: u8, fd: u32 BE, len: u64 BE``, a
                  segment of the worker (``/proc/<worker pid>/fd/<fd>``, often memory it
                  reused) to write the result into; or ``0: u8``, none: write a memfd of our own.
executor -> worker
    ``H`` hello   once, first: JSON ``{"py", "python", "cloudpickle", "pid", "executable"}``,
                  or ``{"error": "..."}`` when the executor cannot run tasks (then it exits).
    ``P`` ping    every 100 ms from a background thread. A C call that holds the GIL stops them:
                  that is how the worker detects a hung executor.
    ``S`` started task ``id`` begins.
    ``A`` ask     ``size: u64 BE``: the running task ``id``'s result takes ``size`` bytes (at
                  least ``INLINE_VALUE_MAX``); the worker answers ``G``.
    ``R`` result  ``kind: u8``; 0: the value follows inline; 1: ``fd: u32 BE, len: u64 BE``,
                  the value is in the sealed memfd ``/proc/<executor pid>/fd/<fd>``, which the
                  worker maps (and answers with ``F``); 2: ``input: u32 BE``, the task returned
                  its input ``input`` unchanged and the value cannot have been changed in place
                  (a read-only numpy array, bytes, str): the worker stores that input's bytes
                  again, so nothing is pickled or copied; 3: ``len: u64 BE``, the value is
                  in the segment the worker granted to the task (``G``).
    ``E`` error   ``msg_len: u32 BE``, the UTF-8 message, then the pickled
                  ``(exception, traceback_text)`` of task ``id`` (nothing when the task
                  failed before running, e.g. on a version mismatch).
    ``X`` skipped task ``id`` was cancelled, or claimed by another executor, before it started.
    ``U`` unmapped  id 0; ``n`` fds (``u32 BE`` each, the worker's numbers, one per mapping):
                  input segments this executor mapped for tasks and has unmapped since, each
                  once per mapping. Until then the worker keeps them (their memory is neither
                  freed nor reused while an executor may still read it).

Every ``T`` is answered by exactly one of ``R``, ``E`` (each after an ``S``) and ``X``; tasks
start in the order they were received. End of stdin means: exit. ``SIGUSR1`` makes the
executor write the Python stack of every thread to its stack file (faulthandler: this works
while a C call holds the GIL), which the worker reads before it kills a hung executor.

A value (a task's result) is either a plain pickle, or, when it is large or carries
out-of-band buffers (pickle protocol 5), the layout ``RSKV``: ``b"RSKV", version: u8 = 1,
3 pad, nbuf: u32 LE, 4 pad, pickle_len: u64 LE, nbuf buffer lengths (u64 LE)``, the pickle
stream, then each buffer at the next multiple of 64 bytes. ``load_value`` rebuilds it with
the buffers as views of the memory it is given (no copy); the client uses the same function.

A payload is a one-line JSON header (``{"py": "3.11", "cloudpickle": "3.1.1", "rusk": 1}``)
then ``cloudpickle.dumps((func, args, kwargs, dep_paths), protocol=5)``; input ``i`` is unpickled
and put at ``dep_paths[i]``, a path into ``(args, kwargs)``.
"""

import io
import os
import struct
import sys
import threading
import time

HEADER = struct.Struct(">BQI")
HEADER_LEN = HEADER.size
PING_INTERVAL = 0.1
RUSK_PROTOCOL = 2

#: Graph preludes (see `_payload.encode_calls`) an executor keeps unpickled, newest last.
PRELUDES_MAX = 16
# Bodies at least this big are read straight into their own buffer.
BIG_BODY = 1 << 20

K_TASK = ord("T")
K_CLAIM = ord("K")
K_CANCEL = ord("C")
K_FREE = ord("F")
K_GRANT = ord("G")
PING = HEADER.pack(ord("P"), 0, 0)
# A task frame's blob descriptor: kind, fd, offset, length.
BLOB = struct.Struct(">B3xIQQ")
# A `K` frame's body: the claim.
CLAIM = struct.Struct(">I")
# A `G` frame's body when granted: 1, the worker's fd, the segment's length.
GRANT = struct.Struct(">BIQ")
# Results smaller than this (with no out-of-band buffers) go inline through the pipe; the rest
# are written to a shared-memory segment (the worker's INLINE_VALUE_MAX).
INLINE_VALUE_MAX = 64 * 1024
VALUE_MAGIC = b"RSKV"
VALUE_HEADER = struct.Struct("<4sB3xI4xQ")
ALIGN = 64


def _aligned(n):
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def dump_value(obj, dumps):
    """Pickle ``obj`` (protocol 5, out-of-band buffers kept apart).

    Returns ``(size, pieces)``: the value is ``size`` bytes in the ``RSKV`` layout, made of
    ``pieces``, a list of ``(offset, bytes-like)`` (the gaps between them are zeros); or
    ``(None, data)`` for a small value with no buffers (a plain pickle).
    """
    buffers = []
    data = dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = []
    for b in buffers:
        try:
            raws.append(b.raw())
        except BufferError:
            # Not contiguous: pickle it in band instead.
            return dump_value_in_band(obj, dumps)
    if not raws:
        if len(data) < INLINE_VALUE_MAX:
            return None, data
        return dump_value_in_band(obj, dumps, data)
    head = VALUE_HEADER.size + 8 * len(raws)
    header = VALUE_HEADER.pack(VALUE_MAGIC, 1, len(raws), len(data)) + struct.pack(
        "<%dQ" % len(raws), *[r.nbytes for r in raws]
    )
    pieces = [(0, header), (head, data)]
    end = _aligned(head + len(data))
    for r in raws:
        pieces.append((end, r))
        end = _aligned(end + r.nbytes)
    return max(end, 1), pieces


def value_dumps(cloudpickle):
    """``cloudpickle.dumps`` for stored values: a numpy array with a zero stride (a broadcast
    view: ``np.broadcast_to``, and every chunk of ``da.ones``, ``da.zeros``, ``da.full``) is
    pickled as its one repeated part and comes back as the same read-only broadcast view, as
    Dask's serialisation does, instead of being copied out to its full size."""
    import io

    base = cloudpickle.Pickler
    parent = getattr(base, "reducer_override", None)

    class Pickler(base):
        def reducer_override(self, obj):
            np = sys.modules.get("numpy")
            if (
                np is not None
                and type(obj) is np.ndarray
                and 0 in obj.strides
                and obj.size > 1
                and any(st == 0 and n > 1 for st, n in zip(obj.strides, obj.shape))
            ):
                # Axes of length 1 have no stride to speak of: only the repeated ones shrink.
                part = obj[tuple(slice(0, 1) if st == 0 else slice(None) for st in obj.strides)]
                return np.broadcast_to, (np.ascontiguousarray(part), obj.shape)
            if parent is None:
                return NotImplemented
            return parent(self, obj)

    def dumps(obj, protocol=5, buffer_callback=None):
        f = io.BytesIO()
        Pickler(f, protocol=protocol, buffer_callback=buffer_callback).dump(obj)
        return f.getvalue()

    return dumps


def dump_value_in_band(obj, dumps, data=None):
    if data is None:
        data = dumps(obj, protocol=5)
    if len(data) < INLINE_VALUE_MAX:
        return None, data
    header = VALUE_HEADER.pack(VALUE_MAGIC, 1, 0, len(data))
    return len(header) + len(data), [(0, header), (len(header), data)]


def lay_out(size, pieces):
    """The value of ``dump_value`` as one bytearray (for small values)."""
    buf = bytearray(size)
    for off, p in pieces:
        mv = memoryview(p).cast("B")
        buf[off : off + len(mv)] = mv
    return buf


def load_value(mv, loads):
    """The object in ``mv`` (a memoryview): a plain pickle or the ``RSKV`` layout, whose
    buffers become views of ``mv`` (read-only where ``mv`` is)."""
    if mv[:4] != VALUE_MAGIC:
        return loads(mv)
    magic, version, nbuf, plen = VALUE_HEADER.unpack_from(mv, 0)
    if version != 1:
        raise ValueError("value layout version %d is not supported" % version)
    lens = struct.unpack_from("<%dQ" % nbuf, mv, VALUE_HEADER.size)
    head = VALUE_HEADER.size + 8 * nbuf
    buffers = []
    off = _aligned(head + plen)
    for n in lens:
        if off + n > len(mv):
            raise ValueError("value truncated: buffer at %d+%d of %d bytes" % (off, n, len(mv)))
        buffers.append(mv[off : off + n])
        off = _aligned(off + n)
    return loads(mv[head : head + plen], buffers=buffers)


def map_segment(path, offset, length):
    """A read-only view of ``length`` bytes at ``offset`` of the shared segment at ``path``."""
    import mmap

    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if offset + length > size:
            raise ValueError(
                "segment %s holds %d bytes, not %d at %d" % (path, size, length, offset)
            )
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return memoryview(mm)[offset : offset + length]


def write_segment(size, pieces):
    """A sealed memfd of ``size`` bytes holding ``pieces`` (see ``dump_value``); returns its
    fd. The pieces are written to the file (``pwrite``), never through a mapping: fresh shared
    memory filled that way skips the page faults and zeroing of a first touch."""
    import fcntl

    fd = os.memfd_create("rusk-result", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        for off, p in pieces:
            mv = memoryview(p).cast("B")
            done = 0
            while done < len(mv):
                # One write moves at most about 2 GiB (Linux's MAX_RW_COUNT).
                done += os.pwrite(fd, mv[done : done + (1 << 30)], off + done)
        fcntl.fcntl(
            fd,
            fcntl.F_ADD_SEALS,
            fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL,
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        # Result segments the worker has not mapped yet: task id -> fd.
        self.result_fds = {}

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
        self.claims = {}  # task id -> the claim its queued `T` must take (`K`)
        self.grants = {}  # task id -> (worker fd, length) or None: the answer to its `A`
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
            elif kind == K_CLAIM:
                self.claims[fid] = CLAIM.unpack_from(body)[0]
            elif kind == K_CANCEL:
                self._cancel(fid)
            elif kind == K_FREE:
                fd = self.out.result_fds.pop(fid, None)
                if fd is not None:
                    os.close(fd)
            elif kind == K_GRANT:
                self.grants[fid] = GRANT.unpack(body)[1:] if len(body) == GRANT.size else None
            else:
                sys.stderr.write("rusk executor: unexpected frame kind %r\n" % kind)
                os._exit(2)
        if pos:
            del buf[:pos]

    def wait_grant(self, fid):
        """Read frames until the worker answers task ``fid``'s ``A``; the others are queued
        as usual. Returns ``(worker fd, length)``, or None when refused."""
        while fid not in self.grants:
            data = os.read(self.fd, 1 << 18)
            if not data:
                raise EOFError
            self.buf += data
            self._parse()
        return self.grants.pop(fid)

    def _cancel(self, fid):
        for f in self.frames:
            if f[0] == fid:
                self.frames.remove(f)
                self.claims.pop(fid, None)
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
        # The worker asks for our stacks (SIGUSR1) before it kills us as hung: faulthandler
        # writes them from the signal handler, even while a C call holds the GIL.
        stack_path = os.environ.get("RUSK_EXECUTOR_STACK_FILE")
        if stack_path:
            stack_file = open(stack_path, "w")
            faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
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
        self.dumps = value_dumps(cloudpickle)
        self.pickle = pickle
        self.good_header = None
        self.preludes = {}  # prelude bytes -> its list of functions and classes
        self.uploads_dir = os.environ.get("RUSK_UPLOADS_DIR") or "/nonexistent"
        self.claims_dir = os.environ.get("RUSK_CLAIMS_DIR") or "/nonexistent"
        self.uploads_seen = None  # the uploads directory's mtime when last looked at
        self.uploads = {}  # path -> mtime of the uploaded files seen
        self.worker_pid = int(os.environ.get("RUSK_WORKER_PID") or os.getppid())
        self.simple = (type(None), bool, int, float, complex, str, bytes)
        # (worker fd, mmap) of every input segment mapped and not yet unmapped.
        self.maps = []
        # Mappings a forked child inherited: never unmapped or reported (the worker keeps
        # them, and never reuses their memory once this executor is gone).
        self.pinned = []
        os.register_at_fork(before=self._pin_maps)
        self.current = None  # the task running, while one is
        self.seceded = False
        # `rusk.secede()` and `rusk.get_client()` in task code find the executor here.
        sys.modules["__rusk_executor__"] = self

    def secede(self):
        """The running task stops holding its thread slot (``W``): the worker starts another
        executor for the slot. A no-op outside a task, or when it already seceded."""
        if self.current is not None and not self.seceded:
            self.seceded = True
            self.out.send(ord("W"), self.current)

    def rejoin(self):
        """The seceded running task holds its thread slot again (``J``): if the pool has one
        executor too many then, another one retires once idle. A no-op unless seceded."""
        if self.current is not None and self.seceded:
            self.seceded = False
            self.out.send(ord("J"), self.current)

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
            claim = inp.claims.pop(tid, None)
            if claim is not None and not self.claim(tid, claim):
                # Another executor took it: never run a task twice.
                skipped = frame(ord("X"), tid)
                if held is None:
                    held = skipped
                else:
                    held.extend(skipped)
                continue
            started = frame(ord("S"), tid)
            if held is not None:
                held.extend(started)
                out.write(held)
            else:
                out.write(started)
            self.current, self.seceded = tid, False
            try:
                held = self.task(tid, body)
            finally:
                self.current = None
            unmapped = self.release_maps()
            if unmapped:
                held.extend(unmapped)

    def claim(self, tid, claim):
        """Take the claim of task ``tid`` (see ``K``); False if another executor has it."""
        path = "%s/%d.%d" % (self.claims_dir, tid, claim)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            return False
        except OSError as e:
            # The directory is gone (removed from outside): run it rather than lose it.
            sys.stderr.write("rusk executor: cannot claim task %d at %s: %s\n" % (tid, path, e))
        return True

    def sync_uploads(self):
        """Make the files clients uploaded (``Client.upload_file``, written by the worker into
        ``RUSK_UPLOADS_DIR``) importable, and reload a module whose file was uploaded again.
        One ``stat`` per task when nothing changed."""
        d = self.uploads_dir
        try:
            seen = os.stat(d).st_mtime_ns
        except OSError:
            return
        if seen == self.uploads_seen:
            return
        self.uploads_seen = seen
        import importlib

        if d not in sys.path:
            sys.path.insert(0, d)
        changed = []
        for name in sorted(os.listdir(d)):
            if name.startswith("."):
                continue
            path = os.path.join(d, name)
            try:
                mtime = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if self.uploads.get(path) == mtime:
                continue
            self.uploads[path] = mtime
            if name.endswith((".zip", ".egg", ".whl")):
                if path not in sys.path:
                    sys.path.insert(0, path)
            changed.append(name)
        importlib.invalidate_caches()
        for name in changed:
            module = sys.modules.get(name[:-3]) if name.endswith(".py") else None
            if module is not None:
                try:
                    importlib.reload(module)
                except Exception:
                    pass  # the task importing it reports the error

    def task(self, tid, body):
        """Run one task; returns its answer frame."""
        self.sync_uploads()
        pickle = self.pickle
        try:
            blobs = self.blobs(body)
        except Exception as exc:
            return self.fail_exc(tid, exc, "malformed task frame from the worker: ")
        payload = blobs[0]
        nl = bytes(payload[:4096]).find(b"\n")
        if nl < 0:
            return self.fail(tid, "the task's payload has no header line (not made by a rusk client?)")
        header = bytes(payload[:nl])
        if header != self.good_header:
            problem = self.check_header(header)
            if problem:
                return self.fail(tid, problem)
            self.good_header = header
        refs = {}  # big literals the call refers to: its first inputs, by index
        try:
            func, args, kwargs, dep_paths = self.load_call(payload, nl + 1, blobs, refs)
        except BaseException as exc:
            return self.fail_exc(tid, exc, "cannot unpickle the task's function and arguments: ")
        n = len(blobs)
        nref = len(refs)
        if len(dep_paths) + nref != n - 1:
            return self.fail(
                tid,
                "the task's payload places %d dependencies and %d literals but the worker gave "
                "it %d inputs" % (len(dep_paths), nref, n - 1),
            )
        loaded = [(j, v) for j, v in refs.items() if type(blobs[j + 1].obj).__name__ == "mmap"]
        if dep_paths:
            root = [args, kwargs]
            for i, path in enumerate(dep_paths):
                blob = blobs[nref + i + 1]
                try:
                    value = load_value(blob, pickle.loads)
                except BaseException as exc:
                    return self.fail_exc(tid, exc, "cannot unpickle input %d: " % (nref + i))
                if type(blob.obj).__name__ == "mmap":
                    loaded.append((nref + i, value))
                try:
                    root = _put(root, path, 0, value)
                except Exception as exc:
                    return self.fail_exc(tid, exc, "cannot place input %d at %r: " % (i, path))
            args, kwargs = root
        del blobs, payload
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            return self.fail_exc(tid, exc, "", user=True)
        del args, kwargs, func
        if loaded:
            for i, value in loaded:
                if value is result and _immutable(result):
                    return frame(ord("R"), tid, struct.pack(">BI", 2, i))
            del loaded, value
        try:
            if type(result) in self.simple:
                size, data = dump_value_in_band(result, pickle.dumps)
            else:
                size, data = self.dump_result(result)
        except BaseException as exc:
            # The same type of exception, saying what to do about it.
            msg = (
                "cannot pickle the task's result (a %s): results are stored outside the "
                "executor process, so they must pickle; keep objects such as locks, open files "
                "or connections inside one task (%s)" % (_type_name(result), _exc_text(exc))
            )
            try:
                wrapped = type(exc)(msg)
            except BaseException:
                wrapped = RuntimeError(msg)
            return self.fail_exc(tid, wrapped.with_traceback(exc.__traceback__), "")
        del result
        if size is None:
            return frame(ord("R"), tid, b"\x00", data)
        if size < INLINE_VALUE_MAX:
            # Small, with out-of-band buffers: laid out inline, no segment.
            return frame(ord("R"), tid, b"\x00", lay_out(size, data))
        if self.write_granted(tid, size, data):
            return frame(ord("R"), tid, struct.pack(">BQ", 3, size))
        try:
            fd = write_segment(size, data)
        except BaseException as exc:
            return self.fail_exc(tid, exc, "cannot store the task's result of %d bytes: " % size)
        self.out.result_fds[tid] = fd
        return frame(ord("R"), tid, struct.pack(">BIQ", 1, fd, size))

    def write_granted(self, tid, size, pieces):
        """Write a result into a segment the worker grants (``A``, answered by ``G``): its
        warm memory, reused from values it freed, costs far less to fill than a new memfd.
        False when it grants none or the write fails: the caller makes its own segment."""
        self.out.send(ord("A"), tid, struct.pack(">Q", size))
        try:
            granted = self.inp.wait_grant(tid)
        except EOFError:
            os._exit(0)  # the worker is gone
        if granted is None:
            return False
        wfd, length = granted
        if length != size:
            return False
        try:
            fd = os.open("/proc/%d/fd/%d" % (self.worker_pid, wfd), os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            # The segment may hold an earlier value's bytes: the gaps are written as zeros.
            pos = 0
            for off, p in pieces + [(size, b"")]:
                if off > pos:
                    os.pwrite(fd, bytes(off - pos), pos)
                mv = memoryview(p).cast("B")
                done = 0
                while done < len(mv):
                    done += os.pwrite(fd, mv[done : done + (1 << 30)], off + done)
                pos = off + len(mv)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def dump_result(self, result):
        """``dump_value`` of a task's result. A generator or other iterator that does not
        pickle is stored as the list of its items (it cannot leave this process; Dask keeps it
        on the worker, where each dependent would consume the same one)."""
        try:
            return dump_value(result, self.dumps)
        except Exception:
            if not _is_iterator(result):
                raise
        return dump_value(list(result), self.dumps)

    def _pin_maps(self):
        self.pinned.extend(self.maps)
        self.maps = []

    def release_maps(self):
        """Unmap the inputs of the tasks so far that nothing references any more, and say
        which (``U``: the worker may then reuse their memory). One still referenced (the task
        kept a view in a global, say) stays mapped and is tried again after the next task."""
        if not self.maps:
            return None
        closed = []
        keep = []
        maps, self.maps = self.maps, []
        while maps:
            fd, mm = maps.pop()
            # Only this frame and getrefcount's argument refer to it: nothing else (an object
            # built on the mmap itself rather than on a buffer export) can still read it.
            if sys.getrefcount(mm) > 2:
                keep.append((fd, mm))
                continue
            try:
                mm.close()
                closed.append(fd)
            except BufferError:
                keep.append((fd, mm))
            del mm
        self.maps = keep
        if not closed:
            return None
        return frame(ord("U"), 0, struct.pack(">%dI" % len(closed), *closed))

    def blobs(self, body):
        """The payload and inputs of a task frame, as memoryviews (segments mapped in place)."""
        (n,) = struct.unpack_from(">I", body, 0)
        view = memoryview(body)
        off = 4 + BLOB.size * n
        out = []
        for i in range(n):
            kind, fd, seg_off, ln = BLOB.unpack_from(body, 4 + BLOB.size * i)
            if kind == 0:
                if off + ln > len(body):
                    raise ValueError("blob %d overruns the frame" % i)
                out.append(view[off : off + ln])
                off += ln
            elif kind == 1:
                seg = map_segment("/proc/%d/fd/%d" % (self.worker_pid, fd), seg_off, ln)
                self.maps.append((fd, seg.obj))
                out.append(seg)
            else:
                raise ValueError("unknown blob kind %d" % kind)
        return out

    def load_call(self, payload, at, blobs=(), refs=None):
        """``(func, args, kwargs, dep_paths)`` from the payload's body at ``at``: a pickle, or
        ``S``, a prelude (unpickled once per executor) and a pickle that refers into it, and
        to big literals (``("v", j)``: the task's input ``j``, loaded into ``refs``)."""
        if payload[at] != ord("S"):
            return self.pickle.loads(payload[at:])
        if refs is None:
            refs = {}
        (n,) = struct.unpack_from(">I", payload, at + 1)
        start = at + 5
        key = bytes(payload[start : start + n])
        shared = self.preludes.get(key)
        if shared is None:
            shared = self.pickle.loads(key)
            if len(self.preludes) >= PRELUDES_MAX:
                self.preludes.pop(next(iter(self.preludes)))
            self.preludes[key] = shared
        pickle = self.pickle

        def persistent_load(pid):
            if type(pid) is not tuple:
                return shared[pid]
            j = pid[1]
            if j not in refs:
                if not 0 <= j < len(blobs) - 1:
                    raise ValueError("the payload refers to input %d of %d" % (j, len(blobs) - 1))
                refs[j] = load_value(blobs[j + 1], pickle.loads)
            return refs[j]

        unpickler = pickle.Unpickler(io.BytesIO(payload[start + n :]))
        unpickler.persistent_load = persistent_load
        return unpickler.load()

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


def _is_iterator(obj):
    try:
        return iter(obj) is obj and hasattr(obj, "__next__")
    except Exception:
        return False


def _type_name(obj):
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__qualname__)


def _immutable(obj):
    """Whether ``obj`` cannot have been changed in place by a task (so a task returning an input
    unchanged returns exactly that input's bytes)."""
    t = type(obj)
    if t is bytes or t is str:
        return True
    if t.__name__ == "ndarray" and t.__module__ == "numpy":
        # Read-only (a view of a shared segment) and holding no Python objects.
        return not obj.flags.writeable and not obj.dtype.hasobject
    return False


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
