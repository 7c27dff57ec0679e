"""notifications: subscriptions of scope ``contact``, the administered escalation contacts.

An escalation contact administered on a department (``admin.departments.contacts``, #18) is told
by e-mail through a subscription row of scope ``contact`` (``scope_id``: the department) that
notifications itself writes from the admin table when an escalation or urging comes, with an id
derived from (department, address): its deliveries are keyed (event, subscription) like any other.

Revision ID: notifications_0006
Revises: notifications_0005
"""

from __future__ import annotations

from alembic import op

revision = "notifications_0006"
down_revision = "notifications_0005"
branch_labels = None
depends_on = None

S = "notifications"


def upgrade() -> None:
    """Allow the ``contact`` scope."""
    op.drop_constraint("subscriptions_scope", "subscriptions", schema=S, type_="check")
    op.create_check_constraint(
        "subscriptions_scope", "subscriptions", "scope in ('department', 'escalation', 'contact')", schema=S
    )


def downgrade() -> None:
    """Retire the contact rows and allow the two scopes again."""
    op.execute(f"DELETE FROM {S}.subscriptions WHERE scope = 'contact'")
    op.drop_constraint("subscriptions_scope", "subscriptions", schema=S, type_="check")
    op.create_check_constraint(
        "subscriptions_scope", "subscriptions", "scope in ('department', 'escalation')", schema=S
    )
