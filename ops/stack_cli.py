"""``aether stack ...``: start, stop and inspect the local PostgreSQL + Redis + Kafka stack.

Also runnable on its own: ``python -m ops.stack_cli up``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ops import stack

app = typer.Typer(
    help="The local stack (PostgreSQL, Redis, Apache Kafka) run from local binaries under AETHER_HOME (default .aether/).",
    no_args_is_help=True,
)
out = Console(highlight=False)
T = TypeVar("T")


class ComponentName(StrEnum):
    postgres = "postgres"
    redis = "redis"
    kafka = "kafka"


_COMPONENTS: dict[ComponentName, stack.Component] = {
    ComponentName.postgres: "postgres",
    ComponentName.redis: "redis",
    ComponentName.kafka: "kafka",
}


def _guarded(action: Callable[[], T]) -> T:
    """Run a stack operation; a StackError becomes one red line, the log tail, and exit code 1."""
    try:
        return action()
    except stack.StackError as exc:
        stack.console.print(str(exc), style="bold red", markup=False)
        if exc.log_tail:
            stack.console.print(exc.log_tail, style="dim", markup=False)
        raise typer.Exit(1) from exc


@app.command()
def up() -> None:
    """Start PostgreSQL, Redis and Kafka (whatever is not already running), then write .aether/stack.env."""
    _guarded(stack.up)


@app.command()
def browser() -> None:
    """Make sure Debian's chromium and chromedriver are installed (the director page's browser test drives them)."""
    chromium, driver = _guarded(stack.browser_binaries)
    out.print(f"chromium {chromium}, chromedriver {driver}")


@app.command()
def down(
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the data (Kafka jars are kept).")] = False,
) -> None:
    """Stop what `up` started, by the pids in the pidfiles."""
    _guarded(lambda: stack.down(purge=purge))


@app.command()
def status() -> None:
    """Show each component (running/stopped, pid, address); exit code 0 only when all are running."""
    components = _guarded(stack.status)
    table = Table(title="aether stack")
    for column in ("component", "state", "pid", "address"):
        table.add_column(column)
    for item in components:
        state = "[green]running[/]" if item.running else "[red]stopped[/]"
        table.add_row(item.name, state, str(item.pid or "-"), item.address)
    out.print(table)
    if not all(item.running for item in components):
        raise typer.Exit(1)


@app.command()
def env() -> None:
    """Print the stack's settings as `export` lines: eval "$(python -m ops.stack_cli env)"."""
    env_file = stack.stack_paths().env_file
    if not env_file.exists():
        stack.console.print(f"stack: {env_file} not found, run `aether stack up` first", style="bold red", markup=False)
        raise typer.Exit(1)
    sys.stdout.write(env_file.read_text())


@app.command()
def start(component: Annotated[ComponentName, typer.Argument(help="postgres, redis or kafka")]) -> None:
    """Start one component (e.g. `aether stack start kafka`)."""
    _guarded(lambda: stack.start(_COMPONENTS[component]))


@app.command()
def stop(component: Annotated[ComponentName, typer.Argument(help="postgres, redis or kafka")]) -> None:
    """Stop one component (e.g. `aether stack stop kafka`); the others keep running."""
    _guarded(lambda: stack.stop(_COMPONENTS[component]))


if __name__ == "__main__":
    app()
