"""First administrator of an empty installation: `python -m services.accounts.bootstrap create-admin USERNAME`.

The password is read from the prompt (or AETHER_BOOTSTRAP_PASSWORD for automation), checked against the same rules
as the REST API, and never echoed. Refuses when an admin already exists: later users are created over REST.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import sqlalchemy as sa
import typer
from rich.console import Console

from services.accounts.config import get_settings
from services.accounts.errors import WeakPassword
from services.accounts.passwords import check_password_strength, hash_password
from services.accounts.repository import AccountsRepository, users
from shared.audit import append as audit_append
from shared.clock import utc_now
from shared.db import UnitOfWork, create_engine, sessionmaker_for

app = typer.Typer(no_args_is_help=True, help="Bootstrap the accounts service")
console = Console()


async def create_first_admin(username: str, password: str) -> str | None:
    """Create the admin user unless an admin exists; return its id (None when one already existed)."""
    settings = get_settings()
    engine = create_engine(settings, application_name="aether-accounts-bootstrap")
    try:
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            existing = await uow.session.scalar(sa.select(sa.func.count()).where(users.c.roles.any("admin")))
            if existing:
                return None
            now = utc_now()
            user_id = f"usr_{uuid.uuid4().hex}"
            values = {
                "user_id": user_id,
                "username": username,
                "password_hash": hash_password(password),
                "roles": ["admin"],
                "status": "active",
                "created_at": now,
                "updated_at": now,
            }
            await AccountsRepository(uow.session).insert_user(values)
            details = {"username": username, "roles": ["admin"]}
            await audit_append(
                uow.session, actor="bootstrap", action="user.created", target=user_id, details=details, chain="accounts"
            )
            return user_id
    finally:
        await engine.dispose()


@app.callback()
def main() -> None:
    """Bootstrap commands of the accounts service."""


@app.command("create-admin")
def create_admin(username: str) -> None:
    """Create the first admin (password from the prompt or AETHER_BOOTSTRAP_PASSWORD)."""
    name = username.lower()
    password = os.environ.get("AETHER_BOOTSTRAP_PASSWORD") or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    try:
        check_password_strength(password, name)
    except WeakPassword as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    user_id = asyncio.run(create_first_admin(name, password))
    if user_id is None:
        console.print("[yellow]an admin already exists; create users over REST[/yellow]")
        raise typer.Exit(1)
    console.print(f"admin [bold]{name}[/bold] created ({user_id})")


if __name__ == "__main__":
    app()
