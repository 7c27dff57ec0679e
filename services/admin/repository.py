"""Queries of the admin schema, bound to one transaction (the caller owns it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.admin.tables import (
    audit,
    campaigns,
    denied_tokens,
    departments,
    reporting_hazards,
    routing_versions,
    state,
    tokens,
)
from shared.admin_sync import NOTIFY_SQL
from shared.auth import Principal

TOKEN_COLUMNS = (
    tokens.c.token_sha256,
    tokens.c.principal,
    tokens.c.role,
    tokens.c.grid_id,
    tokens.c.department_id,
    tokens.c.reporter_type,
    tokens.c.building_ids,
)


def jsonable(value: Any) -> Any:
    """A value as it will read back from a jsonb column (dates as text)."""
    return None if value is None else json.loads(json.dumps(value, default=str))


def row_principal(row: Any) -> Principal:
    """A principal from a token row."""
    return Principal(
        row.principal,
        row.role,
        row.grid_id,
        row.department_id,
        row.reporter_type,
        tuple(row.building_ids or ()),
    )


class AdminRepository:
    """The admin schema seen from one transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- the change counter and the audit ----------------------------------------------------

    async def lock(self) -> None:
        """Serialise administrators before reading what a change is checked against."""
        await self.session.execute(sa.select(state.c.version).where(state.c.id == 1).with_for_update())

    async def record_change(
        self, actor: str, action: str, entity: str, entity_id: str, before: Any, after: Any
    ) -> None:
        """Bump the change counter (first: it serialises administrators) and write the audit row."""
        await self.session.execute(
            sa.update(state).where(state.c.id == 1).values(version=state.c.version + 1)
        )
        # Every replica listening hears it when this transaction commits (shared.admin_sync).
        await self.session.execute(NOTIFY_SQL)
        await self.session.execute(
            sa.insert(audit).values(
                actor=actor,
                action=action,
                entity=entity,
                entity_id=entity_id,
                before=jsonable(before),
                after=jsonable(after),
            )
        )

    async def audit(self, entity: str | None, entity_id: str | None, limit: int) -> Sequence[Any]:
        """Audit rows, newest first."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if entity is not None:
            query = query.where(audit.c.entity == entity)
        if entity_id is not None:
            query = query.where(audit.c.entity_id == entity_id)
        return (await self.session.execute(query)).all()

    # --- tokens ------------------------------------------------------------------------------

    async def latest_tokens(self) -> Sequence[Any]:
        """Per principal, its live token row, else its last revoked one."""
        query = (
            sa.select(*TOKEN_COLUMNS[1:], tokens.c.revoked_at)
            .ext(distinct_on(tokens.c.principal))
            .order_by(tokens.c.principal, tokens.c.revoked_at.desc().nulls_first())
        )
        return (await self.session.execute(query)).all()

    async def denied(self, among: list[str] | None = None) -> set[str]:
        """The denied hashes (of the file's tokens), all or among some."""
        query = sa.select(denied_tokens.c.token_sha256)
        if among is not None:
            query = query.where(denied_tokens.c.token_sha256 == sa.any_(sa.literal(among, sa.ARRAY(sa.Text))))
        return set((await self.session.execute(query)).scalars())

    async def active_token(self, principal: str) -> Any:
        """The principal's live database token row, if any."""
        query = sa.select(*TOKEN_COLUMNS).where(
            tokens.c.principal == principal, tokens.c.revoked_at.is_(None)
        )
        return (await self.session.execute(query)).first()

    async def ever_held(self, principal: str) -> bool:
        """Whether the database ever issued the principal a token."""
        query = sa.select(sa.literal(1)).where(tokens.c.principal == principal).limit(1)
        return (await self.session.execute(query)).first() is not None

    async def insert_token(self, token_sha256: str, p: Principal, actor: str) -> None:
        """Store a new token's hash with the principal's binding."""
        await self.session.execute(
            sa.insert(tokens).values(
                token_sha256=token_sha256,
                principal=p.id,
                role=p.role,
                grid_id=p.grid_id,
                department_id=p.department_id,
                reporter_type=p.reporter_type,
                building_ids=list(p.building_ids),
                created_by=actor,
            )
        )

    async def revoke_tokens(self, principal: str, actor: str) -> None:
        """Revoke the principal's live database token."""
        await self.session.execute(
            sa.update(tokens)
            .where(tokens.c.principal == principal, tokens.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now(), revoked_by=actor)
        )

    async def deny(self, hashes: list[str], principal: str, actor: str) -> None:
        """Put the file's token hashes on the deny-list."""
        if hashes:
            await self.session.execute(
                pg_insert(denied_tokens)
                .values([{"token_sha256": h, "principal": principal, "denied_by": actor} for h in hashes])
                .on_conflict_do_nothing()
            )

    async def live_department_tokens(self, department_id: str) -> int:
        """Live database tokens bound to the department."""
        query = (
            sa.select(sa.func.count())
            .select_from(tokens)
            .where(tokens.c.department_id == department_id, tokens.c.revoked_at.is_(None))
        )
        return int((await self.session.execute(query)).scalar_one())

    # --- departments -------------------------------------------------------------------------

    async def contacts(self) -> dict[str, list[Any]]:
        """Escalation contacts per administered department."""
        rows = await self.session.execute(sa.select(departments.c.id, departments.c.contacts))
        return {r.id: list(r.contacts) for r in rows}

    async def upsert_department(
        self, department_id: str, name_en: str, name_zh: str, contacts: list[Any]
    ) -> None:
        """Create or replace a department (undeleting it)."""
        insert = pg_insert(departments).values(
            id=department_id, name_en=name_en, name_zh=name_zh, contacts=contacts
        )
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[departments.c.id],
                set_={
                    "name_en": insert.excluded.name_en,
                    "name_zh": insert.excluded.name_zh,
                    "contacts": insert.excluded.contacts,
                    "deleted_at": None,
                    "updated_at": sa.func.now(),
                },
            )
        )

    async def delete_department(self, department_id: str, name_en: str, name_zh: str) -> None:
        """Mark a department deleted (a file's department too: the row overrides the file)."""
        insert = pg_insert(departments).values(
            id=department_id, name_en=name_en, name_zh=name_zh, contacts=[], deleted_at=sa.func.now()
        )
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[departments.c.id],
                set_={"deleted_at": sa.func.now(), "updated_at": sa.func.now()},
            )
        )

    async def open_hazards(self, department_id: str) -> int:
        """Hazards the department holds that are not closed (reporting's projection)."""
        query = (
            sa.select(sa.func.count())
            .select_from(reporting_hazards)
            .where(
                reporting_hazards.c.department_id == department_id, reporting_hazards.c.closed_at.is_(None)
            )
        )
        return int((await self.session.execute(query)).scalar_one())

    # --- routing rules -----------------------------------------------------------------------

    async def routing_version(self) -> int:
        """The newest routing version (0: the files' rules)."""
        query = sa.select(sa.func.coalesce(sa.func.max(routing_versions.c.version), 0))
        return int((await self.session.execute(query)).scalar_one())

    async def latest_rules(self) -> list[dict[str, Any]] | None:
        """The newest version's rules; None while the files' rules are in force."""
        query = sa.select(routing_versions.c.rules).order_by(routing_versions.c.version.desc()).limit(1)
        rules = (await self.session.execute(query)).scalar_one_or_none()
        return None if rules is None else list(rules)

    async def insert_routing_version(self, version: int, rules: list[dict[str, Any]], actor: str) -> None:
        """Store a new routing version (the whole ordered list)."""
        await self.session.execute(
            sa.insert(routing_versions).values(version=version, rules=rules, created_by=actor)
        )

    # --- campaigns ---------------------------------------------------------------------------

    async def store_campaign(self, campaign_id: str, body: dict[str, Any], *, ended: bool = False) -> None:
        """Create or replace a campaign; ``ended`` stamps when it was ended (once)."""
        insert = pg_insert(campaigns).values(
            id=campaign_id, body=body, ended_at=sa.func.now() if ended else None
        )
        await self.session.execute(
            insert.on_conflict_do_update(
                index_elements=[campaigns.c.id],
                set_={
                    "body": insert.excluded.body,
                    "ended_at": sa.func.coalesce(insert.excluded.ended_at, campaigns.c.ended_at),
                    "updated_at": sa.func.now(),
                },
            )
        )
