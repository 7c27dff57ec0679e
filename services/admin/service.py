"""The admin use cases: people and tokens, departments, routing rules, campaigns, audit (#18).

Plain ``async def verb_noun(uow, live, ...)`` functions: ``uow`` is one transaction on the admin
repository (:class:`services.admin.repository.AdminRepository`), ``live`` what this process holds
in force (the reference data and the token registry, refreshed by :mod:`shared.admin_sync`). They
refuse with the domain errors below; the edge answers them in the API's error shape.

Every change, in one transaction: lock ``admin.state`` (it orders concurrent changes), check, write
the rows, then bump the version and write an audit row with who, what, when, before and after.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from services.admin.models import (
    CampaignEnd,
    CampaignIn,
    CampaignTargetsIn,
    DepartmentIn,
    NewDepartment,
    NewRule,
    PrincipalIn,
    RoutingRulesIn,
    RuleChange,
)
from services.admin.repository import AdminRepository, row_principal
from shared.auth import Principal, TokenRegistry, hash_token
from shared.domain_errors import ConflictError, InvalidError, NotFoundError
from shared.errors import validation_details
from shared.reference import Campaign, ReferenceData, RoutingRule, UnknownReference
from shared.uow import UnitOfWork

Work = UnitOfWork[AdminRepository]


class AdminNotFoundError(NotFoundError):
    """No such principal, department, rule or campaign (404 not_found)."""


class AdminConflictError(ConflictError):
    """The change would break what is in force or in history (409, with its own code)."""


class AdminInvalidError(InvalidError):
    """The change names something not in force, or does not hold together (422 validation_failed)."""

    code = "validation_failed"


@dataclass(frozen=True, slots=True)
class Live:
    """What this process holds in force: the reference data and the tokens (updated in place)."""

    reference: ReferenceData
    tokens: TokenRegistry


# --- people and tokens ---------------------------------------------------------------------------


def principal_view(p: Principal, source: str, active: bool = True) -> dict[str, Any]:
    """A principal as the API shows it."""
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


def _binding_problems(body: PrincipalIn, reference: ReferenceData) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    if body.role == "reporter":
        if body.grid_id is None:
            if body.reporter_type != "hotline":
                problems.append({"field": "grid_id", "problem": "a reporter must be bound to a grid"})
        elif not _known(reference.grid, body.grid_id):
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
        elif not _known(reference.department, body.department_id):
            problems.append(
                {"field": "department_id", "problem": f"unknown department {body.department_id!r}"}
            )
    elif body.department_id is not None:
        problems.append({"field": "department_id", "problem": "only a department token names a department"})
    return problems


def _known(lookup: Any, value: str) -> bool:
    try:
        lookup(value)
    except UnknownReference:
        return False
    return True


async def _live_file_hashes(uow: Work, live: Live, principal: str) -> list[str]:
    hashes = live.tokens.base_hashes(principal)
    if not hashes:
        return []
    denied = await uow.repo.denied(hashes)
    return [h for h in hashes if h not in denied]


def _file_principal(live: Live, principal: str) -> Principal | None:
    return next((p for _, p in live.tokens.base_principals() if p.id == principal), None)


async def _issue_token(uow: Work, p: Principal, actor: Principal) -> str:
    token = "hz_" + secrets.token_urlsafe(32)
    await uow.repo.insert_token(hash_token(token), p, actor.id)
    return token


async def list_principals(uow: Work, live: Live) -> dict[str, Any]:
    """The file's (bootstrap) and the administered principals; a live token wins over a revoked one."""
    rows = await uow.repo.latest_tokens()
    denied = await uow.repo.denied()
    seen: dict[str, dict[str, Any]] = {}
    for h, p in live.tokens.base_principals():
        view = seen.get(p.id) or principal_view(p, "file", active=False)
        view["active"] = view["active"] or h not in denied
        seen[p.id] = view
    for row in rows:
        view = principal_view(row_principal(row), "database", active=row.revoked_at is None)
        if row.principal in seen and not view["active"]:
            continue
        seen[row.principal] = view
    return {"principals": sorted(seen.values(), key=lambda v: v["principal"])}


async def create_principal(uow: Work, live: Live, actor: Principal, body: PrincipalIn) -> dict[str, Any]:
    """A new principal and its token (the plain token only in the answer; the database keeps its hash)."""
    problems = _binding_problems(body, live.reference)
    if problems:
        raise AdminInvalidError("The principal is not acceptable.", details=problems)
    new = Principal(
        body.principal,
        body.role,
        body.grid_id,
        body.department_id,
        body.reporter_type,
        tuple(body.building_ids),
    )
    await uow.repo.lock()
    if await uow.repo.active_token(body.principal) is not None or await _live_file_hashes(
        uow, live, body.principal
    ):
        raise AdminConflictError(
            f"{body.principal!r} already holds a token; rotate it instead.", code="principal_exists"
        )
    token = await _issue_token(uow, new, actor)
    after = principal_view(new, "database")
    await uow.repo.record_change(actor.id, "create", "principal", new.id, None, after)
    return {**after, "token": token}


async def replace_token(
    uow: Work, live: Live, actor: Principal, principal: str, *, issue: bool
) -> dict[str, Any]:
    """Revoke the principal's live tokens (the file's through the deny-list); with ``issue``, a new one."""
    if principal == actor.id and not issue:
        raise AdminConflictError(
            "You cannot revoke your own token; ask another operator.", code="self_revocation"
        )
    await uow.repo.lock()
    row = await uow.repo.active_token(principal)
    file_hashes = await _live_file_hashes(uow, live, principal)
    if row is None and not file_hashes:
        if _file_principal(live, principal) is None and not await uow.repo.ever_held(principal):
            raise AdminNotFoundError(f"No principal {principal!r}.")
        raise AdminConflictError(f"{principal!r} holds no live token.", code="already_revoked")
    held = row_principal(row) if row is not None else _file_principal(live, principal)
    assert held is not None
    before = principal_view(held, "database" if row is not None else "file")
    if row is not None:
        await uow.repo.revoke_tokens(principal, actor.id)
    await uow.repo.deny(file_hashes, principal, actor.id)
    token = await _issue_token(uow, held, actor) if issue else None
    after = principal_view(held, "database", active=issue)
    await uow.repo.record_change(
        actor.id, "rotate" if issue else "revoke", "principal", principal, before, after
    )
    return after if token is None else {**after, "token": token}


async def rotate_principal(uow: Work, live: Live, actor: Principal, principal: str) -> dict[str, Any]:
    """A new token for the principal; the old one stops working."""
    return await replace_token(uow, live, actor, principal, issue=True)


async def revoke_principal(uow: Work, live: Live, actor: Principal, principal: str) -> dict[str, Any]:
    """The principal's tokens stop working (never the caller's own)."""
    return await replace_token(uow, live, actor, principal, issue=False)


# --- departments -------------------------------------------------------------------------------


def _department_view(live: Live, department_id: str, contacts: list[Any]) -> dict[str, Any]:
    d = live.reference.department(department_id)
    return {"id": d.id, "name_en": d.name_en, "name_zh": d.name_zh, "contacts": contacts}


async def _department_before(uow: Work, live: Live, department_id: str) -> dict[str, Any]:
    try:
        return _department_view(live, department_id, (await uow.repo.contacts()).get(department_id, []))
    except UnknownReference:
        raise AdminNotFoundError(f"No department {department_id!r}.") from None


def _check_levels(live: Live, body: DepartmentIn) -> None:
    """A contact's escalation level the chain does not have would never be told: 422."""
    levels = {step.level for step in live.reference.escalation_steps}
    problems = [
        {
            "field": f"contacts.{i}.levels",
            "problem": f"no escalation level {level}; the chain has {sorted(levels)}",
        }
        for i, contact in enumerate(body.contacts)
        for level in contact.levels or ()
        if level not in levels
    ]
    if problems:
        raise AdminInvalidError("The department is not acceptable.", details=problems)


async def _save_department(uow: Work, department_id: str, body: DepartmentIn) -> dict[str, Any]:
    contacts = [c.model_dump(exclude_none=True) for c in body.contacts]
    await uow.repo.upsert_department(department_id, body.name_en, body.name_zh, contacts)
    return {"id": department_id, "name_en": body.name_en, "name_zh": body.name_zh, "contacts": contacts}


async def list_departments(uow: Work, live: Live) -> dict[str, Any]:
    """Every department in force, with its escalation contacts."""
    contacts = await uow.repo.contacts()
    return {
        "departments": [
            _department_view(live, d.id, contacts.get(d.id, [])) for d in live.reference.departments
        ]
    }


async def create_department(uow: Work, live: Live, actor: Principal, body: NewDepartment) -> dict[str, Any]:
    """A new department (409 department_exists when the id is taken; 422 for a contact's level not in the chain)."""
    _check_levels(live, body)
    await uow.repo.lock()
    if body.id in {d.id for d in live.reference.departments}:
        raise AdminConflictError(f"Department {body.id!r} exists already.", code="department_exists")
    after = await _save_department(uow, body.id, body)
    await uow.repo.record_change(actor.id, "create", "department", body.id, None, after)
    return after


async def update_department(
    uow: Work, live: Live, actor: Principal, department_id: str, body: DepartmentIn
) -> dict[str, Any]:
    """Rename a department or change its contacts (422 for a contact's level not in the chain)."""
    _check_levels(live, body)
    await uow.repo.lock()
    before = await _department_before(uow, live, department_id)
    after = await _save_department(uow, department_id, body)
    await uow.repo.record_change(actor.id, "update", "department", department_id, before, after)
    return after


async def delete_department(uow: Work, live: Live, actor: Principal, department_id: str) -> dict[str, Any]:
    """Refused while a rule or category names it, it holds hazards not closed, or a token is bound to it."""
    await uow.repo.lock()
    before = await _department_before(uow, live, department_id)
    reference = live.reference
    rules = [r.id for r in reference.routing_rules if r.department_id == department_id]
    if rules:
        raise AdminConflictError(
            f"Routing rules send hazards to {department_id!r}; change them first.",
            code="department_in_routing",
            details=[{"field": "routing_rules", "problem": ", ".join(rules)}],
        )
    owned = [c.code for c in reference.categories if c.department_id == department_id]
    if owned:
        raise AdminConflictError(
            f"Categories name {department_id!r} as their owner; it cannot be deleted.",
            code="department_owns_categories",
            details=[{"field": "categories", "problem": ", ".join(owned)}],
        )
    open_count = await uow.repo.open_hazards(department_id)
    if open_count:
        raise AdminConflictError(
            f"{department_id!r} holds {open_count} hazards not closed; they must be closed or reassigned first.",
            code="department_has_open_dispatches",
            details=[{"field": "open_hazards", "problem": str(open_count)}],
        )
    file_holders = [p.id for _, p in live.tokens.base_principals() if p.department_id == department_id]
    if await uow.repo.live_department_tokens(department_id) or file_holders:
        raise AdminConflictError(
            f"Tokens are bound to {department_id!r}; revoke them first.", code="department_has_tokens"
        )
    await uow.repo.delete_department(department_id, before["name_en"], before["name_zh"])
    await uow.repo.record_change(actor.id, "delete", "department", department_id, before, None)
    return {"id": department_id, "deleted": True}


# --- routing rules -----------------------------------------------------------------------------


def _dump_rules(rules: list[RoutingRule] | tuple[RoutingRule, ...]) -> list[dict[str, Any]]:
    return [r.model_dump(exclude_none=True) for r in rules]


async def get_routing_rules(uow: Work, live: Live) -> dict[str, Any]:
    """The rules in force and their version (0: the files' rules)."""
    return {"version": await uow.repo.routing_version(), "rules": _dump_rules(live.reference.routing_rules)}


def _unknown_references(
    reference: ReferenceData, rule: RoutingRule, prefix: str = ""
) -> list[dict[str, Any]]:
    """A rule's department, category, community and grid that are not in force; a grid outside its community."""
    checks: list[tuple[str, str, Any]] = [
        ("department_id", rule.department_id, reference.department),
        ("category", rule.category, reference.category),
    ]
    if rule.community_id is not None:
        checks.append(("community_id", rule.community_id, reference.community))
    if rule.grid_id is not None:
        checks.append(("grid_id", rule.grid_id, reference.grid))
    problems = [
        {"field": prefix + field, "problem": f"unknown {field} {value!r}", "value": value}
        for field, value, lookup in checks
        if not _known(lookup, value)
    ]
    if (
        rule.grid_id is not None
        and rule.community_id is not None
        and _known(reference.grid, rule.grid_id)
        and reference.grid(rule.grid_id).community_id != rule.community_id
    ):
        problems.append(
            {
                "field": prefix + "grid_id",
                "problem": f"grid {rule.grid_id!r} is not in {rule.community_id!r}",
                "value": rule.grid_id,
            }
        )
    return problems


async def _save_rules(
    uow: Work, actor: Principal, action: str, before: list[dict[str, Any]], rules: list[RoutingRule]
) -> dict[str, Any]:
    """Store ``rules`` as the next routing version, audited."""
    version = await uow.repo.routing_version() + 1
    dumped = _dump_rules(rules)
    await uow.repo.insert_routing_version(version, dumped, actor.id)
    await uow.repo.record_change(actor.id, action, "routing_rules", str(version), before, dumped)
    return {"version": version, "rules": dumped}


async def new_routing_version(
    uow: Work, live: Live, actor: Principal, body: RoutingRulesIn
) -> dict[str, Any]:
    """The whole ordered list as a new version; dispatches made earlier keep their rule.

    422 for a malformed rule or a repeated id; 409 rule_points_nowhere for a rule naming a
    department, category, community or grid not in force, or a grid outside the rule's community.
    """
    rules: list[RoutingRule] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(body.rules):
        try:
            rules.append(RoutingRule.model_validate(raw))
        except ValidationError as exc:
            problems.extend(
                {**d, "field": f"rules.{index}.{d['field']}"} for d in validation_details(exc.errors())
            )
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.id in seen:
            problems.append({"field": f"rules.{index}.id", "problem": f"rule id {rule.id!r} repeated"})
        seen.add(rule.id)
    if problems:
        raise AdminInvalidError("The routing rules are not acceptable.", details=problems)
    nowhere = [
        {"field": d["field"], "problem": d["problem"]}
        for index, rule in enumerate(rules)
        for d in _unknown_references(live.reference, rule, f"rules.{index}.")
    ]
    if nowhere:
        raise AdminConflictError(
            "A routing rule points nowhere; nothing was changed.", code="rule_points_nowhere", details=nowhere
        )
    await uow.repo.lock()
    return await _save_rules(uow, actor, "new_version", _dump_rules(live.reference.routing_rules), rules)


Scope = tuple[str | None, str | None]


def _scope(rule: RoutingRule, reference: ReferenceData) -> Scope:
    if rule.grid_id is not None and _known(reference.grid, rule.grid_id):
        return reference.grid(rule.grid_id).community_id, rule.grid_id
    return rule.community_id, rule.grid_id


def _covers(wide: Scope, narrow: Scope) -> bool:
    return (wide[0] is None or wide[0] == narrow[0]) and (wide[1] is None or wide[1] == narrow[1])


def rule_conflicts(rules: list[RoutingRule], rule_id: str, reference: ReferenceData) -> list[dict[str, Any]]:
    """How the rule ``rule_id`` conflicts with the others in this order (the files' own checks).

    A rule conflicts when an earlier rule of its category covers its place and sends it to the same
    department (one of the two is never used), or when an override comes after the wider rule of
    its category (it would be reached only when that department returns the hazard).
    """
    problems: list[dict[str, Any]] = []
    for index, rule in enumerate(rules):
        mine = _scope(rule, reference)
        for earlier in rules[:index]:
            theirs = _scope(earlier, reference)
            if earlier.category != rule.category or not _covers(theirs, mine):
                continue
            if earlier.department_id == rule.department_id:
                problem = (
                    f"rule {rule.id!r} would never be used: the earlier rule {earlier.id!r} already sends "
                    f"{rule.category!r} there to {rule.department_id!r}"
                )
            elif not _covers(mine, theirs):
                problem = (
                    f"rule {rule.id!r} is more specific than the earlier rule {earlier.id!r}, so it would be "
                    f"reached only when {earlier.department_id!r} returns the hazard; put it before"
                )
            else:
                continue  # a fallback: reached when the earlier rule's department returns the hazard
            if rule_id in (rule.id, earlier.id):
                other = earlier.id if rule.id == rule_id else rule.id
                problems.append({"field": "position", "problem": problem, "value": other})
            break
    return problems


async def _rules_now(uow: Work, live: Live) -> list[RoutingRule]:
    """The newest version's rules under the lock (another replica may have changed them a moment ago)."""
    stored = await uow.repo.latest_rules()
    if stored is None:
        return list(live.reference.routing_rules)
    return [RoutingRule.model_validate(r) for r in stored]


def _place(
    rules: list[RoutingRule], rule: RoutingRule, position: int | None, reference: ReferenceData
) -> int:
    """Where ``rule`` goes: ``position`` (1 = first), else before the first rule of its category as wide or wider."""
    if position is not None:
        if position > len(rules) + 1:
            raise AdminInvalidError(
                "The position is beyond the end of the list.",
                details=[
                    {"field": "position", "problem": f"at most {len(rules) + 1}", "value": position},
                ],
            )
        return position - 1
    mine = _scope(rule, reference)
    for index, other in enumerate(rules):
        if other.category == rule.category and _covers(_scope(other, reference), mine):
            return index
    return len(rules)


async def _place_rule(
    uow: Work,
    live: Live,
    actor: Principal,
    action: str,
    rule: RoutingRule,
    position: int | None,
    rules: list[RoutingRule],
    before: list[dict[str, Any]],
) -> dict[str, Any]:
    """Put ``rule`` into ``rules`` (which no longer holds it) and store the new version if nothing conflicts."""
    problems = _unknown_references(live.reference, rule)
    if problems:
        raise AdminInvalidError("The routing rule names something not in force.", details=problems)
    ordered = list(rules)
    ordered.insert(_place(rules, rule, position, live.reference), rule)
    conflicts = rule_conflicts(ordered, rule.id, live.reference)
    if conflicts:
        raise AdminConflictError(
            "The routing rule conflicts with another rule; nothing was changed.",
            code="rule_conflict",
            details=conflicts,
        )
    return await _save_rules(uow, actor, action, before, ordered)


def _rule(rule_id: str, body: RuleChange) -> RoutingRule:
    return RoutingRule.model_validate({"id": rule_id, **body.model_dump(exclude={"id", "position"})})


async def add_rule(uow: Work, live: Live, actor: Principal, body: NewRule) -> dict[str, Any]:
    """One more rule, as a new version (409 rule_exists for a taken id, rule_conflict; 422 for names not in force)."""
    await uow.repo.lock()
    rules = await _rules_now(uow, live)
    if body.id in {r.id for r in rules}:
        raise AdminConflictError(
            f"Routing rule {body.id!r} exists already.",
            code="rule_exists",
            details=[{"field": "id", "problem": f"rule id {body.id!r} is taken", "value": body.id}],
        )
    return await _place_rule(
        uow, live, actor, "add_rule", _rule(body.id, body), body.position, rules, _dump_rules(rules)
    )


async def change_rule(
    uow: Work, live: Live, actor: Principal, rule_id: str, body: RuleChange
) -> dict[str, Any]:
    """Change a rule's match or department (and place, when given), as a new version."""
    await uow.repo.lock()
    rules = await _rules_now(uow, live)
    index = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
    if index is None:
        raise AdminNotFoundError(f"No routing rule {rule_id!r}.")
    others = rules[:index] + rules[index + 1 :]
    position = body.position if body.position is not None else index + 1
    return await _place_rule(
        uow, live, actor, "change_rule", _rule(rule_id, body), position, others, _dump_rules(rules)
    )


async def remove_rule(uow: Work, live: Live, actor: Principal, rule_id: str) -> dict[str, Any]:
    """Remove a rule, as a new version: its category and place fall to the next matching rule."""
    await uow.repo.lock()
    rules = await _rules_now(uow, live)
    if rule_id not in {r.id for r in rules}:
        raise AdminNotFoundError(f"No routing rule {rule_id!r}.")
    kept = [r for r in rules if r.id != rule_id]
    return await _save_rules(uow, actor, "remove_rule", _dump_rules(rules), kept)


# --- campaigns ---------------------------------------------------------------------------------


def _campaign(live: Live, campaign_id: str) -> Campaign:
    for c in live.reference.campaigns:
        if c.id == campaign_id:
            return c
    raise AdminNotFoundError(f"No campaign {campaign_id!r}.")


async def _save_campaign(
    uow: Work, actor: Principal, action: str, before: Campaign | None, after: Campaign, *, ended: bool = False
) -> dict[str, Any]:
    body = after.model_dump(mode="json")
    await uow.repo.store_campaign(after.id, body, ended=ended)
    await uow.repo.record_change(
        actor.id,
        action,
        "campaign",
        after.id,
        None if before is None else before.model_dump(mode="json"),
        body,
    )
    return body


async def list_campaigns(uow: Work, live: Live) -> dict[str, Any]:
    """Every campaign with its window and targets."""
    return {"campaigns": [c.model_dump(mode="json") for c in live.reference.campaigns]}


async def create_campaign(uow: Work, live: Live, actor: Principal, body: CampaignIn) -> dict[str, Any]:
    """409 campaign_exists when the id is taken; 422 for a category not in force or a window ending before it starts."""
    try:
        campaign = Campaign.model_validate(body.model_dump())
    except ValidationError as exc:
        raise AdminInvalidError(
            "The campaign is not acceptable.", details=validation_details(exc.errors())
        ) from None
    unknown = [c for c in campaign.categories if c not in {k.code for k in live.reference.categories}]
    if unknown:
        raise AdminInvalidError(
            "Unknown categories.", details=[{"field": "categories", "problem": ", ".join(unknown)}]
        )
    await uow.repo.lock()
    if campaign.id in {c.id for c in live.reference.campaigns}:
        raise AdminConflictError(f"Campaign {campaign.id!r} exists already.", code="campaign_exists")
    return await _save_campaign(uow, actor, "create", None, campaign)


async def change_campaign_targets(
    uow: Work, live: Live, actor: Principal, campaign_id: str, body: CampaignTargetsIn
) -> dict[str, Any]:
    """The figures stay; only the goals they are measured against change."""
    await uow.repo.lock()
    current = _campaign(live, campaign_id)
    return await _save_campaign(
        uow, actor, "change_targets", current, current.model_copy(update={"targets": body.targets})
    )


async def end_campaign(
    uow: Work, live: Live, actor: Principal, campaign_id: str, body: CampaignEnd
) -> dict[str, Any]:
    """The last day is today (the database's clock, the city's calendar) unless given, never later.

    409 campaign_ended when it ended already; 422 for a last day in the future or before it began.
    """
    await uow.repo.lock()
    current = _campaign(live, campaign_id)
    today = uow.now.astimezone(ZoneInfo(live.reference.calendar.timezone)).date()
    ends_on = body.ends_on or today
    if current.ends_on < today:
        raise AdminConflictError(
            f"Campaign {campaign_id!r} ended on {current.ends_on}.", code="campaign_ended"
        )
    if ends_on > today or ends_on < current.starts_on:
        raise AdminInvalidError(
            "The last day must be between the campaign's first day and today.",
            details=[{"field": "ends_on", "problem": f"{ends_on} is not in {current.starts_on}..{today}"}],
        )
    changed = current.model_copy(update={"ends_on": ends_on})
    return await _save_campaign(uow, actor, "end", current, changed, ended=True)


# --- audit -------------------------------------------------------------------------------------


async def list_audit(
    uow: Work, live: Live, entity: str | None, entity_id: str | None, limit: int
) -> dict[str, Any]:
    """Who changed what, when, before and after; newest first."""
    rows = await uow.repo.audit(entity, entity_id, limit)
    return {"audit": [{**dict(r._mapping), "at": r.at.isoformat()} for r in rows]}
