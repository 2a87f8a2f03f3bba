"""Schema `audit`: the hash-chained, append-only audit log and its chain heads, guarded by triggers.

Revision ID: 0002_audit
Revises: 0001_schemas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import CHAR, JSONB

revision = "0002_audit"
down_revision = "0001_schemas"
branch_labels = None
depends_on = None

HEX_64 = "'^[0-9a-f]{64}$'"

# The triggers bind every role that does not disable triggers, the owner included; only a superuser (or a role
# with session_replication_role rights) can bypass them, which is what `aether audit verify` exists to catch.
FUNCTIONS = r"""
CREATE FUNCTION audit.refuse_audit_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.audit_log is append-only'
        USING ERRCODE = 'insufficient_privilege', HINT = 'audit entries are only ever appended';
END
$$;

CREATE FUNCTION audit.check_audit_log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head audit.chain_heads%ROWTYPE;
BEGIN
    SELECT * INTO head FROM audit.chain_heads WHERE chain = NEW.chain;
    IF NOT FOUND OR NEW.position <> head.length + 1 OR NEW.prev_hash <> head.head_hash THEN
        RAISE EXCEPTION 'audit.audit_log: entry does not extend the head of chain %', NEW.chain
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION audit.check_chain_heads_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.length <> 0 OR NEW.head_hash <> repeat('0', 64) THEN
            RAISE EXCEPTION 'audit.chain_heads: a chain starts at its genesis head'
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.chain = OLD.chain AND NEW.length = OLD.length + 1 AND EXISTS (
            SELECT 1 FROM audit.audit_log
            WHERE chain = NEW.chain AND position = NEW.length AND hash = NEW.head_hash
        ) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'audit.chain_heads may only advance to the newest entry of its chain'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RAISE EXCEPTION 'audit.chain_heads rows cannot be deleted' USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit.audit_log
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_audit_log_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_audit_log_change();
CREATE TRIGGER audit_log_extends_head BEFORE INSERT ON audit.audit_log
    FOR EACH ROW EXECUTE FUNCTION audit.check_audit_log_insert();
CREATE TRIGGER chain_heads_guard BEFORE INSERT OR UPDATE OR DELETE ON audit.chain_heads
    FOR EACH ROW EXECUTE FUNCTION audit.check_chain_heads_change();
CREATE TRIGGER chain_heads_no_truncate BEFORE TRUNCATE ON audit.chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION audit.check_chain_heads_change();
"""


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("chain", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("details", JSONB, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=True),
        sa.Column("prev_hash", CHAR(64), nullable=False),
        sa.Column("hash", CHAR(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        sa.UniqueConstraint("chain", "position", name="uq_audit_log_chain_position"),
        sa.CheckConstraint("position >= 1", name="ck_audit_log_position_positive"),
        sa.CheckConstraint(f"prev_hash ~ {HEX_64} AND hash ~ {HEX_64}", name="ck_audit_log_hex_hashes"),
        sa.CheckConstraint("jsonb_typeof(details) = 'object'", name="ck_audit_log_details_object"),
        schema="audit",
    )
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"], schema="audit")
    op.create_index("ix_audit_log_target", "audit_log", ["target"], schema="audit")
    op.create_table(
        "chain_heads",
        sa.Column("chain", sa.Text, nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("head_hash", CHAR(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("chain", name="pk_chain_heads"),
        sa.CheckConstraint("length >= 0", name="ck_chain_heads_length_non_negative"),
        sa.CheckConstraint(f"head_hash ~ {HEX_64}", name="ck_chain_heads_hex_hash"),
        schema="audit",
    )
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)


def downgrade() -> None:
    # Dropping the tables drops their triggers; the guard functions go with them.
    op.drop_table("chain_heads", schema="audit")
    op.drop_table("audit_log", schema="audit")
    op.execute("DROP FUNCTION audit.check_chain_heads_change()")
    op.execute("DROP FUNCTION audit.check_audit_log_insert()")
    op.execute("DROP FUNCTION audit.refuse_audit_log_change()")
