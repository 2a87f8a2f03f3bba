"""A fork server for the backfill CLI (the same typer app as `aether data backfill`): it imports the CLI once,
then for each line on stdin forks a child that runs the app with this process's arguments, prints
`started <pid>`, reaps the child and prints `ended <pid> <exit code>` (-9 after a SIGKILL). The resume test kills
the children; the imports (5 s on a loaded 2-core machine) are paid once, not at each of the 20 restarts."""

from __future__ import annotations

import os
import sys

import httpx

from data.ingest.cli import app

# The CLI's HTTP client imports its transport lazily: once here, not in each forked run.
httpx.AsyncClient()


def _child(argv: list[str]) -> None:
    os.dup2(2, 1)  # stdout is the control channel
    try:
        app(argv, prog_name="aether data")
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)


def main() -> None:
    """Serve one run per line on stdin until stdin closes."""
    argv = sys.argv[1:]
    for _line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            _child(argv)
        print(f"started {pid}", flush=True)  # noqa: T201 - the control channel
        _, status = os.waitpid(pid, 0)
        print(f"ended {pid} {os.waitstatus_to_exitcode(status)}", flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
