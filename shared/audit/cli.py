"""`aether audit`: verify the hash chains of the audit log (exit 0 intact, 1 broken, 2 cannot check).

`aether audit verify --anchors --public-key PATH` also checks every chain against the signed anchors, read from
the `anchors.audit_anchors` table or, with `--anchors-from kafka`, from the `audit.anchors.v1` topic.
"""

from __future__ import annotations

import asyncio
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from shared.audit.anchor_verify import (
    AnchoredReport,
    anchors_from_envelopes,
    read_anchor_topic,
    verify_all_with_anchors,
)
from shared.audit.anchors import Anchor, default_anchor_key_dir, load_anchor_public_key, load_anchors_from_table
from shared.audit.verify import VerificationReport, verify_all_chains, verify_chain
from shared.auth.keys import key_fingerprint
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db import create_engine
from shared.events.topics import AUDIT_ANCHORS

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


class AnchorSource(StrEnum):
    TABLE = "table"
    KAFKA = "kafka"


async def _load_anchors(
    settings: AetherSettings, connection: Any, source: AnchorSource, public_key: Ed25519PublicKey
) -> list[Anchor]:
    if source is AnchorSource.TABLE:
        return await load_anchors_from_table(connection)
    values = await read_anchor_topic(
        settings.kafka_bootstrap, AUDIT_ANCHORS, security_protocol=settings.kafka_security_protocol
    )
    anchors, unreadable = anchors_from_envelopes(values)
    if unreadable:
        errors.print(f"[yellow]warning:[/yellow] {unreadable} record(s) on {AUDIT_ANCHORS} are not anchors")
    # The topic may carry anchors of other databases (other deployments, test runs) made with other keys: only
    # anchors claiming this key count. Ignoring the others cannot hide tampering: they commit to nothing of ours.
    key_id = key_fingerprint(public_key)
    mine = [anchor for anchor in anchors if anchor.key_id == key_id]
    if len(mine) < len(anchors):
        errors.print(f"note: {len(anchors) - len(mine)} anchor(s) on {AUDIT_ANCHORS} carry another key id; ignored")
    return mine


def _public_key(path: Path) -> Ed25519PublicKey:
    try:
        return load_anchor_public_key(path)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        errors.print(f"[red]error:[/red] anchor public key {path}: {reason}", highlight=False)
        raise typer.Exit(EXIT_UNCHECKED) from None


async def _verify_anchored(
    settings: AetherSettings, chains: list[str], public_key: Ed25519PublicKey, source: AnchorSource
) -> list[AnchoredReport]:
    engine = create_engine(settings, application_name="aether-audit-verify")
    try:
        async with engine.connect() as connection:
            anchors = await _load_anchors(settings, connection, source, public_key)
            return await verify_all_with_anchors(connection, anchors, public_key, chains=chains or None)
    finally:
        await engine.dispose()


def _print_reports(reports: list[VerificationReport] | list[AnchoredReport]) -> None:
    table = Table(title="audit chains")
    for column in ("chain", "entries checked", "head length", "anchored length", "status", "first broken link"):
        table.add_column(column)
    for report in reports:
        broken = report.first_break
        status = "[green]intact[/green]" if report.ok else "[red]BROKEN[/red]"
        where = "" if broken is None else f"{broken.kind} at position {broken.position}"
        head = "-" if report.head_length is None else str(report.head_length)
        anchored = getattr(report, "anchored_length", None)
        table.add_row(
            report.chain, str(report.checked_rows), head, "-" if anchored is None else str(anchored), status, where
        )
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
    anchors: Annotated[
        bool, typer.Option("--anchors", help="Also check every chain against the signed anchors (public key only).")
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Anchor public key PEM (default: AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE or $AETHER_HOME/keys/anchor).",
        ),
    ] = None,
    anchors_from: Annotated[
        AnchorSource, typer.Option("--anchors-from", help="Where to read anchors: the table or the Kafka topic.")
    ] = AnchorSource.TABLE,
) -> None:
    """Recompute every hash and link of the audit chains (and check the anchors); exit 1 at the first broken link."""
    settings = _settings(database_url)
    key = _public_key(public_key_path(public_key)) if anchors else None
    try:
        reports: list[VerificationReport] | list[AnchoredReport]
        if key is not None:
            reports = asyncio.run(_verify_anchored(settings, chain or [], key, anchors_from))
        else:
            reports = asyncio.run(_verify(settings, chain or []))
    except KafkaError as exc:
        errors.print(f"[red]error:[/red] cannot read {AUDIT_ANCHORS}: {type(exc).__name__}", highlight=False)
        raise typer.Exit(EXIT_UNCHECKED) from None
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


@app.command()
def harden(
    superuser_url: Annotated[
        str | None,
        typer.Option("--superuser-url", help="Superuser database URL (default: AETHER_DATABASE_SUPERUSER_URL)."),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="The app's database URL (default: AETHER_DATABASE_URL).")
    ] = None,
) -> None:
    """As a superuser, after migrating: a NOLOGIN role owns the audit tables, the app role may only append."""
    from sqlalchemy.engine import make_url

    from shared.audit.roles import AUDIT_OWNER_ROLE, harden_audit_tables

    settings = _settings(database_url)
    superuser = superuser_url or os.environ.get("AETHER_DATABASE_SUPERUSER_URL")
    if not superuser:
        errors.print("[red]error:[/red] --superuser-url or AETHER_DATABASE_SUPERUSER_URL is required")
        raise typer.Exit(EXIT_UNCHECKED)
    app_url = make_url(settings.database_url.get_secret_value())
    target = make_url(superuser).set(drivername="postgresql", database=app_url.database)
    harden_audit_tables(target.render_as_string(hide_password=False), app_url.username or "aether")
    console.print(f"audit and anchor tables owned by {AUDIT_OWNER_ROLE}; {app_url.username} may only append")


def public_key_path(option: Path | None) -> Path:
    """The anchor public key to verify with: the option, else AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE, else the dev key."""
    if option is not None:
        return option
    configured = os.environ.get("AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE")
    return Path(configured) if configured else default_anchor_key_dir() / "public.pem"


if __name__ == "__main__":
    app()
