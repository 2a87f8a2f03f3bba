"""The `aether` command line: stack, migrations, services, audit, auth and ops jobs."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from aether.backtest_cli import app as backtest_app
from aether.strategy_cli import app as strategy_app
from data.cli import app as data_app
from data.replay.cli import app as feed_app
from ml.cli import app as ml_app
from ops.cli import app as ops_app
from ops.stack_cli import app as stack_app
from shared.audit.cli import app as audit_app
from shared.auth.cli import app as auth_app
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.crypto.cli import app as keys_app
from shared.service_catalog import SERVICE_NAMES, ServiceEntry, UnknownServiceError, service

console = Console(stderr=True)
app = typer.Typer(help="Aether trading platform", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(stack_app, name="stack", help="Local PostgreSQL, Redis and Apache Kafka under .aether/")
app.add_typer(audit_app, name="audit", help="Tamper-evident audit log")
app.add_typer(auth_app, name="auth", help="Signing keys and tokens")
app.add_typer(keys_app, name="keys", help="Key-encryption keys for stored exchange secrets")
app.add_typer(
    feed_app,
    name="feed",
    help="Market data onto the marketdata.* topics: replay (file or synthetic) or live (kraken, coinbase)",
)
app.add_typer(ops_app, name="ops", help="Operations jobs: backup, restore, retention archiver, rollup refresh")
app.add_typer(data_app, name="data", help="Market-data store: sink, aggregates, data quality, backfills, sentiment")
app.add_typer(ml_app, name="ml", help="Models: hyperparameter search, retraining, signals, MLflow UI")
app.add_typer(backtest_app, name="backtest", help="Backtests on the paper venue's own matching, fees and ledger")
app.add_typer(strategy_app, name="strategy", help="The backtester's strategies live, through oms.commands.v1")


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> AetherSettings:
    try:
        return load_settings(AetherSettings)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None


def _entry(name: str) -> ServiceEntry:
    try:
        return service(name)
    except UnknownServiceError as exc:
        raise _fail(str(exc)) from None


@app.command()
def openapi() -> None:
    """Write every service's OpenAPI document to docs/api/<service>.json (sorted keys; unchanged files kept)."""
    from aether.openapi import SNAPSHOT_DIR, write_snapshots

    changed = write_snapshots()
    for path in changed:
        console.print(f"wrote {path.relative_to(SNAPSHOT_DIR.parent.parent)}")
    console.print(f"{len(changed)} snapshot(s) changed in {SNAPSHOT_DIR}")


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply the database migrations (every schema, one Alembic tree)."""
    from shared.db.migrate import upgrade

    settings = _settings()
    with console.status("applying migrations"):
        try:
            upgrade(settings.database_url.get_secret_value(), revision)
        except Exception as exc:
            raise _fail(f"migration failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    console.print(f"migrations applied up to [bold]{revision}[/bold]")


@app.command()
def serve(
    name: Annotated[str, typer.Argument(metavar="SERVICE", help="one of: " + ", ".join(SERVICE_NAMES))],
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="listen port (default: the service's own)")] = None,
) -> None:
    """Run one service in the foreground."""
    import uvicorn

    entry = _entry(name)
    module = importlib.import_module(entry.app_module)
    try:
        fastapi_app = module.create_app()
    except ConfigurationError as exc:
        raise _fail(f"configuration: {exc}") from None
    config = uvicorn.Config(
        fastapi_app,
        host=host,
        port=port or entry.port,
        log_config=None,
        access_log=False,
        # Forwarded headers are trusted only from AETHER_TRUSTED_PROXIES, by the app itself (shared/app_factory).
        proxy_headers=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()


@app.command()
def up(
    services: Annotated[list[str] | None, typer.Option("--service", help="only these services (repeatable)")] = None,
    feed: Annotated[
        bool, typer.Option("--feed/--no-feed", help="run the SYNTHETIC BTC/USD market (off: replay your own file)")
    ] = True,
) -> None:
    """Start the stack, migrate, and run every service as its own process (Ctrl-C stops all)."""
    from aether.runner import run_platform

    selected = services or list(SERVICE_NAMES)
    unknown = sorted(set(selected) - set(SERVICE_NAMES))
    if unknown:
        raise _fail(f"unknown service(s): {', '.join(unknown)}")
    sys.exit(run_platform([service(name) for name in selected], os.environ.copy(), synthetic_feed=feed))


if __name__ == "__main__":
    app()
