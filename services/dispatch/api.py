"""HTTP routes of the dispatch service: the department inbox and actions, operator reassignment, rules.

Each route parses, calls one use case of :mod:`services.dispatch.service` in its own unit of work
and answers a declared response model; refusals are domain exceptions that ``shared/errors.py``
turns into the error shape.

Object-level rules: a department sees only its own dispatches; another department's is 404,
the same answer as an unknown id, for reads and actions alike (API.md), so ids leak nothing.
403 is for a wrong role only (a department reassigning, an operator acknowledging).
Operators and supervisors read all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from services.dispatch import domain, service
from services.dispatch.repository import DispatchRecord, DispatchRepository, HazardRow, Report
from services.dispatch.service import Policies
from shared.auth import Principal, require
from shared.openapi import error_responses
from shared.reference import EscalationStep, RoutingRule
from shared.text import Text
from shared.uow import UnitOfWorkFactory, request_work

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


# ---------------------------------------------------------------- dependencies


def _policies(request: Request) -> Policies:
    policies: Policies = request.app.state.dispatch_policies
    return policies


Work = Annotated[UnitOfWorkFactory[DispatchRepository], Depends(request_work)]
Rules = Annotated[Policies, Depends(_policies)]
Reader = Annotated[Principal, Depends(require("department", "operator", "supervisor"))]
Department = Annotated[Principal, Depends(require("department"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Decider = Annotated[Principal, Depends(require("operator", "supervisor"))]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
RequestStatus = Literal["awaiting_approval", "approved", "refused"]

# ---------------------------------------------------------------- response models


def _iso(value: datetime) -> str:
    return value.isoformat()


Timestamp = Annotated[
    datetime,
    # As ``datetime.isoformat()`` writes it (``+00:00``, never ``Z``): the answers of old stay byte-equal.
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadlineRuleOut(_Out):
    """The receipt deadline rule frozen when the dispatch was made."""

    minutes: int
    working_time: bool


class ReturnRequestOut(_Out):
    """A return after receipt awaiting (or given) the dispatch center's decision."""

    status: RequestStatus
    reason: str
    requested_by: str
    requested_at: Timestamp
    decided_by: str | None
    decided_at: Timestamp | None
    refusal_reason: str | None

    @classmethod
    def of(cls, request: domain.ReturnRequest | None) -> ReturnRequestOut | None:
        return None if request is None else cls.model_validate(request, from_attributes=True)


class ExtensionRequestOut(_Out):
    """A receipt deadline extension request (延期申请) and the decision on it."""

    status: RequestStatus
    requested_deadline: Timestamp
    previous_deadline: Timestamp
    reason: str
    requested_by: str
    requested_at: Timestamp
    decided_by: str | None
    decided_at: Timestamp | None
    # The domain calls it decision_note; the answer has always said note.
    note: str | None = Field(validation_alias=AliasChoices("note", "decision_note"))

    @classmethod
    def of(cls, request: domain.ExtensionRequest | None) -> ExtensionRequestOut | None:
        return None if request is None else cls.model_validate(request, from_attributes=True)


class ReportOut(_Out):
    """What the grid member reported (kept by dispatch from hazard.reported)."""

    description: str
    address: str | None
    building_id: str | None
    reporter_id: str | None
    photos: list[str]

    @classmethod
    def of(cls, report: Report | None) -> ReportOut | None:
        if report is None:
            return None
        return cls(
            description=report.description,
            address=report.address,
            building_id=report.building_id,
            reporter_id=report.reporter_id,
            photos=list(report.photos),
        )


class DispatchOut(_Out):
    """A dispatch as the API shows it (``overdue`` is decided by the database's clock)."""

    dispatch_id: uuid.UUID
    hazard_id: uuid.UUID
    department_id: str
    rule_id: str | None
    category: str
    community_id: str
    grid_id: str
    status: domain.DispatchStatus
    overdue: bool
    receipt_deadline: Timestamp
    deadline_rule: DeadlineRuleOut
    reason: domain.DispatchReason
    previous_dispatch_id: uuid.UUID | None
    dispatched_by: str
    dispatched_at: Timestamp
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None
    on_time: bool | None
    overdue_at: Timestamp | None
    escalation_level: int
    returned_reason: str | None
    returned_by: str | None
    note: str | None
    relapse_of: uuid.UUID | None
    returned_after_receipt: bool
    """退单 after 签收: returned although acknowledged (acknowledged_at and on_time stay as they were)."""
    return_request: ReturnRequestOut | None
    original_receipt_deadline: Timestamp
    """The receipt deadline as first frozen: differs from ``receipt_deadline`` once an extension was approved."""
    extension_request: ExtensionRequestOut | None
    report: ReportOut | None
    """Null for hazards routed before dispatch_0006 and for reports unlinked from a duplicate."""

    @classmethod
    def of(cls, record: DispatchRecord) -> DispatchOut:
        x = record.dispatch
        return cls(
            dispatch_id=x.dispatch_id,
            hazard_id=x.hazard_id,
            department_id=x.department_id,
            rule_id=x.rule_id,
            category=x.category,
            community_id=x.community_id,
            grid_id=x.grid_id,
            status=x.status,
            overdue=x.overdue_at is not None or record.past_deadline,
            receipt_deadline=x.receipt_deadline,
            deadline_rule=DeadlineRuleOut(
                minutes=x.deadline_rule.minutes, working_time=x.deadline_rule.working_time
            ),
            reason=x.reason,
            previous_dispatch_id=x.previous_dispatch_id,
            dispatched_by=record.dispatched_by,
            dispatched_at=x.created_at,
            acknowledged_at=x.acknowledged_at,
            acknowledged_by=record.acknowledged_by,
            on_time=x.on_time,
            overdue_at=x.overdue_at,
            escalation_level=record.escalation_level,
            returned_reason=x.returned_reason,
            returned_by=record.returned_by,
            note=record.note,
            relapse_of=record.relapse_of,
            returned_after_receipt=x.status == "returned" and x.acknowledged_at is not None,
            return_request=ReturnRequestOut.of(x.return_request),
            original_receipt_deadline=x.original_receipt_deadline or x.receipt_deadline,
            extension_request=ExtensionRequestOut.of(x.extension_request),
            report=ReportOut.of(record.report),
        )


class DispatchPage(_Out):
    """One page of the inbox; ``next_offset`` is null on the last page."""

    items: list[DispatchOut]
    limit: int
    offset: int
    next_offset: int | None

    @classmethod
    def of(cls, found: list[DispatchRecord], *, limit: int, offset: int) -> DispatchPage:
        items = [DispatchOut.of(record) for record in found]
        return cls(
            items=items, limit=limit, offset=offset, next_offset=_next_offset(offset, limit, len(items))
        )


class NextDispatch(_Out):
    """The new dispatch the hazard went to."""

    dispatch_id: uuid.UUID
    department_id: str
    receipt_deadline: Timestamp
    reason: domain.DispatchReason


class NextOperators(_Out):
    """No department left to route to: the hazard waits in the operators' queue."""

    operators_queue: Literal[True]
    reason: domain.ReferralReason | None


Next = NextDispatch | NextOperators


def _next(outcome: domain.Outcome) -> Next:
    new = [x for x in outcome.dispatches if x.status == "pending"]
    if new:
        return NextDispatch(
            dispatch_id=new[0].dispatch_id,
            department_id=new[0].department_id,
            receipt_deadline=new[0].receipt_deadline,
            reason=new[0].reason,
        )
    return NextOperators(operators_queue=True, reason=outcome.referral)


class ReturnOut(_Out):
    """The returned dispatch and where the hazard went (null while a return awaits approval: 202)."""

    dispatch: DispatchOut
    next: Next | None

    @classmethod
    def of(cls, result: service.Rerouted) -> ReturnOut:
        pending = result.outcome.return_requested
        return cls(dispatch=DispatchOut.of(result.dispatch), next=None if pending else _next(result.outcome))


class ReassignOut(_Out):
    """The superseded dispatch and the new one (or the operators' queue)."""

    previous_dispatch_id: uuid.UUID
    next: Next


class AssignOut(_Out):
    """The hazard taken from the operators' queue and its new dispatch."""

    hazard_id: uuid.UUID
    next: Next


class QueuedHazardOut(_Out):
    """A hazard no department holds."""

    hazard_id: uuid.UUID
    category: str
    community_id: str
    grid_id: str
    urgency: str | None
    reason: str | None
    reported_at: Timestamp

    @classmethod
    def of(cls, row: HazardRow) -> QueuedHazardOut:
        f = row.facts
        return cls(
            hazard_id=f.hazard_id,
            category=f.category,
            community_id=f.community_id,
            grid_id=f.grid_id,
            urgency=f.urgency,
            reason=row.referral_reason,
            reported_at=row.reported_at,
        )


class OperatorQueuePage(_Out):
    """One page of the operators' queue; ``next_offset`` is null on the last page."""

    items: list[QueuedHazardOut]
    limit: int
    offset: int
    next_offset: int | None

    @classmethod
    def of(cls, found: list[HazardRow], *, limit: int, offset: int) -> OperatorQueuePage:
        items = [QueuedHazardOut.of(row) for row in found]
        return cls(
            items=items, limit=limit, offset=offset, next_offset=_next_offset(offset, limit, len(items))
        )


class RoutingRuleOut(_Out):
    """A routing rule and its place in the order (first match wins)."""

    position: int
    id: str
    category: str
    community_id: str | None
    grid_id: str | None
    department_id: str

    @classmethod
    def of(cls, position: int, rule: RoutingRule) -> RoutingRuleOut:
        return cls(
            position=position,
            id=rule.id,
            category=rule.category,
            community_id=rule.community_id,
            grid_id=rule.grid_id,
            department_id=rule.department_id,
        )


class EscalationStepOut(_Out):
    """One step of the overdue-receipt escalation chain."""

    level: int
    after_minutes: int
    working_time: bool
    target: str
    name_en: str

    @classmethod
    def of(cls, step: EscalationStep) -> EscalationStepOut:
        return cls(
            level=step.level,
            after_minutes=step.after.minutes,
            working_time=step.after.working_time,
            target=step.target,
            name_en=step.name_en,
        )


class RoutingRulesOut(_Out):
    """The routing rules in force, where an unmatched hazard goes, and the escalation chain."""

    rules: list[RoutingRuleOut]
    no_match: Literal["operators"]
    escalation: list[EscalationStepOut]


def _next_offset(offset: int, limit: int, found: int) -> int | None:
    return offset + found if found == limit else None


# ---------------------------------------------------------------- routes


@router.get("/dispatches", summary="The inbox: dispatches by status, oldest receipt deadline first")
async def list_dispatches(
    work: Work,
    principal: Reader,
    status: Annotated[
        Literal["pending", "acknowledged", "overdue", "returned", "superseded"] | None, Query()
    ] = None,
    department_id: Annotated[str | None, Query(max_length=64)] = None,
    return_request: Annotated[RequestStatus | None, Query()] = None,
    extension_request: Annotated[RequestStatus | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> DispatchPage:
    """Departments see only their own dispatches (403 for another's); operators and supervisors see all.

    ``return_request=awaiting_approval``: the returns after receipt an operator must decide;
    ``extension_request=awaiting_approval``: the receipt deadline extensions awaiting a decision.
    """
    async with work() as uow:
        found = await service.list_dispatches(
            uow,
            principal=principal,
            status=status,
            department_id=department_id,
            return_request=return_request,
            extension_request=extension_request,
            limit=limit,
            offset=offset,
        )
    return DispatchPage.of(found, limit=limit, offset=offset)


@router.get("/dispatches/{dispatch_id}", summary="One dispatch")
async def get_dispatch(dispatch_id: uuid.UUID, work: Work, principal: Reader) -> DispatchOut:
    """404 for an unknown id and for another department's dispatch alike."""
    async with work() as uow:
        return DispatchOut.of(await service.get_dispatch(uow, dispatch_id, principal=principal))


@router.post(
    "/dispatches/{dispatch_id}/acknowledge",
    summary="Acknowledge receipt (on time or late)",
    responses=error_responses(409, s409="Already acknowledged, or the dispatch is no longer pending"),
)
async def acknowledge(dispatch_id: uuid.UUID, work: Work, principal: Department) -> DispatchOut:
    """200 with `acknowledged_at` and `on_time`; a second acknowledgement is 409."""
    async with work() as uow:
        return DispatchOut.of(await service.acknowledge_dispatch(uow, dispatch_id, principal=principal))


@router.post(
    "/dispatches/{dispatch_id}/return",
    summary="Return a hazard that is not this department's (also after receipt: 退单)",
    responses={
        202: {
            "description": "After receipt, in approval mode: the return awaits an operator",
            "model": ReturnOut,
        },
        **error_responses(
            409, s409="The dispatch can no longer be returned (returned, superseded, or past the window)"
        ),
    },
)
async def return_dispatch(
    dispatch_id: uuid.UUID,
    body: ReturnBody,
    work: Work,
    rules: Rules,
    principal: Department,
    response: Response,
) -> ReturnOut:
    """The hazard is routed again, excluding every department that returned it (or goes to operators).

    An acknowledged dispatch may be returned within the window after receipt (409
    ``return_window_passed`` after it), or, in approval mode, the return is a request (202) that
    an operator approves or refuses.
    """
    async with work() as uow:
        result = await service.return_dispatch(
            uow, dispatch_id, reason=body.reason, principal=principal, policies=rules
        )
    response.status_code = 202 if result.outcome.return_requested else 200
    return ReturnOut.of(result)


@router.post(
    "/dispatches/{dispatch_id}/return/approve",
    summary="Operator: approve a return after receipt",
    responses=error_responses(409, s409="No return awaits a decision"),
)
async def approve_return(dispatch_id: uuid.UUID, work: Work, rules: Rules, principal: Operator) -> ReturnOut:
    """The department's return goes ahead: the hazard is routed again; 409 when none awaits a decision."""
    async with work() as uow:
        return ReturnOut.of(
            await service.approve_return(uow, dispatch_id, principal=principal, policies=rules)
        )


@router.post(
    "/dispatches/{dispatch_id}/return/refuse",
    summary="Operator: refuse a return after receipt",
    responses=error_responses(409, s409="No return awaits a decision"),
)
async def refuse_return(
    dispatch_id: uuid.UUID, body: ReturnBody, work: Work, principal: Operator
) -> DispatchOut:
    """The department keeps the hazard; the refusal and its reason are recorded on the dispatch."""
    async with work() as uow:
        refused = await service.refuse_return(uow, dispatch_id, reason=body.reason, principal=principal)
    return DispatchOut.of(refused)


@router.post(
    "/dispatches/{dispatch_id}/extension",
    status_code=202,
    summary="Ask for a later receipt deadline (延期申请; the department holding the dispatch)",
    responses=error_responses(
        409, s409="No longer pending, past its deadline, or a request awaits a decision"
    ),
)
async def request_extension(
    dispatch_id: uuid.UUID, body: ExtensionBody, work: Work, rules: Rules, principal: Department
) -> DispatchOut:
    """202: the request awaits an operator's or supervisor's decision; the deadline moves only on approval.

    422 ``invalid_deadline`` for a deadline not after the one in force or too far beyond it
    (``DISPATCH__EXTENSIONS__MAX_DAYS_BEYOND``, 30 days); 409 when the dispatch is no longer pending,
    its deadline has passed, or another request awaits a decision.
    """
    async with work() as uow:
        asked = await service.request_extension(
            uow, dispatch_id, deadline=body.deadline, reason=body.reason, principal=principal, policies=rules
        )
    return DispatchOut.of(asked)


@router.post(
    "/dispatches/{dispatch_id}/extension/approve",
    summary="Operator or supervisor: approve a receipt deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision, or the deadline has passed"),
)
async def approve_extension(
    dispatch_id: uuid.UUID, work: Work, rules: Rules, principal: Decider, body: DecisionBody | None = None
) -> DispatchOut:
    """The receipt deadline (and the overdue and escalation timers) move to the requested one."""
    note = body.note if body else ""
    async with work() as uow:
        approved = await service.approve_extension(
            uow, dispatch_id, note=note, principal=principal, policies=rules
        )
    return DispatchOut.of(approved)


@router.post(
    "/dispatches/{dispatch_id}/extension/refuse",
    summary="Operator or supervisor: refuse a receipt deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def refuse_extension(
    dispatch_id: uuid.UUID, work: Work, principal: Decider, body: DecisionBody | None = None
) -> DispatchOut:
    """The deadline in force stays; the refusal is recorded on the dispatch and published."""
    note = body.note if body else ""
    async with work() as uow:
        return DispatchOut.of(
            await service.refuse_extension(uow, dispatch_id, note=note, principal=principal)
        )


@router.post(
    "/dispatches/{dispatch_id}/reassign",
    summary="Operator: move a pending dispatch elsewhere",
    responses=error_responses(409, s409="The dispatch is no longer pending"),
)
async def reassign(
    dispatch_id: uuid.UUID, body: ReassignBody, work: Work, rules: Rules, principal: Operator
) -> ReassignOut:
    """The old dispatch is superseded; a new one starts with its own deadline."""
    async with work() as uow:
        outcome = await service.reassign_dispatch(
            uow,
            dispatch_id,
            department_id=body.department_id,
            reason=body.reason,
            principal=principal,
            policies=rules,
        )
    return ReassignOut(previous_dispatch_id=dispatch_id, next=_next(outcome))


@router.get("/operator-queue", summary="Operator: hazards no department holds, oldest first")
async def operator_queue(
    work: Work, principal: Decider, limit: Limit = 100, offset: Offset = 0
) -> OperatorQueuePage:
    """Hazards without a matching rule, or returned by every candidate department."""
    async with work() as uow:
        rows = await service.list_operator_queue(uow, limit=limit, offset=offset)
    return OperatorQueuePage.of(rows, limit=limit, offset=offset)


@router.post(
    "/hazards/{hazard_id}/assign",
    summary="Operator: dispatch a hazard from the operators' queue",
    responses=error_responses(409, s409="The hazard is not in the operators' queue"),
)
async def assign(
    hazard_id: uuid.UUID, body: ReassignBody, work: Work, rules: Rules, principal: Operator
) -> AssignOut:
    """409 when the hazard is not waiting in the operators' queue."""
    async with work() as uow:
        outcome = await service.assign_from_queue(
            uow,
            hazard_id,
            department_id=body.department_id,
            reason=body.reason,
            principal=principal,
            policies=rules,
        )
    return AssignOut(hazard_id=hazard_id, next=_next(outcome))


@router.get("/routing-rules", summary="The routing rules in force, in order (first match wins)")
async def routing_rules(rules: Rules, principal: Decider) -> RoutingRulesOut:
    """Rules in file order; a hazard no rule matches goes to the operators' queue."""
    reference = rules.reference
    return RoutingRulesOut(
        rules=[RoutingRuleOut.of(index + 1, rule) for index, rule in enumerate(reference.routing_rules)],
        no_match="operators",
        escalation=[EscalationStepOut.of(step) for step in reference.escalation_steps],
    )
