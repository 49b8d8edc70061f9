"""A workcrew worker in Python, standard library only.

Written from ``docs/protocol.md`` (protocol version 1) alone. Usage::

    import workcrew_worker

    def resize(args, call):
        path, width = args
        for row in range(width):
            if workcrew_worker.cancelled():   # or call.cancelled: the pool sent CANCEL
                raise workcrew_worker.Cancelled()
            ...
        return {"path": path, "width": width}

    workcrew_worker.serve({"resize": resize}, concurrency=4)

A function receives the decoded JSON argument and a ``Call`` handle. It returns a
JSON-serialisable value, raises ``Failed(message, data)`` for an error of its own,
or ``Cancelled()`` after noticing the cancel. Any other exception is reported as
``panicked`` and the worker goes on serving.

Cancellation (``docs/protocol.md``, section 3.6): functions run on threads, which
cannot be interrupted. When the pool sends ``CANCEL``, the call's ``cancelled``
flag is set (``call.cancelled``, ``call.wait_cancelled(timeout)``, or
``workcrew_worker.cancelled()`` from the function's thread), and the call is
answered ``cancelled`` once the function has returned or raised, never before:
a cancelled call keeps its slot until then. A function that never looks keeps
running, and the pool kills the worker after its cancel grace: that is how a
runaway computation is stopped. A ``CALL_MANY`` chunk stops between items once
cancelled.

Shutdown: after ``SHUTDOWN`` (or at end of file) the worker reads no more, lets
the calls it holds finish and answers them, then ``serve`` returns 0.

Batches: the worker announces ``batch: true`` and serves ``CALL_MANY`` chunks with
the same functions: the function is called on each item in order, on one thread,
with the chunk's ``Call`` handle. The chunk is answered with the list of results,
or with the error of its first failing item (its index in ``data.index``).

File descriptors: the worker announces ``fds: true`` and reads the channel with
``socket.recvmsg``, so the pool can pass open descriptors with a call
(``CALL_FDS``), e.g. a socket it accepted. Only functions marked with
``@takes_fds`` receive them, as ``call.fds``: a list of integer descriptors the
function owns and must close (``socket.socket(fileno=fd)`` and ``os.fdopen(fd)``
take ownership). ``call.fds`` is empty for a plain ``CALL``. A ``CALL_FDS`` to any
other function is answered ``bad_args`` and its descriptors are closed::

    @workcrew_worker.takes_fds
    def greet(name, call):
        for fd in call.fds:
            with socket.socket(fileno=fd) as conn:
                conn.sendall(b"hello " + name.encode())
        return len(call.fds)
"""

import array
import collections
import json
import os
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_current = threading.local()  # .call: the Call this thread serves

PROTOCOL_VERSION = 1
HELLO, WELCOME, CALL, RESULT, ERROR, CANCEL, PING, PONG, SHUTDOWN, CALL_MANY, CALL_FDS = range(1, 12)
_HEADER = struct.Struct(">IBQ")  # length, type, id
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
MAX_FDS = 16
_READ_SIZE = 256 * 1024
_FD_SIZE = array.array("i").itemsize


def takes_fds(function):
    """Marks a function as taking file descriptors passed with its call (``call.fds``)."""
    function.takes_fds = True
    return function


class Failed(Exception):
    """The function's own error: reported with kind ``failed``."""

    def __init__(self, message, data=None):
        super().__init__(message)
        self.data = data


class Cancelled(Exception):
    """Raised by a function that noticed ``call.cancelled``."""


class ProtocolError(Exception):
    """The channel carried something that is not a valid frame."""


def current_call():
    """The ``Call`` this thread serves, or None outside a function."""
    return getattr(_current, "call", None)


def cancelled():
    """Whether the call this thread serves has been cancelled by the pool (False outside one)."""
    call = current_call()
    return call is not None and call.cancelled


class Call:
    """One call in flight."""

    def __init__(self, call_id, function):
        self.id = call_id
        self.function = function
        self._cancelled = threading.Event()
        # Descriptors passed with the call (CALL_FDS); the function owns them.
        self.fds = []
        # Calls this worker held (this one included) when this one arrived.
        self.in_flight_at_arrival = 0

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout):
        """Sleeps up to ``timeout`` seconds; True if the call was cancelled."""
        return self._cancelled.wait(timeout)


class _Channel:
    """The channel, read with recvmsg so descriptors passed with CALL_FDS are received.

    Descriptors are queued in arrival order, each with the stream offset where the read that
    brought it ended. They ride on the first byte of their frame: a CALL_FDS takes its own from
    the front of the queue; descriptors that came with the bytes of any other frame are a
    protocol error.
    """

    def __init__(self, sock):
        self._sock = sock
        self._write_lock = threading.Lock()
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._fds = collections.deque()  # (offset where its read ended, fd)
        self._eof = False
        self.max_frame = DEFAULT_MAX_FRAME

    def send(self, kind, call_id=0, body=b""):
        length = 9 + len(body)
        if length > self.max_frame:
            raise ProtocolError("frame of %d bytes exceeds %d" % (length, self.max_frame))
        frame = _HEADER.pack(length, kind, call_id) + body
        with self._write_lock:
            self._sock.sendall(frame)

    def send_json(self, kind, call_id, value):
        self.send(kind, call_id, json.dumps(value, separators=(",", ":")).encode("utf-8"))

    def _fill(self):
        """Reads once; False at end of file."""
        flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
        data, ancdata, msg_flags, _ = self._sock.recvmsg(
            _READ_SIZE, socket.CMSG_SPACE(MAX_FDS * _FD_SIZE), flags)
        self._buf += data
        read_end = self._offset + len(self._buf)
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[:len(cdata) - len(cdata) % _FD_SIZE])
                self._fds.extend((read_end, fd) for fd in fds)
        if msg_flags & socket.MSG_CTRUNC:
            raise ProtocolError("file descriptors lost: more than %d with one read" % MAX_FDS)
        return bool(data)

    def recv(self):
        """Returns (type, id, body, fds), or None at end of file."""
        while True:
            if len(self._buf) >= 4:
                (length,) = struct.unpack_from(">I", self._buf)
                if length > self.max_frame:
                    raise ProtocolError("frame of %d bytes exceeds %d" % (length, self.max_frame))
                if length < 9:
                    raise ProtocolError("frame length %d is shorter than 9" % length)
                if len(self._buf) >= 4 + length:
                    break
            if not self._fill():
                if self._buf:
                    raise ProtocolError("channel closed inside a frame")
                return None
        at, end = self._offset, self._offset + 4 + length
        kind = self._buf[4]
        (call_id,) = struct.unpack_from(">Q", self._buf, 5)
        body = bytes(self._buf[13:4 + length])
        del self._buf[:4 + length]
        self._offset = end
        fds = []
        if kind == CALL_FDS and body:
            count = body[0]
            if not 1 <= count <= MAX_FDS:
                raise ProtocolError("call %d announces %d descriptors" % (call_id, count))
            came = [fd for read_end, fd in list(self._fds)[:count] if read_end > at]
            if len(came) < count:
                raise ProtocolError("call %d announces %d descriptors; %d came with it"
                                    % (call_id, count, len(came)))
            for _ in range(count):
                fds.append(self._fds.popleft()[1])
        if self._fds and self._fds[0][0] <= end:
            for fd in fds:
                os.close(fd)
            raise ProtocolError("file descriptors came with a frame of type %d" % kind)
        return kind, call_id, body, fds

    def close(self):
        for _, fd in self._fds:
            os.close(fd)
        self._fds.clear()


def _parse_call(body):
    """Splits a CALL body into (function name, payload)."""
    if len(body) < 2:
        raise ProtocolError("call body of %d bytes" % len(body))
    (name_len,) = struct.unpack(">H", body[:2])
    if len(body) < 2 + name_len:
        raise ProtocolError("call body shorter than its name")
    try:
        name = body[2:2 + name_len].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("function name is not UTF-8")
    return name, body[2 + name_len:]


def serve(functions, concurrency=1, channel_fd=0):
    """Serves ``functions`` (name -> callable) on the channel until shutdown or end of file."""
    sock = socket.socket(fileno=channel_fd)
    chan = _Channel(sock)
    chan.send_json(HELLO, 0, {
        "protocol": PROTOCOL_VERSION,
        "functions": sorted(functions),
        "concurrency": concurrency,
        "encodings": ["json"],
        "pid": os.getpid(),
        "batch": True,
        "fds": True,
    })
    frame = chan.recv()
    if frame is None:
        return 0
    kind, _, body, _ = frame
    if kind != WELCOME:
        raise ProtocolError("expected WELCOME, got type %d" % kind)
    welcome = json.loads(body)
    if welcome.get("encoding") != "json":
        raise ProtocolError("unsupported encoding %r" % welcome.get("encoding"))
    chan.max_frame = int(welcome.get("max_frame", DEFAULT_MAX_FRAME))

    calls = {}
    calls_lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))

    def error(call_id, kind, message, data=None):
        body = {"kind": kind, "message": message}
        if data is not None:
            body["data"] = data
        chan.send_json(ERROR, call_id, body)

    def answer(call):
        """Forgets the call, then answers it: once the pool has the answer it may
        send another call, which must find this one gone."""
        with calls_lock:
            calls.pop(call.id, None)
        return call.id

    def at_item(index, data):
        return {"index": index, "data": data}

    def run(call, payload, many=False):
        try:
            args = json.loads(payload) if payload else None
        except ValueError as e:
            error(answer(call), "bad_args", "arguments are not JSON: %s" % e)
            return
        if many and not isinstance(args, list):
            error(answer(call), "bad_args", "a CALL_MANY payload must be a JSON array")
            return
        function = functions[call.function]
        items = args if many else [args]
        values = []
        _current.call = call
        try:
            for index, item in enumerate(items):
                # A chunk's error names its first failing item; a single call's has no index.
                where = (lambda data, i=index: at_item(i, data)) if many else (lambda data: data)
                if call.cancelled:
                    # A chunk stops between items; a call is answered once its function ended.
                    error(answer(call), "cancelled", "call %d cancelled" % call.id)
                    return
                try:
                    values.append(function(item, call))
                except Failed as e:
                    if call.cancelled:
                        error(answer(call), "cancelled", "call %d cancelled" % call.id)
                    else:
                        error(answer(call), "failed", str(e), where(e.data))
                    return
                except Cancelled:
                    error(answer(call), "cancelled", "call %d cancelled" % call.id)
                    return
                except BaseException as e:  # the function crashed; the worker is fine
                    error(answer(call), "panicked", "%s: %s" % (type(e).__name__, e), where(None))
                    return
        finally:
            _current.call = None
        if call.cancelled:
            # Cancelled while it ran: it has ended now, so the cancel is answered.
            error(answer(call), "cancelled", "call %d cancelled" % call.id)
            return
        value = values if many else values[0]
        try:
            body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as e:
            error(answer(call), "internal", "result is not JSON: %s" % e)
            return
        if 9 + len(body) > chan.max_frame:
            error(answer(call), "too_large", "result of %d bytes exceeds the maximum frame" % len(body))
            return
        chan.send(RESULT, answer(call), body)

    while True:
        frame = chan.recv()
        if frame is None:
            break
        kind, call_id, body, fds = frame
        if kind in (CALL, CALL_MANY, CALL_FDS):
            name, payload = _parse_call(body[1:] if kind == CALL_FDS else body)
            if name not in functions:
                for fd in fds:
                    os.close(fd)
                error(call_id, "unknown_function", "no function named %r" % name)
                continue
            if fds and not getattr(functions[name], "takes_fds", False):
                for fd in fds:
                    os.close(fd)
                error(call_id, "bad_args", "function %r takes no file descriptors" % name)
                continue
            call = Call(call_id, name)
            call.fds = fds
            with calls_lock:
                calls[call_id] = call
                call.in_flight_at_arrival = len(calls)
            pool.submit(run, call, payload, kind == CALL_MANY)
        elif kind == CANCEL:
            with calls_lock:
                call = calls.get(call_id)
            if call is not None:
                call._cancelled.set()
        elif kind == PING:
            chan.send(PONG, call_id)
        elif kind == SHUTDOWN:
            break
        else:
            raise ProtocolError("unexpected frame type %d" % kind)
    pool.shutdown(wait=True)
    chan.close()
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit("import this module and call serve(); see its docstring")
