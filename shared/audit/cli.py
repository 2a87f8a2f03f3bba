"""`aether audit`: verify the hash chains of the audit log (exit 0 intact, 1 broken, 2 cannot check)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from shared.audit.verify import VerificationReport, verify_all_chains, verify_chain
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db import create_engine

EXIT_INTACT = 0
EXIT_BROKEN = 1
EXIT_UNCHECKED = 2

app = typer.Typer(help="Tamper-evident audit log", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)


@app.callback()
def main() -> None:
    """Tamper-evident audit log."""


def _settings(database_url: str | None) -> AetherSettings:
    try:
        if database_url is not None:
            return load_settings(AetherSettings, database_url=database_url)
        return load_settings(AetherSettings)
    except ConfigurationError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_UNCHECKED) from None


async def _verify(settings: AetherSettings, chains: list[str]) -> list[VerificationReport]:
    engine = create_engine(settings, application_name="aether-audit-verify")
    try:
        async with engine.connect() as connection:
            if chains:
                return [await verify_chain(connection, chain) for chain in chains]
            return await verify_all_chains(connection)
    finally:
        await engine.dispose()


def _print_reports(reports: list[VerificationReport]) -> None:
    table = Table(title="audit chains")
    for column in ("chain", "entries checked", "head length", "status", "first broken link"):
        table.add_column(column)
    for report in reports:
        broken = report.first_break
        status = "[green]intact[/green]" if report.ok else "[red]BROKEN[/red]"
        where = "" if broken is None else f"{broken.kind} at position {broken.position}"
        head = "-" if report.head_length is None else str(report.head_length)
        table.add_row(report.chain, str(report.checked_rows), head, status, where)
    console.print(table)
    for report in reports:
        if report.first_break is not None:
            broken = report.first_break
            console.print(
                f"[red]chain {report.chain!r}: {broken.kind} at position {broken.position}[/red]"
                f" (seq {broken.seq if broken.seq is not None else '-'}): {broken.detail}\n"
                f"  expected {broken.expected}\n  found    {broken.found}",
                highlight=False,
            )
    if not reports:
        console.print("no audit chains yet")


@app.command()
def verify(
    chain: Annotated[
        list[str] | None, typer.Option("--chain", help="Verify only this chain (repeatable; default: every chain).")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="Database URL (default: AETHER_DATABASE_URL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")] = False,
) -> None:
    """Recompute every hash and link of the audit chains; exit 1 at the first broken link."""
    settings = _settings(database_url)
    try:
        reports = asyncio.run(_verify(settings, chain or []))
    except (SQLAlchemyError, OSError) as exc:
        # The driver's first line (e.g. "database ... does not exist") names the cause and never the password.
        cause = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
        errors.print(f"[red]error:[/red] cannot read the audit log: {cause}", highlight=False)
        raise typer.Exit(EXIT_UNCHECKED) from None
    intact = all(report.ok for report in reports)
    if as_json:
        document = {"ok": intact, "chains": [report.as_dict() for report in reports]}
        typer.echo(json.dumps(document, indent=2))
    else:
        _print_reports(reports)
    raise typer.Exit(EXIT_INTACT if intact else EXIT_BROKEN)


if __name__ == "__main__":
    app()
