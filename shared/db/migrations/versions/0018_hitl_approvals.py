"""Schema hitl: approval policies, requests, votes and decisions (issue 5).

Revision ID: 0018_hitl_approvals
Revises: 0017_accounts_users
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0018_hitl_approvals"
down_revision = "0017_accounts_users"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "hitl"


def upgrade() -> None:
    """Policies are versioned rows; a request keeps its exact payload; one decision row per request at most."""
    op.create_table(
        "policies",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("rules", JSONB, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("version > 0", name="version_positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "requests",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("subject_type", sa.Text, nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        # The canonical (RFC 8785) JSON text of the payload: stored as text so that the hash is reproducible.
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("notional", Money, nullable=True),
        sa.Column("policy_version", sa.Integer, nullable=True),
        sa.Column("quorum", sa.Integer, nullable=False),
        sa.Column("eligible", JSONB, nullable=False, server_default="[]"),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.UniqueConstraint("subject_type", "subject_id", name="uq_requests_subject"),
        sa.CheckConstraint("quorum >= 1", name="quorum_positive"),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'expired')", name="status_known"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_requests_pending_expiry",
        "requests",
        ["expires_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_requests_account_created", "requests", ["account_id", "created_at"], schema=SCHEMA)
    op.create_table(
        "votes",
        sa.Column("request_id", sa.Text, sa.ForeignKey("hitl.requests.request_id"), primary_key=True),
        sa.Column("voter", sa.Text, primary_key=True),
        sa.Column("vote", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("voted_at", TS, nullable=False),
        sa.CheckConstraint("vote IN ('approve', 'reject')", name="vote_known"),
        schema=SCHEMA,
    )
    op.create_table(
        "decisions",
        # The primary key is the request: a second decision for one request cannot be stored.
        sa.Column("request_id", sa.Text, sa.ForeignKey("hitl.requests.request_id"), primary_key=True),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("approvers", JSONB, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.CheckConstraint("decision IN ('approved', 'rejected', 'expired')", name="decision_known"),
        schema=SCHEMA,
    )
    op.create_table(
        "notifications",
        sa.Column("notification_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, sa.ForeignKey("hitl.requests.request_id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_notifications_recipient", "notifications", ["recipient", "created_at"], schema=SCHEMA)


def downgrade() -> None:
    """Drop the approval tables (the outbox and inbox of revision 0008 stay)."""
    op.drop_table("notifications", schema=SCHEMA)
    op.drop_table("decisions", schema=SCHEMA)
    op.drop_table("votes", schema=SCHEMA)
    op.drop_index("ix_requests_account_created", table_name="requests", schema=SCHEMA)
    op.drop_index("ix_requests_pending_expiry", table_name="requests", schema=SCHEMA)
    op.drop_table("requests", schema=SCHEMA)
    op.drop_table("policies", schema=SCHEMA)
