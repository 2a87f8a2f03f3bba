"""Hedge overrides that wait for director approval (issue 5): override history gains the actions of the approval
flow (`pending_approval` while waiting, `approval_requested` once decided, then `approved`, `rejected` or
`expired`).

Revision ID: 0020_hedge_override_approval
Revises: 0019_audit_anchors
"""

from __future__ import annotations

from alembic import op

revision = "0020_hedge_override_approval"
down_revision = "0019_audit_anchors"
branch_labels = None
depends_on = None

SCHEMA = "hedge"
ACTIONS = ("set", "clear", "pending_approval", "approval_requested", "approved", "rejected", "expired")


def _known(actions: tuple[str, ...]) -> str:
    return "action IN (" + ", ".join(f"'{action}'" for action in actions) + ")"


def upgrade() -> None:
    op.drop_constraint("action_known", "override_history", schema=SCHEMA, type_="check")
    op.create_check_constraint("action_known", "override_history", _known(ACTIONS), schema=SCHEMA)


def downgrade() -> None:
    op.execute(f"DELETE FROM {SCHEMA}.override_history WHERE NOT ({_known(ACTIONS[:2])})")  # noqa: S608 - constant schema and action names, no input
    op.drop_constraint("action_known", "override_history", schema=SCHEMA, type_="check")
    op.create_check_constraint("action_known", "override_history", _known(ACTIONS[:2]), schema=SCHEMA)
