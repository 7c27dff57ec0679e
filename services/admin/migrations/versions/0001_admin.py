"""admin: tokens, deny-list, departments, routing rule versions, campaigns, audit, change counter.

Revision ID: admin_0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "admin_0001"
down_revision = None
branch_labels = None
depends_on = None


_STATEMENTS = [
    """
    CREATE TABLE admin.state (
        id smallint PRIMARY KEY CHECK (id = 1),
        version bigint NOT NULL DEFAULT 0
    )
    """,
    """
    INSERT INTO admin.state (id, version) VALUES (1, 0)
    """,
    """
    CREATE TABLE admin.tokens (
        token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
        principal text NOT NULL,
        role text NOT NULL CHECK (role IN ('reporter', 'department', 'operator', 'supervisor')),
        grid_id text,
        department_id text,
        reporter_type text,
        building_ids text[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(),
        created_by text NOT NULL,
        revoked_at timestamptz,
        revoked_by text
    )
    """,
    """
    CREATE UNIQUE INDEX tokens_one_active_per_principal ON admin.tokens (principal)
        WHERE revoked_at IS NULL
    """,
    """
    CREATE TABLE admin.denied_tokens (
        token_sha256 text PRIMARY KEY CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
        principal text NOT NULL,
        denied_at timestamptz NOT NULL DEFAULT now(),
        denied_by text NOT NULL
    )
    """,
    """
    CREATE TABLE admin.departments (
        id text PRIMARY KEY,
        name_en text NOT NULL,
        name_zh text NOT NULL,
        contacts jsonb NOT NULL DEFAULT '[]',
        deleted_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE admin.routing_versions (
        version integer PRIMARY KEY CHECK (version >= 1),
        rules jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        created_by text NOT NULL
    )
    """,
    """
    CREATE TABLE admin.campaigns (
        id text PRIMARY KEY,
        body jsonb NOT NULL,
        ended_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE admin.audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        actor text NOT NULL,
        action text NOT NULL,
        entity text NOT NULL,
        entity_id text NOT NULL,
        before jsonb,
        after jsonb
    )
    """,
    """
    CREATE INDEX audit_entity ON admin.audit (entity, entity_id, id)
    """,
]


def upgrade() -> None:
    """Create the admin tables; ``state.version`` is bumped (row-locked) by every change."""
    for statement in _STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    """Drop the admin tables."""
    op.execute(
        "DROP TABLE admin.audit, admin.campaigns, admin.routing_versions, admin.departments, "
        "admin.denied_tokens, admin.tokens, admin.state"
    )
