"""The admin API (operator role): people and tokens, departments, routing rules, campaigns, audit.

Mounted by the reporting service (its role alone writes the ``admin`` schema). Every change, in one
transaction: bump ``admin.state.version`` first (its row lock orders concurrent changes), write the
rows, and an audit row with who, what, when, before and after. Every replica of every service applies
the change within its poll interval (:mod:`shared.admin_sync`); this process applies it at once.
"""

from __future__ import annotations

import json
import secrets
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.admin_sync import NOTIFY_SQL
from shared.auth import Principal, hash_token, require
from shared.errors import ApiError, validation_details
from shared.openapi import error_responses
from shared.reference import Campaign, CampaignTargets, RoutingRule, UnknownReference
from shared.service import ServiceRuntime
from shared.text import Text

STATIC_DIR = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
page_router = APIRouter()
operator = require("operator")

Id = Annotated[str, Text(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]
Code = Annotated[str, Text(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Slug = Annotated[str, Text(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str, Text(strip=True, min_length=1, max_length=200)]
ReporterType = Literal["grid_member", "building_manager", "hotline", "cadre_visit"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PrincipalIn(_Body):
    """A person or system to give a token: role, and what the role binds it to."""

    principal: Id
    role: Literal["reporter", "department", "operator", "supervisor"]
    grid_id: Slug | None = None
    department_id: Code | None = None
    reporter_type: ReporterType | None = None
    building_ids: Annotated[
        list[Annotated[str, Text(min_length=1, max_length=100)]], Field(max_length=200)
    ] = []


class Contact(_Body):
    """An escalation contact of a department."""

    name: Name
    phone: Annotated[str, Text(pattern=r"^[0-9+\- ]{3,30}$")] | None = None
    email: Annotated[str, Text(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None


class DepartmentIn(_Body):
    """A department's names and escalation contacts."""

    name_en: Name
    name_zh: Name
    contacts: Annotated[list[Contact], Field(max_length=20)] = []


class NewDepartment(DepartmentIn):
    """A new department."""

    id: Code


class RoutingRulesIn(_Body):
    """The whole ordered rule list of a new routing version."""

    rules: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)]


class CampaignIn(_Body):
    """A new campaign: a date window (both ends included), the categories it counts, its targets."""

    id: Slug
    name_en: Name
    name_zh: Name
    starts_on: date
    ends_on: date
    categories: Annotated[list[Code], Field(min_length=1, max_length=100)]
    targets: CampaignTargets = CampaignTargets()


class CampaignTargetsIn(_Body):
    """New targets of a campaign."""

    targets: CampaignTargets


class CampaignEnd(_Body):
    """When a campaign ends (its last day); today when left out."""

    ends_on: date | None = None


def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


async def _db_today(session: AsyncSession, runtime: ServiceRuntime[Any]) -> date:
    now: datetime = (await session.execute(sa.text("SELECT now()"))).scalar_one()
    return now.astimezone(ZoneInfo(runtime.reference.calendar.timezone)).date()


async def _change(
    session: AsyncSession,
    actor: Principal,
    action: str,
    entity: str,
    entity_id: str,
    before: Any,
    after: Any,
) -> None:
    """Bump the change counter (first: it serialises administrators) and write the audit row."""
    await session.execute(sa.text("UPDATE admin.state SET version = version + 1 WHERE id = 1"))
    # Every replica listening hears it when this transaction commits (shared.admin_sync).
    await session.execute(NOTIFY_SQL)
    await session.execute(
        sa.text(
            "INSERT INTO admin.audit (actor, action, entity, entity_id, before, after) "
            "VALUES (:actor, :action, :entity, :entity_id, CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "actor": actor.id,
            "action": action,
            "entity": entity,
            "entity_id": entity_id,
            "before": None if before is None else json.dumps(before, default=str),
            "after": None if after is None else json.dumps(after, default=str),
        },
    )


async def _lock(session: AsyncSession) -> None:
    # Serialise administrators before reading what a change is checked against.
    await session.execute(sa.text("SELECT version FROM admin.state WHERE id = 1 FOR UPDATE"))


async def _apply_now(runtime: ServiceRuntime[Any]) -> None:
    if runtime.admin_sync is not None:
        await runtime.admin_sync.poll_once()


def _principal_view(p: Principal, source: str, active: bool = True) -> dict[str, Any]:
    return {
        "principal": p.id,
        "role": p.role,
        "grid_id": p.grid_id,
        "department_id": p.department_id,
        "reporter_type": p.reporter_type,
        "building_ids": list(p.building_ids),
        "source": source,
        "active": active,
    }


def _check_binding(body: PrincipalIn, runtime: ServiceRuntime[Any]) -> None:
    problems: list[dict[str, str]] = []
    reference = runtime.reference
    if body.role == "reporter":
        if body.grid_id is None:
            if body.reporter_type != "hotline":
                problems.append({"field": "grid_id", "problem": "a reporter must be bound to a grid"})
        else:
            try:
                reference.grid(body.grid_id)
            except UnknownReference:
                problems.append({"field": "grid_id", "problem": f"unknown grid {body.grid_id!r}"})
        if body.reporter_type == "building_manager" and not body.building_ids:
            problems.append({"field": "building_ids", "problem": "a building manager is bound to buildings"})
    else:
        if body.reporter_type is not None:
            problems.append({"field": "reporter_type", "problem": "only a reporter has a reporter type"})
        if body.building_ids:
            problems.append({"field": "building_ids", "problem": "only a building manager has buildings"})
        if body.grid_id is not None:
            problems.append({"field": "grid_id", "problem": "only a reporter is bound to a grid"})
    if body.role == "department":
        if body.department_id is None:
            problems.append({"field": "department_id", "problem": "a department token needs a department"})
        else:
            try:
                reference.department(body.department_id)
            except UnknownReference:
                problems.append(
                    {"field": "department_id", "problem": f"unknown department {body.department_id!r}"}
                )
    elif body.department_id is not None:
        problems.append({"field": "department_id", "problem": "only a department token names a department"})
    if problems:
        raise ApiError(422, "validation_failed", "The principal is not acceptable.", problems)


async def _active_db_token(session: AsyncSession, principal: str) -> Any:
    return (
        await session.execute(
            sa.text(
                "SELECT token_sha256, principal, role, grid_id, department_id, reporter_type, building_ids "
                "FROM admin.tokens WHERE principal = :p AND revoked_at IS NULL"
            ),
            {"p": principal},
        )
    ).first()


async def _live_file_hashes(session: AsyncSession, runtime: ServiceRuntime[Any], principal: str) -> list[str]:
    hashes = runtime.tokens.base_hashes(principal)
    if not hashes:
        return []
    denied = {
        r[0]
        for r in await session.execute(
            sa.text("SELECT token_sha256 FROM admin.denied_tokens WHERE token_sha256 = ANY(:h)"),
            {"h": hashes},
        )
    }
    return [h for h in hashes if h not in denied]


def _file_principal(runtime: ServiceRuntime[Any], principal: str) -> Principal | None:
    for _, p in runtime.tokens.base_principals():
        if p.id == principal:
            return p
    return None


async def _insert_token(session: AsyncSession, p: Principal, actor: Principal) -> str:
    token = "hz_" + secrets.token_urlsafe(32)
    await session.execute(
        sa.text(
            "INSERT INTO admin.tokens (token_sha256, principal, role, grid_id, department_id, reporter_type, "
            "building_ids, created_by) VALUES (:h, :p, :role, :grid, :dept, :rtype, :buildings, :by)"
        ),
        {
            "h": hash_token(token),
            "p": p.id,
            "role": p.role,
            "grid": p.grid_id,
            "dept": p.department_id,
            "rtype": p.reporter_type,
            "buildings": list(p.building_ids),
            "by": actor.id,
        },
    )
    return token


async def _deny(session: AsyncSession, hashes: list[str], principal: str, actor: Principal) -> None:
    for h in hashes:
        await session.execute(
            sa.text(
                "INSERT INTO admin.denied_tokens (token_sha256, principal, denied_by) VALUES (:h, :p, :by) "
                "ON CONFLICT DO NOTHING"
            ),
            {"h": h, "p": principal, "by": actor.id},
        )


def _row_principal(row: Any) -> Principal:
    return Principal(
        row.principal,
        row.role,
        row.grid_id,
        row.department_id,
        row.reporter_type,
        tuple(row.building_ids or ()),
    )


# --- people and tokens ---------------------------------------------------------------------------


@router.get("/principals", summary="Everyone holding a token: the file's (bootstrap) and the administered")
async def list_principals(
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)], _: Annotated[Principal, Depends(operator)]
) -> dict[str, Any]:
    """Principals with role and binding; never a token or its hash."""
    async with runtime.sessions() as session:
        rows = (
            await session.execute(
                sa.text(
                    "SELECT DISTINCT ON (principal) principal, role, grid_id, department_id, reporter_type, "
                    "building_ids, revoked_at FROM admin.tokens ORDER BY principal, revoked_at DESC NULLS FIRST"
                )
            )
        ).all()
        denied = {
            r[0] for r in await session.execute(sa.text("SELECT token_sha256 FROM admin.denied_tokens"))
        }
    seen: dict[str, dict[str, Any]] = {}
    for h, p in runtime.tokens.base_principals():
        view = seen.get(p.id) or _principal_view(p, "file", active=False)
        view["active"] = view["active"] or h not in denied
        seen[p.id] = view
    for row in rows:
        view = _principal_view(_row_principal(row), "database", active=row.revoked_at is None)
        if row.principal in seen and not view["active"]:
            continue
        seen[row.principal] = view
    return {"principals": sorted(seen.values(), key=lambda v: v["principal"])}


@router.post(
    "/principals",
    status_code=201,
    summary="Create a principal and its token (shown once)",
    responses=error_responses(409, s409="The principal already holds a token"),
)
async def create_principal(
    body: PrincipalIn,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """The plain token is in this answer only; the database keeps its SHA-256."""
    _check_binding(body, runtime)
    new = Principal(
        body.principal,
        body.role,
        body.grid_id,
        body.department_id,
        body.reporter_type,
        tuple(body.building_ids),
    )
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        if await _active_db_token(session, body.principal) is not None or await _live_file_hashes(
            session, runtime, body.principal
        ):
            raise ApiError(
                409, "principal_exists", f"{body.principal!r} already holds a token; rotate it instead."
            )
        token = await _insert_token(session, new, actor)
        after = _principal_view(new, "database")
        await _change(session, actor, "create", "principal", new.id, None, after)
    await _apply_now(runtime)
    return {**after, "token": token}


async def _replace_token(
    runtime: ServiceRuntime[Any], principal: str, actor: Principal, *, issue: bool
) -> tuple[dict[str, Any], str | None]:
    if principal == actor.id and not issue:
        raise ApiError(409, "self_revocation", "You cannot revoke your own token; ask another operator.")
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        row = await _active_db_token(session, principal)
        file_hashes = await _live_file_hashes(session, runtime, principal)
        if row is None and not file_hashes:
            if (
                row is None
                and _file_principal(runtime, principal) is None
                and (
                    await session.execute(
                        sa.text("SELECT 1 FROM admin.tokens WHERE principal = :p"), {"p": principal}
                    )
                ).first()
                is None
            ):
                raise ApiError(404, "not_found", f"No principal {principal!r}.")
            raise ApiError(409, "already_revoked", f"{principal!r} holds no live token.")
        held = _row_principal(row) if row is not None else _file_principal(runtime, principal)
        assert held is not None
        before = _principal_view(held, "database" if row is not None else "file")
        if row is not None:
            await session.execute(
                sa.text(
                    "UPDATE admin.tokens SET revoked_at = now(), revoked_by = :by "
                    "WHERE principal = :p AND revoked_at IS NULL"
                ),
                {"p": principal, "by": actor.id},
            )
        await _deny(session, file_hashes, principal, actor)
        token = await _insert_token(session, held, actor) if issue else None
        after = _principal_view(held, "database", active=issue)
        await _change(session, actor, "rotate" if issue else "revoke", "principal", principal, before, after)
    await _apply_now(runtime)
    return after, token


@router.post(
    "/principals/{principal}/rotate",
    summary="A new token for a principal; the old one stops working",
    responses=error_responses(409, s409="The principal holds no live token"),
)
async def rotate_principal(
    principal: Id,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """The new plain token is in this answer only."""
    after, token = await _replace_token(runtime, principal, actor, issue=True)
    return {**after, "token": token}


@router.post(
    "/principals/{principal}/revoke",
    summary="Revoke a principal's token (file tokens too)",
    responses=error_responses(409, s409="Your own token, or no live token"),
)
async def revoke_principal(
    principal: Id,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """Refused by every replica of every service within the poll interval (1 s by default)."""
    after, _ = await _replace_token(runtime, principal, actor, issue=False)
    return after


# --- departments -------------------------------------------------------------------------------


def _department_view(runtime: ServiceRuntime[Any], department_id: str, contacts: list[Any]) -> dict[str, Any]:
    d = runtime.reference.department(department_id)
    return {"id": d.id, "name_en": d.name_en, "name_zh": d.name_zh, "contacts": contacts}


async def _contacts(session: AsyncSession) -> dict[str, list[Any]]:
    return {
        r.id: list(r.contacts)
        for r in await session.execute(sa.text("SELECT id, contacts FROM admin.departments"))
    }


@router.get("/departments", summary="Departments (files and administered) with escalation contacts")
async def list_departments(
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)], _: Annotated[Principal, Depends(operator)]
) -> dict[str, Any]:
    """Every department in force."""
    async with runtime.sessions() as session:
        contacts = await _contacts(session)
    return {
        "departments": [
            _department_view(runtime, d.id, contacts.get(d.id, [])) for d in runtime.reference.departments
        ]
    }


async def _upsert_department(session: AsyncSession, department_id: str, body: DepartmentIn) -> None:
    await session.execute(
        sa.text(
            "INSERT INTO admin.departments (id, name_en, name_zh, contacts) "
            "VALUES (:id, :en, :zh, CAST(:contacts AS jsonb)) ON CONFLICT (id) DO UPDATE SET "
            "name_en = EXCLUDED.name_en, name_zh = EXCLUDED.name_zh, contacts = EXCLUDED.contacts, "
            "deleted_at = NULL, updated_at = now()"
        ),
        {
            "id": department_id,
            "en": body.name_en,
            "zh": body.name_zh,
            "contacts": json.dumps([c.model_dump(exclude_none=True) for c in body.contacts]),
        },
    )


@router.post(
    "/departments",
    status_code=201,
    summary="Add a department",
    responses=error_responses(409, s409="The id is taken"),
)
async def create_department(
    body: NewDepartment,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """409 when the id is taken."""
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        if body.id in {d.id for d in runtime.reference.departments}:
            raise ApiError(409, "department_exists", f"Department {body.id!r} exists already.")
        await _upsert_department(session, body.id, body)
        after = body.model_dump(mode="json", exclude_none=True)
        await _change(session, actor, "create", "department", body.id, None, after)
    await _apply_now(runtime)
    return after


@router.put("/departments/{department_id}", summary="Rename a department or change its contacts")
async def update_department(
    department_id: Code,
    body: DepartmentIn,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """404 for an unknown department."""
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        try:
            before = _department_view(
                runtime, department_id, (await _contacts(session)).get(department_id, [])
            )
        except UnknownReference:
            raise ApiError(404, "not_found", f"No department {department_id!r}.") from None
        await _upsert_department(session, department_id, body)
        after = {"id": department_id, **body.model_dump(mode="json", exclude_none=True)}
        await _change(session, actor, "update", "department", department_id, before, after)
    await _apply_now(runtime)
    return after


@router.delete(
    "/departments/{department_id}",
    summary="Delete a department with no open work and no rule",
    responses=error_responses(409, s409="A rule, an open hazard or a token still names it"),
)
async def delete_department(
    department_id: Code,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """409 while a routing rule names it, or hazards it holds are not closed, or a token is bound to it."""
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        try:
            before = _department_view(
                runtime, department_id, (await _contacts(session)).get(department_id, [])
            )
        except UnknownReference:
            raise ApiError(404, "not_found", f"No department {department_id!r}.") from None
        rules = [r.id for r in runtime.reference.routing_rules if r.department_id == department_id]
        if rules:
            raise ApiError(
                409,
                "department_in_routing",
                f"Routing rules send hazards to {department_id!r}; change them first.",
                [{"field": "routing_rules", "problem": ", ".join(rules)}],
            )
        owned = [c.code for c in runtime.reference.categories if c.department_id == department_id]
        if owned:
            raise ApiError(
                409,
                "department_owns_categories",
                f"Categories name {department_id!r} as their owner; it cannot be deleted.",
                [{"field": "categories", "problem": ", ".join(owned)}],
            )
        open_count = (
            await session.execute(
                sa.text(
                    "SELECT count(*) FROM reporting.hazards WHERE department_id = :d AND closed_at IS NULL"
                ),
                {"d": department_id},
            )
        ).scalar_one()
        if open_count:
            raise ApiError(
                409,
                "department_has_open_dispatches",
                f"{department_id!r} holds {open_count} hazards not closed; they must be closed or reassigned first.",
                [{"field": "open_hazards", "problem": str(open_count)}],
            )
        holders = (
            await session.execute(
                sa.text("SELECT count(*) FROM admin.tokens WHERE department_id = :d AND revoked_at IS NULL"),
                {"d": department_id},
            )
        ).scalar_one()
        file_holders = [p.id for _, p in runtime.tokens.base_principals() if p.department_id == department_id]
        if holders or file_holders:
            raise ApiError(
                409,
                "department_has_tokens",
                f"Tokens are bound to {department_id!r}; revoke them first.",
            )
        d = runtime.reference.department(department_id)
        await session.execute(
            sa.text(
                "INSERT INTO admin.departments (id, name_en, name_zh, deleted_at) VALUES (:id, :en, :zh, now()) "
                "ON CONFLICT (id) DO UPDATE SET deleted_at = now(), updated_at = now()"
            ),
            {"id": d.id, "en": d.name_en, "zh": d.name_zh},
        )
        await _change(session, actor, "delete", "department", department_id, before, None)
    await _apply_now(runtime)
    return {"id": department_id, "deleted": True}


# --- routing rules -----------------------------------------------------------------------------


@router.get("/routing-rules", summary="The routing rules in force and their version")
async def get_routing_rules(
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)], _: Annotated[Principal, Depends(operator)]
) -> dict[str, Any]:
    """Version 0: the files' rules."""
    async with runtime.sessions() as session:
        version = (
            await session.execute(sa.text("SELECT max(version) FROM admin.routing_versions"))
        ).scalar_one()
    return {
        "version": version or 0,
        "rules": [r.model_dump(exclude_none=True) for r in runtime.reference.routing_rules],
    }


@router.post(
    "/routing-rules",
    status_code=201,
    summary="A new version of the routing rules (the whole list)",
    responses=error_responses(409, s409="A rule points nowhere"),
)
async def new_routing_version(
    body: RoutingRulesIn,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """Applies to hazards routed from now on; a dispatch keeps the rule and department it was made under.

    422 for a malformed rule or a repeated id; 409 for a rule pointing nowhere (a department, category,
    community or grid not in force, or a grid outside the rule's community).
    """
    rules: list[RoutingRule] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(body.rules):
        try:
            rules.append(RoutingRule.model_validate(raw))
        except ValidationError as exc:
            for d in validation_details(exc.errors()):
                problems.append({**d, "field": f"rules.{index}.{d['field']}"})
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.id in seen:
            problems.append({"field": f"rules.{index}.id", "problem": f"rule id {rule.id!r} repeated"})
        seen.add(rule.id)
    if problems:
        raise ApiError(422, "validation_failed", "The routing rules are not acceptable.", problems)
    reference = runtime.reference
    nowhere: list[dict[str, Any]] = []
    for index, rule in enumerate(rules):
        checks = [
            ("department_id", rule.department_id, reference.department),
            ("category", rule.category, reference.category),
        ]
        if rule.community_id is not None:
            checks.append(("community_id", rule.community_id, reference.community))
        if rule.grid_id is not None:
            checks.append(("grid_id", rule.grid_id, reference.grid))
        for field, value, lookup in checks:
            try:
                lookup(value)
            except UnknownReference:
                nowhere.append({"field": f"rules.{index}.{field}", "problem": f"unknown {field} {value!r}"})
        if rule.grid_id is not None and rule.community_id is not None:
            try:
                if reference.grid(rule.grid_id).community_id != rule.community_id:
                    nowhere.append(
                        {
                            "field": f"rules.{index}.grid_id",
                            "problem": f"grid {rule.grid_id!r} is not in {rule.community_id!r}",
                        }
                    )
            except UnknownReference:
                pass
    if nowhere:
        raise ApiError(
            409, "rule_points_nowhere", "A routing rule points nowhere; nothing was changed.", nowhere
        )
    dumped = [r.model_dump(exclude_none=True) for r in rules]
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        version = (
            await session.execute(sa.text("SELECT coalesce(max(version), 0) FROM admin.routing_versions"))
        ).scalar_one() + 1
        before = [r.model_dump(exclude_none=True) for r in reference.routing_rules]
        await session.execute(
            sa.text(
                "INSERT INTO admin.routing_versions (version, rules, created_by) VALUES (:v, CAST(:r AS jsonb), :by)"
            ),
            {"v": version, "r": json.dumps(dumped), "by": actor.id},
        )
        await _change(session, actor, "new_version", "routing_rules", str(version), before, dumped)
    await _apply_now(runtime)
    return {"version": version, "rules": dumped}


# --- campaigns ---------------------------------------------------------------------------------


def _campaign(runtime: ServiceRuntime[Any], campaign_id: str) -> Campaign:
    for c in runtime.reference.campaigns:
        if c.id == campaign_id:
            return c
    raise ApiError(404, "not_found", f"No campaign {campaign_id!r}.")


async def _store_campaign(session: AsyncSession, campaign: Campaign, ended: bool = False) -> None:
    await session.execute(
        sa.text(
            "INSERT INTO admin.campaigns (id, body, ended_at) VALUES (:id, CAST(:b AS jsonb), "
            "CASE WHEN :ended THEN now() END) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, "
            "ended_at = coalesce(EXCLUDED.ended_at, admin.campaigns.ended_at), updated_at = now()"
        ),
        {"id": campaign.id, "b": json.dumps(campaign.model_dump(mode="json")), "ended": ended},
    )


@router.get("/campaigns", summary="Campaigns in force")
async def list_campaigns(
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)], _: Annotated[Principal, Depends(operator)]
) -> dict[str, Any]:
    """Every campaign with its window and targets."""
    return {"campaigns": [c.model_dump(mode="json") for c in runtime.reference.campaigns]}


@router.post(
    "/campaigns",
    status_code=201,
    summary="Create a campaign",
    responses=error_responses(409, s409="The id is taken"),
)
async def create_campaign(
    body: CampaignIn,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """409 when the id is taken; 422 for a category not in force or a window ending before it starts."""
    try:
        campaign = Campaign.model_validate(body.model_dump())
    except ValidationError as exc:
        raise ApiError(
            422, "validation_failed", "The campaign is not acceptable.", validation_details(exc.errors())
        ) from None
    unknown = [c for c in campaign.categories if c not in {k.code for k in runtime.reference.categories}]
    if unknown:
        raise ApiError(
            422,
            "validation_failed",
            "Unknown categories.",
            [{"field": "categories", "problem": ", ".join(unknown)}],
        )
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        if campaign.id in {c.id for c in runtime.reference.campaigns}:
            raise ApiError(409, "campaign_exists", f"Campaign {campaign.id!r} exists already.")
        await _store_campaign(session, campaign)
        after = campaign.model_dump(mode="json")
        await _change(session, actor, "create", "campaign", campaign.id, None, after)
    await _apply_now(runtime)
    return after


@router.patch("/campaigns/{campaign_id}", summary="Change a campaign's targets")
async def change_campaign_targets(
    campaign_id: Slug,
    body: CampaignTargetsIn,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """The figures stay; only the goals they are measured against change."""
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        current = _campaign(runtime, campaign_id)
        changed = current.model_copy(update={"targets": body.targets})
        await _store_campaign(session, changed)
        before, after = current.model_dump(mode="json"), changed.model_dump(mode="json")
        await _change(session, actor, "change_targets", "campaign", campaign_id, before, after)
    await _apply_now(runtime)
    return after


@router.post(
    "/campaigns/{campaign_id}/end",
    summary="End a campaign (its figures stay; later reports count late)",
    responses=error_responses(409, s409="The campaign ended already"),
)
async def end_campaign(
    campaign_id: Slug,
    body: CampaignEnd,
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    actor: Annotated[Principal, Depends(operator)],
) -> dict[str, Any]:
    """The last day is today (the database's clock, the city's calendar) unless given, never later.

    409 when it ended already; 422 for a last day in the future or before the campaign began.
    """
    async with runtime.sessions() as session, session.begin():
        await _lock(session)
        current = _campaign(runtime, campaign_id)
        today = await _db_today(session, runtime)
        ends_on = body.ends_on or today
        if current.ends_on < today:
            raise ApiError(409, "campaign_ended", f"Campaign {campaign_id!r} ended on {current.ends_on}.")
        if ends_on > today or ends_on < current.starts_on:
            raise ApiError(
                422,
                "validation_failed",
                "The last day must be between the campaign's first day and today.",
                [{"field": "ends_on", "problem": f"{ends_on} is not in {current.starts_on}..{today}"}],
            )
        changed = current.model_copy(update={"ends_on": ends_on})
        await _store_campaign(session, changed, ended=True)
        before, after = current.model_dump(mode="json"), changed.model_dump(mode="json")
        await _change(session, actor, "end", "campaign", campaign_id, before, after)
    await _apply_now(runtime)
    return after


# --- audit and page ----------------------------------------------------------------------------


@router.get("/audit", summary="Who changed what, when, before and after")
async def get_audit(
    runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)],
    _: Annotated[Principal, Depends(operator)],
    entity: Annotated[Literal["principal", "department", "routing_rules", "campaign"] | None, Query()] = None,
    entity_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Newest first."""
    where: list[str] = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if entity is not None:
        where.append("entity = :entity")
        params["entity"] = entity
    if entity_id is not None:
        where.append("entity_id = :entity_id")
        params["entity_id"] = entity_id
    async with runtime.sessions() as session:
        rows = (
            await session.execute(
                sa.text(
                    "SELECT id, at, actor, action, entity, entity_id, before, after FROM admin.audit "
                    f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
                ),
                params,
            )
        ).all()
    return {"audit": [{**dict(r._mapping), "at": r.at.isoformat()} for r in rows]}


@page_router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    """The admin page (zh first, English on a toggle; the token stays in the browser)."""
    return FileResponse(
        STATIC_DIR / "admin.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    )
