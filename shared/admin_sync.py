"""Runtime administration, applied without restart in every replica of every service.

The admin API (hosted by reporting, :mod:`services.admin.api`) writes the ``admin`` schema and, in the
same transaction, bumps ``admin.state.version`` (a row lock, so versions commit in order) and
notifies the channel ``hazard_admin`` (delivered at its commit). Every replica of every service
listens on that channel on a connection of its own and reads that one row when told, and at least
every ``admin_sync.listen_poll_s`` (30 s) in case a change came without a notification; while it
cannot listen (the database away, a pooler without LISTEN) it polls every
``admin_sync.poll_interval_s`` (1 s) instead (#20: an idle stack costs almost nothing). When the
version moved, it reads the administered rows in one snapshot and applies them in place:

- tokens: the token file's entries (the bootstrap) plus the active database tokens, less the denied
  hashes (:meth:`shared.auth.TokenRegistry.refresh`);
- departments, routing rules and campaigns: the packaged YAML overlaid by the database's rows
  (:meth:`shared.reference.ReferenceData.refresh`), so ``runtime.reference`` stays the single source
  every part of the service asks.

A database without the admin schema (a service migrated alone) keeps the files' data; the poll goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Principal, TokenRegistry
from shared.db import listening_connection
from shared.reference import Campaign, Department, ReferenceData, RoutingRule

log = logging.getLogger(__name__)

VERSION_SQL = sa.text("SELECT version FROM admin.state WHERE id = 1")
# The channel a change notifies (in its transaction: listeners hear it when it commits).
CHANNEL = "hazard_admin"
NOTIFY_SQL = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")


@dataclass(frozen=True, slots=True)
class AdminSnapshot:
    """The administered rows at one version."""

    version: int
    tokens: dict[str, Principal]
    denied: frozenset[str]
    departments: list[dict[str, Any]]
    routing_rules: list[dict[str, Any]] | None
    campaigns: list[dict[str, Any]]


async def read_snapshot(conn: Any) -> AdminSnapshot:
    """Read every administered row (call inside one REPEATABLE READ transaction)."""
    version = int((await conn.execute(VERSION_SQL)).scalar_one())
    tokens = {
        r.token_sha256: Principal(
            r.principal,
            r.role,
            r.grid_id,
            r.department_id,
            r.reporter_type,
            tuple(r.building_ids or ()),
        )
        for r in await conn.execute(
            sa.text(
                "SELECT token_sha256, principal, role, grid_id, department_id, reporter_type, building_ids "
                "FROM admin.tokens WHERE revoked_at IS NULL"
            )
        )
    }
    denied = frozenset(
        r[0] for r in await conn.execute(sa.text("SELECT token_sha256 FROM admin.denied_tokens"))
    )
    departments = [
        dict(r._mapping)
        for r in await conn.execute(
            sa.text("SELECT id, name_en, name_zh, contacts, deleted_at FROM admin.departments ORDER BY id")
        )
    ]
    row = (
        await conn.execute(sa.text("SELECT rules FROM admin.routing_versions ORDER BY version DESC LIMIT 1"))
    ).first()
    campaigns = [
        {**r.body, "_ended_at": r.ended_at}
        for r in await conn.execute(sa.text("SELECT body, ended_at FROM admin.campaigns ORDER BY id"))
    ]
    return AdminSnapshot(
        version=version,
        tokens=tokens,
        denied=denied,
        departments=departments,
        routing_rules=None if row is None else list(row.rules),
        campaigns=campaigns,
    )


def overlay(base: ReferenceData, snapshot: AdminSnapshot) -> dict[str, tuple[Any, ...]]:
    """The departments, routing rules and campaigns: the files' overlaid by the database's rows."""
    departments: dict[str, Department] = {d.id: d for d in base.departments}
    for row in snapshot.departments:
        if row["deleted_at"] is not None:
            departments.pop(row["id"], None)
            continue
        try:
            departments[row["id"]] = Department(id=row["id"], name_en=row["name_en"], name_zh=row["name_zh"])
        except ValidationError as exc:
            log.warning("admin: department %r skipped: %s", row["id"], exc)
    rules = base.routing_rules
    if snapshot.routing_rules is not None:
        try:
            rules = tuple(RoutingRule.model_validate(rule) for rule in snapshot.routing_rules)
        except ValidationError as exc:
            log.warning("admin: routing rules kept as before: %s", exc)
    campaigns: dict[str, Campaign] = {c.id: c for c in base.campaigns}
    for body in snapshot.campaigns:
        data = {k: v for k, v in body.items() if not k.startswith("_")}
        try:
            campaigns[data["id"]] = Campaign.model_validate(data)
        except (ValidationError, KeyError) as exc:
            log.warning("admin: campaign %r skipped: %s", data.get("id"), exc)
    return {
        "departments": tuple(departments.values()),
        "routing_rules": rules,
        "campaigns": tuple(campaigns.values()),
    }


@dataclass
class AdminSync:
    """Polls the admin change counter and applies the administered data to one process."""

    engine: AsyncEngine
    tokens: TokenRegistry
    reference: ReferenceData
    poll_interval_s: float = 1.0
    # Listening (LISTEN hazard_admin): also poll this often, for a change made without notifying.
    # None: never listen, poll every poll_interval_s.
    listen_poll_s: float | None = None
    version: int | None = None
    _base: ReferenceData = field(init=False)
    _absent_logged: bool = False
    _failing: bool = False

    def __post_init__(self) -> None:
        # The files' data, kept apart from the live object the overlay replaces in place.
        self._base = self.reference.model_copy()

    async def poll_once(self) -> bool:
        """Apply the administered data if its version moved; True when something was applied."""
        try:
            async with self.engine.connect() as conn:
                current = int((await conn.execute(VERSION_SQL)).scalar_one())
                if current == self.version:
                    await conn.rollback()
                    return False
                await conn.rollback()
                await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                snapshot = await read_snapshot(conn)
                await conn.rollback()
        except DBAPIError as exc:
            if "admin" in str(exc.orig) and ("does not exist" in str(exc.orig)):
                if not self._absent_logged:
                    log.info("admin schema absent: the files' tokens and reference data stay in force")
                    self._absent_logged = True
                return False
            raise
        self.apply(snapshot)
        return True

    def apply(self, snapshot: AdminSnapshot) -> None:
        """Swap in the snapshot's tokens and reference data (no await: all at once)."""
        self.tokens.refresh(snapshot.tokens, snapshot.denied)
        self.reference.refresh(**overlay(self._base, snapshot))
        previous, self.version = self.version, snapshot.version
        log.info("admin data applied: version %s -> %s", previous, snapshot.version)

    async def _poll_logged(self) -> None:
        try:
            await self.poll_once()
            if self._failing:
                log.info("admin sync works again")
                self._failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._failing:  # once per outage, not every second
                log.warning("admin sync failed (%s); retrying every %s s", exc, self.poll_interval_s)
                self._failing = True

    async def run(self) -> None:
        """Apply changes until cancelled: told by notifications when it can listen, else polling."""
        while True:
            if self.listen_poll_s is not None:
                try:
                    await self._listen()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.info("admin sync cannot listen (%s); polling every %s s", exc, self.poll_interval_s)
            # Not listening (or the listener was lost): poll, and try to listen again after a while.
            for _ in range(max(1, round(30 / self.poll_interval_s)) if self.listen_poll_s is not None else 1):
                await self._poll_logged()
                await asyncio.sleep(self.poll_interval_s)

    async def _listen(self) -> None:
        """Listen on a connection of its own; read the version when told, or every ``listen_poll_s``."""
        conn = await listening_connection(self.engine, "hazard-admin-sync")
        told = asyncio.Event()
        lost = asyncio.Event()

        def on_notify(*_: object) -> None:
            told.set()

        def on_lost(*_: object) -> None:
            lost.set()
            told.set()

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(CHANNEL, on_notify)
            while not lost.is_set() and not conn.is_closed():
                told.clear()
                # After subscribing, so that a change committed meanwhile is not missed.
                await self._poll_logged()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(told.wait(), timeout=self.listen_poll_s)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        raise ConnectionError("the admin listener's connection was lost")
