"""Runs `aether ops archive` (the `ops` group of the CLI, ops/cli.py) again and again for the kill test, each run in a child forked from this
single-threaded process: the interpreter and its imports are paid once, each run is a process of its own that the
test may SIGKILL anywhere.

Protocol on stdout, one line each: `pid N` when a run starts, `line TEXT` for each line the run writes to stderr,
`exit S` (the raw wait status) when it ended. A line on stdin starts the next run; EOF ends the worker.
"""

from __future__ import annotations

import os
import sys
import traceback

import ops.archive.archiver  # noqa: F401 - imported by the command on first use: paid once here, not per run
from ops.cli import app
from ops.storage.s3 import s3_client
from ops.storage.settings import OpsSettings


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _run(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            sys.stderr = os.fdopen(write_end, "w", buffering=1)
            app(args)
        except SystemExit as exc:  # the command's own exit status
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    _say(f"pid {pid}")
    with os.fdopen(read_end, "r") as output:
        for line in output:
            _say(f"line {line.rstrip()}")
    _, status = os.waitpid(pid, 0)
    _say(f"exit {status}")


def main() -> None:
    s3_client(OpsSettings())  # botocore loads its S3 model once; each forked run reuses it
    for _ in sys.stdin:
        _run(sys.argv[1:])


if __name__ == "__main__":
    main()
