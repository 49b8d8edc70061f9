"""A workcrew worker in Python, standard library only.

Written from ``docs/protocol.md`` (protocol version 1) alone. Usage::

    import workcrew_worker

    def resize(args, call):
        path, width = args
        if call.cancelled:          # set when the pool sends CANCEL
            raise workcrew_worker.Cancelled()
        return {"path": path, "width": width}

    workcrew_worker.serve({"resize": resize}, concurrency=4)

A function receives the decoded JSON argument and a ``Call`` handle. It returns a
JSON-serialisable value, raises ``Failed(message, data)`` for an error of its own,
or ``Cancelled()`` after noticing ``call.cancelled``. Any other exception is
reported as ``panicked`` and the worker goes on serving.
"""

import json
import os
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

PROTOCOL_VERSION = 1
HELLO, WELCOME, CALL, RESULT, ERROR, CANCEL, PING, PONG, SHUTDOWN = range(1, 10)
_HEADER = struct.Struct(">IBQ")  # length, type, id
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class Failed(Exception):
    """The function's own error: reported with kind ``failed``."""

    def __init__(self, message, data=None):
        super().__init__(message)
        self.data = data


class Cancelled(Exception):
    """Raised by a function that noticed ``call.cancelled``."""


class ProtocolError(Exception):
    """The channel carried something that is not a valid frame."""


class Call:
    """One call in flight."""

    def __init__(self, call_id, function):
        self.id = call_id
        self.function = function
        self._cancelled = threading.Event()
        # Calls this worker held (this one included) when this one arrived.
        self.in_flight_at_arrival = 0

    @property
    def cancelled(self):
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout):
        """Sleeps up to ``timeout`` seconds; True if the call was cancelled."""
        return self._cancelled.wait(timeout)


class _Channel:
    def __init__(self, sock):
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._write_lock = threading.Lock()
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

    def recv(self):
        """Returns (type, id, body), or None at end of file."""
        head = self._read_exact(4)
        if head is None:
            return None
        (length,) = struct.unpack(">I", head)
        if length > self.max_frame:
            raise ProtocolError("frame of %d bytes exceeds %d" % (length, self.max_frame))
        if length < 9:
            raise ProtocolError("frame length %d is shorter than 9" % length)
        rest = self._read_exact(length)
        if rest is None:
            raise ProtocolError("channel closed inside a frame")
        kind = rest[0]
        (call_id,) = struct.unpack(">Q", rest[1:9])
        return kind, call_id, rest[9:]

    def _read_exact(self, n):
        data = self._reader.read(n)
        if not data:
            return None
        if len(data) < n:
            raise ProtocolError("channel closed inside a frame")
        return data


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
    })
    frame = chan.recv()
    if frame is None:
        return 0
    kind, _, body = frame
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

    def run(call, payload):
        try:
            args = json.loads(payload) if payload else None
        except ValueError as e:
            error(answer(call), "bad_args", "arguments are not JSON: %s" % e)
            return
        try:
            value = functions[call.function](args, call)
        except Failed as e:
            error(answer(call), "failed", str(e), e.data)
            return
        except Cancelled:
            error(answer(call), "cancelled", "call %d cancelled" % call.id)
            return
        except BaseException as e:  # the function crashed; the worker is fine
            error(answer(call), "panicked", "%s: %s" % (type(e).__name__, e))
            return
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
        kind, call_id, body = frame
        if kind == CALL:
            (name_len,) = struct.unpack(">H", body[:2])
            name = body[2:2 + name_len].decode("utf-8")
            payload = body[2 + name_len:]
            if name not in functions:
                error(call_id, "unknown_function", "no function named %r" % name)
                continue
            call = Call(call_id, name)
            with calls_lock:
                calls[call_id] = call
                call.in_flight_at_arrival = len(calls)
            pool.submit(run, call, payload)
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
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit("import this module and call serve(); see its docstring")
