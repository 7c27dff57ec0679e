"""The admin API (operator role): people and tokens, departments, routing rules, campaigns, audit.

Mounted by the reporting service (its role alone writes the ``admin`` schema). Routes parse, call a
use case of :mod:`services.admin.service` in one transaction, and answer; a change is applied to this
process at once (every other replica of every service within its poll, :mod:`shared.admin_sync`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Concatenate, ParamSpec

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse

from services.admin import service
from services.admin.models import (
    AuditEntity,
    AuditList,
    CampaignEnd,
    CampaignIn,
    CampaignList,
    CampaignTargetsIn,
    CampaignView,
    Code,
    DepartmentDeleted,
    DepartmentIn,
    DepartmentList,
    DepartmentView,
    Id,
    NewDepartment,
    NewRule,
    PrincipalIn,
    PrincipalList,
    PrincipalView,
    PrincipalWithToken,
    RoutingRules,
    RoutingRulesIn,
    RuleChange,
    Slug,
)
from services.admin.repository import AdminRepository
from services.admin.service import Live, Work
from shared.auth import Principal, require
from shared.openapi import error_responses
from shared.service import ServiceRuntime
from shared.uow import UnitOfWorkFactory

STATIC_DIR = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])
page_router = APIRouter()
operator = require("operator")
P = ParamSpec("P")


class Admin:
    """Runs an admin use case in one transaction on the admin repository."""

    def __init__(self, runtime: ServiceRuntime[Any]) -> None:
        self.runtime = runtime
        self.live = Live(runtime.reference, runtime.tokens)
        self.work = UnitOfWorkFactory(runtime.sessions, runtime.outbox, AdminRepository)

    @classmethod
    def of(cls, request: Request) -> Admin:
        """The app's one instance (a dependency)."""
        admin: Admin | None = getattr(request.app.state, "admin", None)
        if admin is None or admin.runtime is not request.app.state.runtime:
            admin = request.app.state.admin = cls(request.app.state.runtime)
        return admin

    async def read(
        self,
        use_case: Callable[Concatenate[Work, Live, P], Awaitable[dict[str, Any]]],
        *args: P.args,
        **kw: P.kwargs,
    ) -> dict[str, Any]:
        """Run a reading use case."""
        async with self.work() as uow:
            return await use_case(uow, self.live, *args, **kw)

    async def change(
        self,
        use_case: Callable[Concatenate[Work, Live, P], Awaitable[dict[str, Any]]],
        *args: P.args,
        **kw: P.kwargs,
    ) -> dict[str, Any]:
        """Run a changing use case, then apply the change to this process at once."""
        answer = await self.read(use_case, *args, **kw)
        if self.runtime.admin_sync is not None:
            await self.runtime.admin_sync.poll_once()
        return answer


AdminDep = Annotated[Admin, Depends(Admin.of)]
Operator = Annotated[Principal, Depends(operator)]


# --- people and tokens ---------------------------------------------------------------------------


@router.get("/principals", summary="Everyone holding a token: the file's (bootstrap) and the administered")
async def list_principals(admin: AdminDep, _: Operator) -> PrincipalList:
    """Principals with role and binding; never a token or its hash."""
    return PrincipalList.model_validate(await admin.read(service.list_principals))


@router.post(
    "/principals",
    status_code=201,
    summary="Create a principal and its token (shown once)",
    responses=error_responses(409, s409="The principal already holds a token"),
)
async def create_principal(body: PrincipalIn, admin: AdminDep, actor: Operator) -> PrincipalWithToken:
    """The plain token is in this answer only; the database keeps its SHA-256."""
    return PrincipalWithToken.model_validate(await admin.change(service.create_principal, actor, body))


@router.post(
    "/principals/{principal}/rotate",
    summary="A new token for a principal; the old one stops working",
    responses=error_responses(409, s409="The principal holds no live token"),
)
async def rotate_principal(principal: Id, admin: AdminDep, actor: Operator) -> PrincipalWithToken:
    """The new plain token is in this answer only."""
    return PrincipalWithToken.model_validate(await admin.change(service.rotate_principal, actor, principal))


@router.post(
    "/principals/{principal}/revoke",
    summary="Revoke a principal's token (file tokens too)",
    responses=error_responses(409, s409="Your own token, or no live token"),
)
async def revoke_principal(principal: Id, admin: AdminDep, actor: Operator) -> PrincipalView:
    """Refused by every replica of every service at once (PostgreSQL NOTIFY; the fallback poll at worst)."""
    return PrincipalView.model_validate(await admin.change(service.revoke_principal, actor, principal))


# --- departments -------------------------------------------------------------------------------


@router.get(
    "/departments",
    summary="Departments (files and administered) with escalation contacts",
    response_model=DepartmentList,
    response_model_exclude_none=True,
)
async def list_departments(admin: AdminDep, _: Operator) -> dict[str, Any]:
    """Every department in force."""
    return await admin.read(service.list_departments)


@router.post(
    "/departments",
    status_code=201,
    summary="Add a department",
    response_model=DepartmentView,
    response_model_exclude_none=True,
    responses=error_responses(409, s409="The id is taken"),
)
async def create_department(body: NewDepartment, admin: AdminDep, actor: Operator) -> dict[str, Any]:
    """409 when the id is taken."""
    return await admin.change(service.create_department, actor, body)


@router.put(
    "/departments/{department_id}",
    summary="Rename a department or change its contacts",
    response_model=DepartmentView,
    response_model_exclude_none=True,
)
async def update_department(
    department_id: Code, body: DepartmentIn, admin: AdminDep, actor: Operator
) -> dict[str, Any]:
    """404 for an unknown department."""
    return await admin.change(service.update_department, actor, department_id, body)


@router.delete(
    "/departments/{department_id}",
    summary="Delete a department with no open work and no rule",
    responses=error_responses(409, s409="A rule, an open hazard or a token still names it"),
)
async def delete_department(department_id: Code, admin: AdminDep, actor: Operator) -> DepartmentDeleted:
    """409 while a routing rule names it, or hazards it holds are not closed, or a token is bound to it."""
    return DepartmentDeleted.model_validate(
        await admin.change(service.delete_department, actor, department_id)
    )


# --- routing rules -----------------------------------------------------------------------------


@router.get(
    "/routing-rules",
    summary="The routing rules in force and their version",
    response_model=RoutingRules,
    response_model_exclude_none=True,
)
async def get_routing_rules(admin: AdminDep, _: Operator) -> dict[str, Any]:
    """Version 0: the files' rules."""
    return await admin.read(service.get_routing_rules)


@router.post(
    "/routing-rules",
    status_code=201,
    summary="A new version of the routing rules (the whole list)",
    responses=error_responses(409, s409="A rule points nowhere"),
    response_model=RoutingRules,
    response_model_exclude_none=True,
)
async def new_routing_version(body: RoutingRulesIn, admin: AdminDep, actor: Operator) -> dict[str, Any]:
    """Applies to hazards routed from now on; a dispatch keeps the rule and department it was made under.

    422 for a malformed rule or a repeated id; 409 for a rule pointing nowhere (a department, category,
    community or grid not in force, or a grid outside the rule's community).
    """
    return await admin.change(service.new_routing_version, actor, body)


@router.post(
    "/routing-rules/rules",
    status_code=201,
    summary="Add one routing rule (a new version)",
    responses=error_responses(
        409, s409="The id is taken (rule_exists), or the rule conflicts (rule_conflict)"
    ),
    response_model=RoutingRules,
    response_model_exclude_none=True,
)
async def add_routing_rule(body: NewRule, admin: AdminDep, actor: Operator) -> dict[str, Any]:
    """422 (field named) for a department, category, community or grid not in force, or a grid outside the
    community; 409 rule_conflict when another rule of the category would make it, or be made, never used."""
    return await admin.change(service.add_rule, actor, body)


@router.put(
    "/routing-rules/rules/{rule_id}",
    summary="Change one routing rule (a new version)",
    responses=error_responses(404, 409, s409="The changed rule conflicts with another (rule_conflict)"),
    response_model=RoutingRules,
    response_model_exclude_none=True,
)
async def change_routing_rule(
    rule_id: Slug, body: RuleChange, admin: AdminDep, actor: Operator
) -> dict[str, Any]:
    """Dispatches made under the old rule keep it; hazards routed from now on follow the change."""
    return await admin.change(service.change_rule, actor, rule_id, body)


@router.delete(
    "/routing-rules/rules/{rule_id}",
    summary="Remove one routing rule (a new version)",
    responses=error_responses(404),
    response_model=RoutingRules,
    response_model_exclude_none=True,
)
async def remove_routing_rule(rule_id: Slug, admin: AdminDep, actor: Operator) -> dict[str, Any]:
    """Its category and place fall to the next matching rule, or to the operators' queue."""
    return await admin.change(service.remove_rule, actor, rule_id)


# --- campaigns ---------------------------------------------------------------------------------


@router.get("/campaigns", summary="Campaigns in force")
async def list_campaigns(admin: AdminDep, _: Operator) -> CampaignList:
    """Every campaign with its window and targets."""
    return CampaignList.model_validate(await admin.read(service.list_campaigns))


@router.post(
    "/campaigns",
    status_code=201,
    summary="Create a campaign",
    responses=error_responses(409, s409="The id is taken"),
)
async def create_campaign(body: CampaignIn, admin: AdminDep, actor: Operator) -> CampaignView:
    """409 when the id is taken; 422 for a category not in force or a window ending before it starts."""
    return CampaignView.model_validate(await admin.change(service.create_campaign, actor, body))


@router.patch("/campaigns/{campaign_id}", summary="Change a campaign's targets")
async def change_campaign_targets(
    campaign_id: Slug, body: CampaignTargetsIn, admin: AdminDep, actor: Operator
) -> CampaignView:
    """The figures stay; only the goals they are measured against change."""
    return CampaignView.model_validate(
        await admin.change(service.change_campaign_targets, actor, campaign_id, body)
    )


@router.post(
    "/campaigns/{campaign_id}/end",
    summary="End a campaign (its figures stay; later reports count late)",
    responses=error_responses(409, s409="The campaign ended already"),
)
async def end_campaign(
    campaign_id: Slug, body: CampaignEnd, admin: AdminDep, actor: Operator
) -> CampaignView:
    """The last day is today (the database's clock, the city's calendar) unless given, never later.

    409 when it ended already; 422 for a last day in the future or before the campaign began.
    """
    return CampaignView.model_validate(await admin.change(service.end_campaign, actor, campaign_id, body))


# --- audit and page ----------------------------------------------------------------------------


@router.get("/audit", summary="Who changed what, when, before and after")
async def get_audit(
    admin: AdminDep,
    _: Operator,
    entity: Annotated[AuditEntity | None, Query()] = None,
    entity_id: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditList:
    """Newest first."""
    return AuditList.model_validate(await admin.read(service.list_audit, entity, entity_id, limit))


@page_router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    """The admin page (zh first, English on a toggle; the token stays in the browser)."""
    return FileResponse(
        STATIC_DIR / "admin.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    )
