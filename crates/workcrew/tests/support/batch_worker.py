"""A Python worker for the batch job's process-pool handler tests (`tests/batch_process.rs`).

`process_range` receives a RangeCall ({"job", "range", "attempt", "ids": {"span": [s, e]}}),
logs the ids it processed to the file named by BATCH_LOG (one line per range, one write), and
reports every id divisible by 97 as failed. With CRASH_RANGE set, the worker process dies
(exit code 3) on that range's first attempt, or on every attempt if CRASH_ALWAYS is set.
"""

import os
import sys

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "workers", "python"),
)
import workcrew_worker  # noqa: E402


def process_range(call, ctx):
    crash = os.environ.get("CRASH_RANGE")
    if crash is not None and call["range"] == int(crash):
        if call["attempt"] == 1 or os.environ.get("CRASH_ALWAYS"):
            os._exit(3)
    ids = call["ids"]
    if "span" in ids:
        ids = list(range(ids["span"][0], ids["span"][1]))
    else:
        ids = ids["list"]
    failed = [{"id": i, "error": "divisible by 97"} for i in ids if i % 97 == 0]
    done = [i for i in ids if i % 97 != 0]
    line = " ".join(str(i) for i in done) + "\n"
    fd = os.open(os.environ["BATCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return failed


if __name__ == "__main__":
    sys.exit(workcrew_worker.serve({"process_range": process_range}))
