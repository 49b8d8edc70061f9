"""A hand-written worker for `crates/workcrew/tests/process_pool_protocol.rs`: it speaks the
protocol byte by byte (no SDK), so a test can make it send exactly what is under test.

Environment:
  RAW_HELLO     JSON merged into its HELLO (default: functions below, concurrency 4, json)
  RAW_HELLO_ID  the id of its HELLO frame (default 0)
  RAW_EARLY     hex bytes written right after HELLO, before reading WELCOME
  RAW_ONCE      a file: RAW_EARLY and RAW_HELLO apply only while it does not exist (the
                worker creates it), so a replacement behaves
  RAW_PONG_ADD  added to the nonce of every PONG (default 0)
  RAW_ON_EOF    "sleep": ignore SHUTDOWN and end of file, sleep 60 s (default: exit 0)

Functions (arguments and results are JSON):
  echo          the argument
  welcome       the WELCOME body it got
  frames        {"types": [frame types received so far], "fds": descriptors received}
  send          [hex]: writes those bytes onto the channel, answers nothing
  result_of     n: answers with a RESULT frame whose length is exactly n (a JSON string)
  twice         answers its call twice
  stray         answers call id 999999, then its own call
  error_kind    k: answers ERROR with kind k
  sleep         s: answers after s seconds (ignores CANCEL)
"""

import array
import json
import os
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct(">IBQ")
HELLO, WELCOME, CALL, RESULT, ERROR, CANCEL, PING, PONG, SHUTDOWN, CALL_MANY, CALL_FDS = range(1, 12)
FUNCTIONS = ["echo", "welcome", "frames", "send", "result_of", "twice", "stray", "error_kind", "sleep"]

sock = socket.socket(fileno=0)
lock = threading.Lock()
types = []
fd_count = [0]
buf = bytearray()


def send(kind, call_id, body=b""):
    with lock:
        sock.sendall(HEADER.pack(9 + len(body), kind, call_id) + body)


def send_raw(data):
    with lock:
        sock.sendall(data)


def recv():
    """(type, id, body) or None at end of file."""
    global buf
    while True:
        if len(buf) >= 4:
            (length,) = struct.unpack_from(">I", buf)
            if len(buf) >= 4 + length:
                kind, call_id = buf[4], struct.unpack_from(">Q", buf, 5)[0]
                body = bytes(buf[13:4 + length])
                del buf[:4 + length]
                return kind, call_id, body
        data, anc, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(cdata[:len(cdata) - len(cdata) % 4])
                fd_count[0] += len(fds)
                for fd in fds:
                    os.close(fd)
        if not data:
            return None
        buf += data


def result(call_id, value):
    send(RESULT, call_id, json.dumps(value).encode())


def serve_call(call_id, name, args, welcome):
    if name == "echo":
        result(call_id, args)
    elif name == "welcome":
        result(call_id, welcome)
    elif name == "frames":
        result(call_id, {"types": list(types), "fds": fd_count[0]})
    elif name == "send":
        send_raw(bytes.fromhex(args))
    elif name == "result_of":
        body = json.dumps("a" * (int(args) - 9 - 2)).encode()
        send(RESULT, call_id, body)
    elif name == "twice":
        result(call_id, 1)
        result(call_id, 2)
    elif name == "stray":
        result(999999, "stray")
        result(call_id, "mine")
    elif name == "error_kind":
        send(ERROR, call_id, json.dumps({"kind": args, "message": "odd kind"}).encode())
    elif name == "sleep":
        threading.Thread(target=lambda: (time.sleep(float(args)), result(call_id, "slept")),
                         daemon=True).start()


def main():
    once = os.environ.get("RAW_ONCE")
    first = not once or not os.path.exists(once)
    if once and first:
        open(once, "w").close()
    hello = {"protocol": 1, "functions": FUNCTIONS, "concurrency": 4, "encodings": ["json"],
             "pid": os.getpid()}
    if first:
        hello.update(json.loads(os.environ.get("RAW_HELLO", "{}")))
    send(HELLO, int(os.environ.get("RAW_HELLO_ID", "0")), json.dumps(hello).encode())
    if first and os.environ.get("RAW_EARLY"):
        send_raw(bytes.fromhex(os.environ["RAW_EARLY"]))
    frame = recv()
    if frame is None:
        return 0
    welcome = json.loads(frame[2])
    pong_add = int(os.environ.get("RAW_PONG_ADD", "0"))
    while True:
        frame = recv()
        if frame is None or frame[0] == SHUTDOWN:
            break
        kind, call_id, body = frame
        types.append(kind)
        if kind in (CALL, CALL_MANY):
            (name_len,) = struct.unpack_from(">H", body)
            name = body[2:2 + name_len].decode()
            args = json.loads(body[2 + name_len:] or b"null")
            if kind == CALL_MANY:
                result(call_id, args)
            else:
                serve_call(call_id, name, args, welcome)
        elif kind == PING:
            send(PONG, call_id + pong_add)
    if os.environ.get("RAW_ON_EOF") == "sleep":
        time.sleep(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
