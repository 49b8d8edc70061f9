"""The worker the Rust test suite drives (`crates/workcrew/tests/python_worker.rs`).

Functions: echo, fail, check (fails on a negative number), panic, crash (exits the process), sleep
(cancellable), spam (prints to stdout and stderr, which must not disturb the channel), pid (the
worker's process id), hang (ignores cancel), coop (checks workcrew_worker.cancelled() while it
works), greet_fd (takes descriptors: writes a greeting to each
passed socket and closes it).
"""

import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workcrew_worker  # noqa: E402


def echo(args, call):
    return args


def fail(args, call):
    raise workcrew_worker.Failed("asked to fail", {"args": args})


def check(args, call):
    if args < 0:
        raise workcrew_worker.Failed("negative: %d" % args, {"value": args})
    return args


@workcrew_worker.takes_fds
def greet_fd(args, call):
    for fd in call.fds:
        with socket.socket(fileno=fd) as conn:
            conn.sendall(("hello " + args).encode("utf-8"))
    return len(call.fds)


def panic(args, call):
    raise RuntimeError("boom")


def crash(args, call):
    sys.stdout.flush()
    os._exit(int(args))


def sleep(args, call):
    if call.wait_cancelled(float(args)):
        raise workcrew_worker.Cancelled()
    return "slept"


def hang(args, call):
    """Ignores cancellation: only a kill stops it."""
    import time
    time.sleep(float(args))
    return "woke"


def coop(args, call):
    """Works for up to `args` seconds in small steps, checking the module-level cancel flag."""
    import time
    deadline = time.monotonic() + float(args)
    while time.monotonic() < deadline:
        if workcrew_worker.cancelled():
            raise workcrew_worker.Cancelled()
        time.sleep(0.005)
    return "done"


def inflight(args, call):
    """Sleeps `args` seconds; returns how many calls this worker held when this one arrived."""
    call.wait_cancelled(float(args))
    return call.in_flight_at_arrival


def pid(args, call):
    """Sleeps `args` seconds (so calls overlap), then returns this worker's pid."""
    call.wait_cancelled(float(args or 0))
    return os.getpid()


def spam(args, call):
    for i in range(int(args)):
        print("noise on stdout %d" % i, flush=True)
        print("noise on stderr %d" % i, file=sys.stderr, flush=True)
    return "done"


if __name__ == "__main__":
    sys.exit(workcrew_worker.serve(
        {"echo": echo, "fail": fail, "check": check, "greet_fd": greet_fd, "panic": panic, "crash": crash, "sleep": sleep, "spam": spam, "pid": pid, "hang": hang, "coop": coop, "inflight": inflight},
        concurrency=int(os.environ.get("DEMO_CONCURRENCY", "4")),
    ))
