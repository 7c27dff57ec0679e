"""HTTP routes of the tracking service: the case and its timeline, rectification, verification, hotspots."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.tracking import service
from services.tracking.repository import TrackingRepository
from services.tracking.service import TrackingConfig
from services.tracking.views import CaseList, CaseView, HotspotList, NoteView, UrgingView
from shared.auth import Principal, authenticate, require
from shared.openapi import error_responses
from shared.photos import MAX_PHOTOS, PhotoUrl
from shared.text import Text
from shared.uow import UnitOfWorkFactory, request_work

router = APIRouter(prefix="/api/v1", tags=["tracking"])


class RectificationBody(BaseModel):
    """Evidence of a rectification: what was done and photos of it."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Text(min_length=1, max_length=2000)]
    photos: Annotated[list[PhotoUrl], Field(max_length=MAX_PHOTOS)] = []


class VerificationBody(BaseModel):
    """The outcome of a return visit: passed closes the case, failed sends it back to rectification."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    note: Annotated[str, Text(max_length=2000)] = ""
    photos: Annotated[list[PhotoUrl], Field(max_length=MAX_PHOTOS)] = []


class UrgingBody(BaseModel):
    """What the supervisor or operator urges (督办), for the department to read."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Text(strip=True, min_length=1, max_length=2000)]


class ExtensionBody(BaseModel):
    """The rectification deadline the department asks for (after the one in force) and why."""

    model_config = ConfigDict(extra="forbid")

    deadline: AwareDatetime
    reason: Annotated[str, Text(strip=True, min_length=3, max_length=1000)]


class DecisionBody(BaseModel):
    """An optional note on an extension decision."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Text(strip=True, max_length=1000)] = ""


class NoteBody(BaseModel):
    """A progress note of the department holding the case, with photos if any."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Text(min_length=1, max_length=2000)]
    photos: Annotated[list[PhotoUrl], Field(max_length=MAX_PHOTOS)] = []


def _config(request: Request) -> TrackingConfig:
    config: TrackingConfig = request.app.state.config
    return config


Work = Annotated[UnitOfWorkFactory[TrackingRepository], Depends(request_work)]
Config = Annotated[TrackingConfig, Depends(_config)]
Caller = Annotated[Principal, Depends(authenticate)]
Department = Annotated[Principal, Depends(require("department"))]
Reporter = Annotated[Principal, Depends(require("reporter"))]
Overseer = Annotated[Principal, Depends(require("operator", "supervisor"))]

CaseState = Literal[
    "new",
    "reported",
    "referred_to_operators",
    "dispatched",
    "acknowledged",
    "rectification_ordered",
    "rectified",
    "verification_failed",
    "verified",
    "closed",
    "duplicate",
]
MAX_LIST = 200


@router.get("/hazards", summary="Cases visible to you, newest report first (a grid's, a department's, yours)")
async def list_hazards(
    work: Work,
    principal: Caller,
    state: Annotated[list[CaseState] | None, Query(max_length=11)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    mine: bool = False,
    extension_request: Annotated[Literal["awaiting_approval"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> CaseList:
    """A reporter sees its grid's cases (``mine``: those it reported); a department those it holds now.

    ``state`` (repeatable) filters by state; ``open=true`` keeps the cases not closed;
    ``extension_request=awaiting_approval`` the cases whose rectification deadline extension awaits a decision.
    """
    async with work() as uow:
        return await service.list_cases(
            uow,
            principal=principal,
            states=state or (),
            open_only=open_only,
            mine=mine,
            extension_awaiting=extension_request == "awaiting_approval",
            limit=limit,
            offset=offset,
        )


@router.get("/hazards/{hazard_id}", summary="The case: state, department, deadlines, links and timeline")
async def get_hazard(hazard_id: uuid.UUID, work: Work, principal: Caller) -> CaseView:
    """The case of a hazard, for its grid's reporters, the departments that held it, operators, supervisors."""
    async with work() as uow:
        return await service.view_case(uow, hazard_id, principal=principal)


@router.post(
    "/hazards/{hazard_id}/rectification",
    summary="Mark the hazard rectified, with evidence (holding department)",
    responses=error_responses(409, s409="The case is not awaiting rectification"),
)
async def post_rectification(
    hazard_id: uuid.UUID, body: RectificationBody, work: Work, config: Config, principal: Department
) -> CaseView:
    """The department holding the hazard reports it rectified; publishes ``hazard.rectified``."""
    async with work() as uow:
        return await service.rectify_hazard(
            uow, hazard_id, principal=principal, note=body.note, photos=body.photos, config=config
        )


@router.post(
    "/hazards/{hazard_id}/verification",
    summary="Record the verification visit (a reporter of the hazard's grid)",
    responses=error_responses(409, s409="The case is not awaiting verification"),
)
async def post_verification(
    hazard_id: uuid.UUID, body: VerificationBody, work: Work, config: Config, principal: Reporter
) -> CaseView:
    """Passed closes the case (``hazard.verified``, ``hazard.closed``); failed orders the next round."""
    async with work() as uow:
        return await service.verify_hazard(
            uow,
            hazard_id,
            principal=principal,
            passed=body.passed,
            note=body.note,
            photos=body.photos,
            config=config,
        )


@router.post(
    "/hazards/{hazard_id}/urgings",
    status_code=201,
    summary="Urge (督办) the open dispatch or rectification of a hazard (operator, supervisor)",
    responses=error_responses(409, s409="The case is closed or holds nothing open to urge"),
)
async def post_urging(
    hazard_id: uuid.UUID, body: UrgingBody, work: Work, config: Config, principal: Overseer
) -> UrgingView:
    """201 with the urging; publishes ``hazard.urged`` (the department and its escalation contacts are told).

    409 when the case has no open dispatch or rectification (closed, awaiting verification, unrouted).
    """
    async with work() as uow:
        urged = await service.urge_hazard(uow, hazard_id, principal=principal, note=body.note, config=config)
    return UrgingView.of(urged)


@router.post(
    "/hazards/{hazard_id}/notes",
    status_code=201,
    summary="Add a progress note to a case (the department holding it)",
    responses=error_responses(409, s409="The case is not open"),
)
async def post_note(
    hazard_id: uuid.UUID, body: NoteBody, work: Work, config: Config, principal: Department
) -> NoteView:
    """201 with the note; publishes ``hazard.progress_noted`` (on the timeline). 409 once the case is closed."""
    async with work() as uow:
        noted = await service.note_progress(
            uow, hazard_id, principal=principal, note=body.note, photos=body.photos, config=config
        )
    return NoteView.of(noted)


@router.post(
    "/hazards/{hazard_id}/rectification/extension",
    status_code=202,
    summary="Ask for a later rectification deadline (延期申请; the department holding the case)",
    responses=error_responses(409, s409="Not awaiting rectification, or a request awaits a decision"),
)
async def post_extension(
    hazard_id: uuid.UUID, body: ExtensionBody, work: Work, config: Config, principal: Department
) -> CaseView:
    """202 with the case: the request awaits an operator's or supervisor's decision.

    422 ``invalid_deadline`` for a deadline not after the one in force or too far beyond it
    (``TRACKING__EXTENSIONS__MAX_DAYS_BEYOND``, 30 days); 409 when the case is not awaiting
    rectification, its deadline has passed, or another request awaits a decision.
    """
    async with work() as uow:
        return await service.request_extension(
            uow, hazard_id, principal=principal, deadline=body.deadline, reason=body.reason, config=config
        )


@router.post(
    "/hazards/{hazard_id}/rectification/extension/approve",
    summary="Operator or supervisor: approve a rectification deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def approve_extension(
    hazard_id: uuid.UUID, work: Work, config: Config, principal: Overseer, body: DecisionBody | None = None
) -> CaseView:
    """The rectification deadline (and its overdue timer) move to the requested one."""
    async with work() as uow:
        return await service.decide_extension(
            uow, hazard_id, principal=principal, approved=True, note=body.note if body else "", config=config
        )


@router.post(
    "/hazards/{hazard_id}/rectification/extension/refuse",
    summary="Operator or supervisor: refuse a rectification deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def refuse_extension(
    hazard_id: uuid.UUID, work: Work, config: Config, principal: Overseer, body: DecisionBody | None = None
) -> CaseView:
    """The rectification deadline in force stays; the refusal is on the timeline."""
    async with work() as uow:
        return await service.decide_extension(
            uow, hazard_id, principal=principal, approved=False, note=body.note if body else "", config=config
        )


@router.get("/hotspots", summary="Places with repeated relapses (operators, supervisors)")
async def get_hotspots(work: Work, config: Config, principal: Overseer) -> HotspotList:
    """Places with at least the reference number of relapses, most first."""
    async with work() as uow:
        return await service.list_hotspots(uow, config=config)
