"""`aether keys`: create and rotate the key-encryption keys that wrap stored secrets."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.crypto.providers import KeyProvider, LocalFileKeyProvider, key_provider_from_settings
from shared.crypto.store import count_encrypted, rewrap_all

app = typer.Typer(no_args_is_help=True, help="Key-encryption keys for stored secrets (envelope encryption)")
console = Console()


def _provider(settings: AetherSettings) -> KeyProvider:
    try:
        return key_provider_from_settings(settings)
    except ConfigurationError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command("generate")
def generate() -> None:
    """Create a new KEK in the local keyring and make it current (existing secrets keep their KEK until rotate)."""
    settings = load_settings(AetherSettings)
    provider = _provider(settings)
    key_id = provider.create_key()
    location = provider.path if isinstance(provider, LocalFileKeyProvider) else "the KMS"
    console.print(f"new key-encryption key [bold]{key_id}[/bold] in {location}")


async def _rotate(settings: AetherSettings, provider: KeyProvider) -> int:
    from shared.db import create_engine, sessionmaker_for

    engine = create_engine(settings, application_name="aether-keys-rotate")
    try:
        sessionmaker = sessionmaker_for(engine)
        async with sessionmaker() as session:
            total = await count_encrypted(session)
        new_key_id = provider.create_key()
        columns = (TextColumn("re-wrapping secrets"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("rewrap", total=total)
            result = await rewrap_all(sessionmaker, provider, new_key_id, lambda: progress.advance(task))
    finally:
        await engine.dispose()
    console.print(f"{result.rewrapped} secrets now wrapped under [bold]{result.key_id}[/bold]")
    return result.rewrapped


@app.command("rotate")
def rotate() -> None:
    """Create a new KEK and re-wrap every stored secret under it (one transaction; audited)."""
    settings = load_settings(AetherSettings)
    asyncio.run(_rotate(settings, _provider(settings)))
