"""Signed audit anchors, stored outside the audit schema (issue 5).

Schema `anchors` holds `audit_anchors`: one Ed25519-signed `(chain, length, head_hash, anchored_at)` commitment per
row, written by the reports service's anchoring job and published on `audit.anchors.v1`. Rows are append-only
(a trigger refuses UPDATE, DELETE and TRUNCATE); the signatures, not the triggers, are what make them trustworthy.

Revision ID: 0019_audit_anchors
Revises: 0018_hitl_approvals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import CHAR

revision = "0019_audit_anchors"
down_revision = "0018_hitl_approvals"
branch_labels = None
depends_on = None

SCHEMA = "anchors"

GUARD = r"""
CREATE FUNCTION anchors.refuse_anchor_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'anchors.audit_anchors is append-only'
        USING ERRCODE = 'insufficient_privilege', HINT = 'anchors are only ever appended';
END
$$;
CREATE TRIGGER audit_anchors_append_only BEFORE UPDATE OR DELETE ON anchors.audit_anchors
    FOR EACH ROW EXECUTE FUNCTION anchors.refuse_anchor_change();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON anchors.audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION anchors.refuse_anchor_change();
"""


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.create_table(
        "audit_anchors",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("chain", sa.Text, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("head_hash", CHAR(64), nullable=False),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_audit_anchors"),
        sa.UniqueConstraint("chain", "length", name="uq_audit_anchors_chain_length"),
        sa.CheckConstraint("length >= 1", name="ck_audit_anchors_length_positive"),
        sa.CheckConstraint("head_hash ~ '^[0-9a-f]{64}$'", name="ck_audit_anchors_hex_hash"),
        schema=SCHEMA,
    )
    op.create_index("ix_audit_anchors_anchored_at", "audit_anchors", ["anchored_at"], schema=SCHEMA)
    op.execute(GUARD)


def downgrade() -> None:
    op.drop_table("audit_anchors", schema=SCHEMA)
    op.execute("DROP FUNCTION anchors.refuse_anchor_change()")
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
