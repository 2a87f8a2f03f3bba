"""After `harden_audit_tables` (a superuser step), the application role can append and anchor but can no longer
disable the guard triggers, drop, truncate, update or delete audit entries or anchors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.audit import append, verify_chain
from shared.audit.anchors import AnchorPolicy, AnchorSigner, anchor_due_chains
from shared.audit.roles import AUDIT_OWNER_ROLE, harden_audit_tables
from shared.auth.keys import generate_private_key
from shared.db import UnitOfWork, sessionmaker_for
from shared.events.tables import event_tables
from tests.conftest import libpq_url
from tests.helpers import own_database


@pytest.fixture(scope="module")
def hardened_url(database_url: str, superuser_url: str) -> Iterator[str]:
    with own_database(database_url, "audit_roles") as url:
        superuser = make_url(superuser_url).set(database=make_url(url).database)
        app_role = make_url(url).username
        assert app_role is not None
        harden_audit_tables(libpq_url(superuser.render_as_string(hide_password=False)), app_role)
        harden_audit_tables(libpq_url(superuser.render_as_string(hide_password=False)), app_role)  # idempotent
        yield url


@pytest.fixture
async def hardened_engine(hardened_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(hardened_url)
    yield engine
    await engine.dispose()


async def test_the_app_role_appends_and_anchors(hardened_engine: AsyncEngine) -> None:
    chain = f"roles-{uuid.uuid4().hex[:12]}"
    async with UnitOfWork(sessionmaker_for(hardened_engine)) as uow:
        for index in range(3):
            await append(uow.session, actor="op", action="test", target="t", details={"i": index}, chain=chain)
        anchors = await anchor_due_chains(
            uow.session,
            AnchorSigner(generate_private_key()),
            event_tables("reports"),
            AnchorPolicy(every_entries=1, every_s=1),
            chains=[chain],
        )
    assert [anchor.length for anchor in anchors] == [3]
    async with hardened_engine.connect() as connection:
        assert (await verify_chain(connection, chain)).ok


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE audit.audit_log DISABLE TRIGGER ALL",
        "ALTER TABLE audit.chain_heads DISABLE TRIGGER USER",
        "DROP TABLE audit.audit_log",
        "TRUNCATE audit.audit_log",
        "UPDATE audit.audit_log SET actor = 'mallory'",
        "DELETE FROM audit.audit_log",
        "DELETE FROM audit.chain_heads",
        "DELETE FROM anchors.audit_anchors",
        "ALTER TABLE anchors.audit_anchors DISABLE TRIGGER ALL",
        "DROP SCHEMA audit CASCADE",
        f"SET ROLE {AUDIT_OWNER_ROLE}",
    ],
)
def test_the_app_role_cannot_tamper(hardened_url: str, statement: str) -> None:
    with psycopg.connect(libpq_url(hardened_url)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        conn.execute(statement)
    # Refused by privileges, not by the guard triggers (which also raise insufficient_privilege).
    assert "append-only" not in str(err.value)
    assert "cannot be deleted" not in str(err.value)
