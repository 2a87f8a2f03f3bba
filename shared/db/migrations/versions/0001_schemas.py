"""One schema per service and for the platform's own data.

Revision ID: 0001_schemas
Revises:
"""

from __future__ import annotations

from alembic import op

from shared.db.migrate import PLATFORM_SCHEMAS, SERVICE_SCHEMAS

revision = "0001_schemas"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for schema in (*SERVICE_SCHEMAS, *PLATFORM_SCHEMAS):
        op.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def downgrade() -> None:
    for schema in reversed((*SERVICE_SCHEMAS, *PLATFORM_SCHEMAS)):
        op.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
