"""HTTP routes of the dispatch service: the department inbox and actions, operator reassignment, rules.

Object-level rules: a department sees only its own dispatches; another department's is 404,
the same answer as an unknown id, for reads and actions alike (API.md), so ids leak nothing.
403 is for a wrong role only (a department reassigning, an operator acknowledging).
Operators and supervisors read all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.dispatch import domain
from services.dispatch import repository as repo
from services.dispatch.service import Commands
from shared.auth import Principal, require
from shared.errors import ApiError
from shared.openapi import error_responses
from shared.text import Text

router = APIRouter(prefix="/api/v1", tags=["dispatch"])

Reason = Annotated[str, Text(strip=True, min_length=3, max_length=1000)]
DepartmentId = Annotated[str, Text(strip=True, min_length=1, max_length=64)]
MAX_PAGE = 500


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReturnBody(_Body):
    """Why the department returns the hazard (required, 3 to 1,000 characters)."""

    reason: Reason


class ReassignBody(_Body):
    """The department to move the hazard to, and why."""

    department_id: DepartmentId
    reason: Reason


class ExtensionBody(_Body):
    """The receipt deadline the department asks for (after the one in force) and why."""

    deadline: AwareDatetime
    reason: Reason


class DecisionBody(_Body):
    """An optional note on the decision (up to 1,000 characters)."""

    note: Annotated[str, Text(strip=True, max_length=1000)] = ""


def _commands(request: Request) -> Commands:
    commands: Commands = request.app.state.dispatch_commands
    return commands


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def dispatch_json(row: Any) -> dict[str, Any]:
    """A dispatch as the API shows it (`past_deadline` is decided by the database's clock)."""
    return {
        "dispatch_id": str(row.dispatch_id),
        "hazard_id": str(row.hazard_id),
        "department_id": row.department_id,
        "rule_id": row.rule_id,
        "category": row.category,
        "community_id": row.community_id,
        "grid_id": row.grid_id,
        "status": row.status,
        "overdue": row.overdue_at is not None or bool(row.past_deadline),
        "receipt_deadline": _iso(row.receipt_deadline),
        "deadline_rule": {"minutes": row.deadline_minutes, "working_time": row.deadline_working_time},
        "reason": row.reason,
        "previous_dispatch_id": None if row.previous_dispatch_id is None else str(row.previous_dispatch_id),
        "dispatched_by": row.dispatched_by,
        "dispatched_at": _iso(row.created_at),
        "acknowledged_at": _iso(row.acknowledged_at),
        "acknowledged_by": row.acknowledged_by,
        "on_time": row.on_time,
        "overdue_at": _iso(row.overdue_at),
        "escalation_level": row.escalation_level,
        "returned_reason": row.returned_reason,
        "returned_by": row.returned_by,
        "note": row.note,
        "relapse_of": None if getattr(row, "relapse_of", None) is None else str(row.relapse_of),
        # 退单 after 签收: returned although acknowledged (acknowledged_at and on_time stay as they were).
        "returned_after_receipt": row.status == "returned" and row.acknowledged_at is not None,
        "return_request": _return_request_json(repo.return_request_of(row)),
        # The receipt deadline as first frozen: differs from `receipt_deadline` once an extension was approved.
        "original_receipt_deadline": _iso(row.original_receipt_deadline or row.receipt_deadline),
        "extension_request": _extension_json(repo.extension_request_of(row)),
        # What the grid member reported (kept by dispatch from hazard.reported; null for hazards
        # routed before dispatch_0006 and for reports unlinked from a duplicate).
        "report": _report_json(row),
    }


def _extension_json(request: domain.ExtensionRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "status": request.status,
        "requested_deadline": _iso(request.requested_deadline),
        "previous_deadline": _iso(request.previous_deadline),
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": _iso(request.requested_at),
        "decided_by": request.decided_by,
        "decided_at": _iso(request.decided_at),
        "note": request.decision_note,
    }


def _report_json(row: Any) -> dict[str, Any] | None:
    description = getattr(row, "report_description", None)
    if description is None:
        return None
    return {
        "description": description,
        "address": row.report_address,
        "building_id": row.report_building_id,
        "reporter_id": row.report_reporter_id,
        "photos": list(row.report_photos or ()),
    }


def _return_request_json(request: domain.ReturnRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "status": request.status,
        "reason": request.reason,
        "requested_by": request.requested_by,
        "requested_at": _iso(request.requested_at),
        "decided_by": request.decided_by,
        "decided_at": _iso(request.decided_at),
        "refusal_reason": request.refusal_reason,
    }


def _next_json(outcome: domain.Outcome) -> dict[str, Any]:
    new = [x for x in outcome.dispatches if x.status == "pending"]
    if new:
        return {
            "dispatch_id": str(new[0].dispatch_id),
            "department_id": new[0].department_id,
            "receipt_deadline": new[0].receipt_deadline.isoformat(),
            "reason": new[0].reason,
        }
    return {"operators_queue": True, "reason": outcome.referral}


@router.get("/dispatches", summary="The inbox: dispatches by status, oldest receipt deadline first")
async def list_dispatches(
    request: Request,
    principal: Annotated[Principal, Depends(require("department", "operator", "supervisor"))],
    status: Annotated[
        Literal["pending", "acknowledged", "overdue", "returned", "superseded"] | None, Query()
    ] = None,
    department_id: Annotated[str | None, Query(max_length=64)] = None,
    return_request: Annotated[Literal["awaiting_approval", "approved", "refused"] | None, Query()] = None,
    extension_request: Annotated[Literal["awaiting_approval", "approved", "refused"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Departments see only their own dispatches; operators and supervisors see all.

    ``return_request=awaiting_approval``: the returns after receipt an operator must decide;
    ``extension_request=awaiting_approval``: the receipt deadline extensions awaiting a decision.
    """
    if principal.role == "department":
        if department_id is not None and department_id != principal.department_id:
            raise ApiError(403, "forbidden", "A department may list only its own dispatches.")
        department_id = principal.department_id
    async with _commands(request).sessions() as session:
        rows = await repo.list_dispatches(
            session,
            department_id=department_id,
            status=status,
            limit=limit,
            offset=offset,
            return_request=return_request,
            extension_request=extension_request,
        )
    return {
        "items": [dispatch_json(row) for row in rows],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(rows) if len(rows) == limit else None,
    }


@router.get("/dispatches/{dispatch_id}", summary="One dispatch")
async def get_dispatch(
    request: Request,
    dispatch_id: uuid.UUID,
    principal: Annotated[Principal, Depends(require("department", "operator", "supervisor"))],
) -> dict[str, Any]:
    """404 for an unknown id and for another department's dispatch alike."""
    async with _commands(request).sessions() as session:
        row = await repo.get_dispatch_row(session, dispatch_id)
    if row is None or (principal.role == "department" and row.department_id != principal.department_id):
        raise ApiError(404, "not_found", f"No dispatch {dispatch_id} is visible to you.")
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/acknowledge",
    summary="Acknowledge receipt (on time or late)",
    responses=error_responses(409, s409="Already acknowledged, or the dispatch is no longer pending"),
)
async def acknowledge(
    request: Request,
    dispatch_id: uuid.UUID,
    principal: Annotated[Principal, Depends(require("department"))],
) -> dict[str, Any]:
    """200 with `acknowledged_at` and `on_time`; a second acknowledgement is 409."""
    row = await _commands(request).acknowledge(dispatch_id, principal=principal)
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/return",
    summary="Return a hazard that is not this department's (also after receipt: 退单)",
    responses={
        202: {"description": "After receipt, in approval mode: the return awaits an operator"},
        **error_responses(
            409, s409="The dispatch can no longer be returned (returned, superseded, or past the window)"
        ),
    },
)
async def return_dispatch(
    request: Request,
    dispatch_id: uuid.UUID,
    body: ReturnBody,
    principal: Annotated[Principal, Depends(require("department"))],
) -> JSONResponse:
    """The hazard is routed again, excluding every department that returned it (or goes to operators).

    An acknowledged dispatch may be returned within the window after receipt (409
    ``return_window_passed`` after it), or, in approval mode, the return is a request (202) that
    an operator approves or refuses.
    """
    result = await _commands(request).return_(dispatch_id, reason=body.reason, principal=principal)
    outcome: domain.Outcome = result["next"]
    dispatch = dispatch_json(result["dispatch"])
    if outcome.return_requested:
        return JSONResponse({"dispatch": dispatch, "next": None}, status_code=202)
    return JSONResponse({"dispatch": dispatch, "next": _next_json(outcome)})


@router.post(
    "/dispatches/{dispatch_id}/return/approve",
    summary="Operator: approve a return after receipt",
    responses=error_responses(409, s409="No return awaits a decision"),
)
async def approve_return(
    request: Request,
    dispatch_id: uuid.UUID,
    principal: Annotated[Principal, Depends(require("operator"))],
) -> dict[str, Any]:
    """The department's return goes ahead: the hazard is routed again; 409 when none awaits a decision."""
    result = await _commands(request).approve_return(dispatch_id, principal=principal)
    return {"dispatch": dispatch_json(result["dispatch"]), "next": _next_json(result["next"])}


@router.post(
    "/dispatches/{dispatch_id}/return/refuse",
    summary="Operator: refuse a return after receipt",
    responses=error_responses(409, s409="No return awaits a decision"),
)
async def refuse_return(
    request: Request,
    dispatch_id: uuid.UUID,
    body: ReturnBody,
    principal: Annotated[Principal, Depends(require("operator"))],
) -> dict[str, Any]:
    """The department keeps the hazard; the refusal and its reason are recorded on the dispatch."""
    row = await _commands(request).refuse_return(dispatch_id, reason=body.reason, principal=principal)
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/extension",
    status_code=202,
    summary="Ask for a later receipt deadline (延期申请; the department holding the dispatch)",
    responses=error_responses(
        409, s409="No longer pending, past its deadline, or a request awaits a decision"
    ),
)
async def request_extension(
    request: Request,
    dispatch_id: uuid.UUID,
    body: ExtensionBody,
    principal: Annotated[Principal, Depends(require("department"))],
) -> dict[str, Any]:
    """202: the request awaits an operator's or supervisor's decision; the deadline moves only on approval.

    422 ``invalid_deadline`` for a deadline not after the one in force or too far beyond it
    (``DISPATCH__EXTENSIONS__MAX_DAYS_BEYOND``, 30 days); 409 when the dispatch is no longer pending,
    its deadline has passed, or another request awaits a decision.
    """
    row = await _commands(request).request_extension(
        dispatch_id, deadline=body.deadline, reason=body.reason, principal=principal
    )
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/extension/approve",
    summary="Operator or supervisor: approve a receipt deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision, or the deadline has passed"),
)
async def approve_extension(
    request: Request,
    dispatch_id: uuid.UUID,
    principal: Annotated[Principal, Depends(require("operator", "supervisor"))],
    body: DecisionBody | None = None,
) -> dict[str, Any]:
    """The receipt deadline (and the overdue and escalation timers) move to the requested one."""
    row = await _commands(request).approve_extension(
        dispatch_id, note=body.note if body else "", principal=principal
    )
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/extension/refuse",
    summary="Operator or supervisor: refuse a receipt deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def refuse_extension(
    request: Request,
    dispatch_id: uuid.UUID,
    principal: Annotated[Principal, Depends(require("operator", "supervisor"))],
    body: DecisionBody | None = None,
) -> dict[str, Any]:
    """The deadline in force stays; the refusal is recorded on the dispatch and published."""
    row = await _commands(request).refuse_extension(
        dispatch_id, note=body.note if body else "", principal=principal
    )
    return dispatch_json(row)


@router.post(
    "/dispatches/{dispatch_id}/reassign",
    summary="Operator: move a pending dispatch elsewhere",
    responses=error_responses(409, s409="The dispatch is no longer pending"),
)
async def reassign(
    request: Request,
    dispatch_id: uuid.UUID,
    body: ReassignBody,
    principal: Annotated[Principal, Depends(require("operator"))],
) -> dict[str, Any]:
    """The old dispatch is superseded; a new one starts with its own deadline."""
    outcome = await _commands(request).reassign(
        dispatch_id, department_id=body.department_id, reason=body.reason, principal=principal
    )
    return {"previous_dispatch_id": str(dispatch_id), "next": _next_json(outcome)}


@router.get("/operator-queue", summary="Operator: hazards no department holds, oldest first")
async def operator_queue(
    request: Request,
    principal: Annotated[Principal, Depends(require("operator", "supervisor"))],
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Hazards without a matching rule, or returned by every candidate department."""
    async with _commands(request).sessions() as session:
        rows = await repo.list_operator_queue(session, limit=limit, offset=offset)
    return {
        "items": [
            {
                "hazard_id": str(row.facts.hazard_id),
                "category": row.facts.category,
                "community_id": row.facts.community_id,
                "grid_id": row.facts.grid_id,
                "urgency": row.facts.urgency,
                "reason": row.referral_reason,
                "reported_at": row.reported_at.isoformat(),
            }
            for row in rows
        ],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(rows) if len(rows) == limit else None,
    }


@router.post(
    "/hazards/{hazard_id}/assign",
    summary="Operator: dispatch a hazard from the operators' queue",
    responses=error_responses(409, s409="The hazard is not in the operators' queue"),
)
async def assign(
    request: Request,
    hazard_id: uuid.UUID,
    body: ReassignBody,
    principal: Annotated[Principal, Depends(require("operator"))],
) -> dict[str, Any]:
    """409 when the hazard is not waiting in the operators' queue."""
    outcome = await _commands(request).assign_from_queue(
        hazard_id, department_id=body.department_id, reason=body.reason, principal=principal
    )
    return {"hazard_id": str(hazard_id), "next": _next_json(outcome)}


@router.get("/routing-rules", summary="The routing rules in force, in order (first match wins)")
async def routing_rules(
    request: Request,
    principal: Annotated[Principal, Depends(require("operator", "supervisor"))],
) -> dict[str, Any]:
    """Rules in file order; a hazard no rule matches goes to the operators' queue."""
    reference = _commands(request).reference
    return {
        "rules": [
            {"position": index + 1, **rule.model_dump()} for index, rule in enumerate(reference.routing_rules)
        ],
        "no_match": "operators",
        "escalation": [
            {
                "level": step.level,
                "after_minutes": step.after.minutes,
                "working_time": step.after.working_time,
                "target": step.target,
                "name_en": step.name_en,
            }
            for step in reference.escalation_steps
        ],
    }
