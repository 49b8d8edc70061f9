"""The worker of the README's first command: a persistent Python worker (workers/python)
serving ``sha256``.

Each job names a file; ``sha256`` returns its size, its SHA-256 and a key derived from it
with PBKDF2-HMAC-SHA256 (``rounds`` iterations, 200,000 by default: the deliberately slow
part, as in password or key stretching, so the progress bar has something to show)::

    {"path": "examples/cli/files/07.txt"}
    -> {"path": "examples/cli/files/07.txt", "bytes": 1234, "sha256": "…", "pbkdf2": "…"}

A missing file fails that job alone (``Failed``), which ``workcrew retry-failed`` runs again.
"""

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "workers", "python"))
import workcrew_worker  # noqa: E402


def sha256(args, call):
    path = args["path"]
    rounds = int(args.get("rounds", 200_000))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise workcrew_worker.Failed("cannot read %s: %s" % (path, e.strerror), {"path": path})
    key = hashlib.pbkdf2_hmac("sha256", data, b"workcrew-example", rounds)
    return {
        "path": path,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "pbkdf2": key.hex(),
    }


if __name__ == "__main__":
    sys.exit(workcrew_worker.serve({"sha256": sha256}))
