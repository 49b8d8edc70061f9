"""The worker `crates/workcrew/tests/process_pool_behaviour.rs` drives: one function per fault or
behaviour the process pool must handle, on top of the reference module `workers/python/workcrew_worker.py`.

Environment:
  TEST_CONCURRENCY  the concurrency announced in HELLO (default 4)
  TEST_MODE         exit_before_hello: exit with code 3 before the handshake
                    never_ready: sleep before the handshake (the ready timeout must fire)
                    crash_if_marker: exit with code 5 before the handshake if the file named by
                    TEST_MARKER exists (replacements fail to start once the test creates it)

Every call is recorded (function, call id, arguments), and every call that noticed a CANCEL
records its id: `seen` returns both, so a test can tell whether a call reached the worker and
whether the worker was told to cancel it.
"""

import ctypes
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "workers", "python"))
import workcrew_worker  # noqa: E402

_lock = threading.Lock()
_seen = []
_cancelled = []
_kept = []  # memory kept alive by `alloc`


def echo(args, call):
    return args


def pid(args, call):
    """Sleeps `args` seconds (cancellable, so calls overlap), then returns this worker's pid."""
    call.wait_cancelled(float(args or 0))
    return os.getpid()


def sleep(args, call):
    """Sleeps `args` seconds; a CANCEL ends it early (and is recorded)."""
    if call.wait_cancelled(float(args)):
        with _lock:
            _cancelled.append(call.id)
        raise workcrew_worker.Cancelled()
    return "slept"


def hang(args, call):
    """Ignores cancellation: only a kill stops it early."""
    time.sleep(float(args))
    return "woke"


def inflight(args, call):
    """Sleeps `args` seconds; returns how many calls this worker held when this one arrived."""
    call.wait_cancelled(float(args))
    return call.in_flight_at_arrival


def crash(args, call):
    sys.stdout.flush()
    os._exit(int(args))


def crash_on_marker(args, call):
    """[path, code]: waits (ignoring cancel, at most 60 s) until the file `path` exists, then
    exits with `code`: the test decides when the worker dies."""
    path, code = args
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(int(code))


def crash_once(args, call):
    """Crashes (exit code 7) unless the marker file `args` exists; creates it first, so only
    the first attempt crashes."""
    if os.path.exists(args):
        return "ok"
    with open(args, "w") as f:
        f.write(str(os.getpid()))
    os._exit(7)


def env(args, call):
    return os.environ.get(args)


def identity(args, call):
    """Sleeps `args` seconds (cancellable, so calls overlap), then returns this worker's pid and
    its GEN variable (which generation of workers it belongs to)."""
    call.wait_cancelled(float(args or 0))
    return {"pid": os.getpid(), "gen": os.environ.get("GEN")}


def environ(args, call):
    return sorted(os.environ)


def cwd(args, call):
    return os.getcwd()


def spin(args, call):
    """Burns CPU for `args` seconds of CPU time (the process's, so a CPU limit hits it)."""
    end = time.process_time() + float(args)
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def alloc(args, call):
    """Allocates `args` MiB, touching every page (so resident memory grows), and keeps it."""
    size = int(args) * 1024 * 1024
    block = bytearray(b"\x01") * size
    _kept.append(block)
    return len(block)


def garbage(args, call):
    """Writes bytes that are no frame straight onto the channel, then waits to be killed."""
    os.write(0, b"\xff" * 32)
    time.sleep(30)
    return "unreachable"


def ignore_term(args, call):
    """Ignores SIGTERM from now on and keeps the process alive for `args` seconds after it is
    told to shut down (a non-daemon thread the interpreter waits for at exit). Answers at once,
    so the pool's graceful stop reaches SHUTDOWN, which this worker then outlives.

    `signal.signal` works only on the main thread; calls run on pool threads, so the
    disposition is set with libc directly (SIG_IGN is 1). Returns whether /proc confirms it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.signal(signal.SIGTERM, 1)
    threading.Thread(target=time.sleep, args=(float(args),), daemon=False).start()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def seen(args, call):
    with _lock:
        return {"calls": list(_seen), "cancelled": list(_cancelled)}


FUNCTIONS = {
    "echo": echo,
    "pid": pid,
    "sleep": sleep,
    "hang": hang,
    "inflight": inflight,
    "crash": crash,
    "crash_on_marker": crash_on_marker,
    "crash_once": crash_once,
    "env": env,
    "identity": identity,
    "environ": environ,
    "cwd": cwd,
    "spin": spin,
    "alloc": alloc,
    "garbage": garbage,
    "ignore_term": ignore_term,
    "seen": seen,
}


def _recorded(name, function):
    def run(args, call):
        with _lock:
            _seen.append({"function": name, "id": call.id, "args": args})
        return function(args, call)

    return run


def main():
    mode = os.environ.get("TEST_MODE", "")
    if mode == "exit_before_hello":
        return 3
    if mode == "never_ready":
        time.sleep(3600)
    if mode == "crash_if_marker" and os.path.exists(os.environ["TEST_MARKER"]):
        return 5
    return workcrew_worker.serve(
        {name: _recorded(name, f) for name, f in FUNCTIONS.items()},
        concurrency=int(os.environ.get("TEST_CONCURRENCY", "4")),
    )


if __name__ == "__main__":
    sys.exit(main())
