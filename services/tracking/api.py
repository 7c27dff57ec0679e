"""HTTP routes of the tracking service: the case and its timeline, rectification, verification, hotspots."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.tracking import domain, repository, service, tables
from services.tracking.domain import Case, Entry
from services.tracking.settings import TrackingSettings
from shared import events as ev
from shared.auth import Principal, authenticate, require
from shared.db import database_now
from shared.errors import ApiError
from shared.openapi import error_responses
from shared.photos import MAX_PHOTOS, PhotoUrl
from shared.service import ServiceRuntime
from shared.text import Text

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


def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


def _work(runtime: ServiceRuntime[Any]) -> service.Casework:
    settings = runtime.settings
    distance = settings.relapse.distance_m if isinstance(settings, TrackingSettings) else None
    days = settings.extensions.max_days_beyond if isinstance(settings, TrackingSettings) else 30
    return service.Casework(
        reference=runtime.reference,
        inbox=tables.inbox,
        outbox=runtime.outbox,
        relapse_distance_m=distance,
        extension_limit=timedelta(days=days),
    )


def _may_see(principal: Principal) -> Callable[[Case], bool]:
    def may_see(case: Case) -> bool:
        return domain.visible_to(
            case, role=principal.role, grid_id=principal.grid_id, department_id=principal.department_id
        )

    return may_see


def _not_found(hazard_id: uuid.UUID) -> ApiError:
    return ApiError(404, "not_found", f"No hazard {hazard_id} that you may see.")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _entry(entry: Entry) -> dict[str, Any]:
    event = entry.event
    return {
        "event_id": str(event.event_id),
        "event_type": event.TYPE,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": domain.actor_of(event),
        "producer": event.producer,
        "details": event.payload.model_dump(mode="json"),  # type: ignore[attr-defined]
    }


def _extension(request: domain.Extension | None) -> dict[str, Any] | None:
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
        "note": request.note,
    }


def case_view(
    case: Case,
    entries: list[Entry],
    *,
    duplicates: list[uuid.UUID],
    relapses: list[uuid.UUID],
    hotspot: bool,
) -> dict[str, Any]:
    """The JSON shape of a case."""
    return {
        "hazard_id": str(case.hazard_id),
        "state": case.state,
        "state_description": domain.STATE_DESCRIPTIONS[case.state],
        "category": case.category,
        "grid_id": case.grid_id,
        "community_id": case.community_id,
        "location": {
            "lat": case.lat,
            "lon": case.lon,
            "address": case.address,
            "building_id": case.building_id,
        },
        "reporter_id": case.reporter_id,
        "reported_at": _iso(case.reported_at),
        "rectified_on_site": case.rectified_on_site,
        "department_id": case.department_id,
        "departments_involved": list(case.departments_involved),
        "dispatch_id": str(case.dispatch_id) if case.dispatch_id else None,
        "deadlines": {
            "receipt": _iso(case.receipt_deadline),
            # As first frozen; differs from `receipt` once an extension was approved.
            "receipt_original": _iso(case.original_receipt_deadline or case.receipt_deadline),
            "receipt_overdue": case.receipt_overdue,
            "rectification": _iso(case.rectification_deadline),
            "rectification_original": _iso(
                case.original_rectification_deadline or case.rectification_deadline
            ),
            "rectification_overdue": case.rectification_overdue,
        },
        "extension_requests": {
            "receipt": _extension(case.receipt_extension),
            "rectification": _extension(case.rectification_extension),
        },
        "urgings": case.urgings,
        "progress_notes": case.progress_notes,
        "acknowledged_at": _iso(case.acknowledged_at),
        "acknowledged_on_time": case.acknowledged_on_time,
        "escalation_level": case.escalation_level,
        "rectification_round": case.round,
        "rework_count": case.rework_count,
        "returns": case.returns,
        "closed": {
            "at": _iso(case.closed_at),
            "by": case.closed_by,
            "department_id": case.closed_department_id,
            "reason": case.close_reason,
        }
        if case.closed_at
        else None,
        "relapse_of": str(case.relapse_of) if case.relapse_of else None,
        "relapse_place_key": case.relapse_place_key,
        "relapsed_as": [str(h) for h in relapses],
        "duplicate_of": str(case.duplicate_of) if case.duplicate_of else None,
        "duplicates": [str(h) for h in duplicates],
        "hotspot": hotspot,
        "timeline": [_entry(entry) for entry in entries],
    }


async def _view(runtime: ServiceRuntime[Any], hazard_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
    async with runtime.sessions() as session:
        try:
            case, entries = await service.load_case(session, hazard_id)
        except service.CaseNotFound:
            raise _not_found(hazard_id) from None
        if not _may_see(principal)(case):
            raise _not_found(hazard_id)
        row = await repository.get_case_row(session, hazard_id)
        view = case_view(
            case,
            entries,
            duplicates=await repository.list_duplicates(session, hazard_id),
            relapses=await repository.list_relapses(session, hazard_id),
            hotspot=bool(row.hotspot) if row is not None else False,
        )
        told = [_notified_entry(n) for n in await repository.list_notifications(session, hazard_id)]
        if told:
            view["timeline"] = _merge_told(view["timeline"], told)
        return view


def _merge_told(timeline: list[dict[str, Any]], told: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Delivery records placed by time among the events, the events' own order untouched."""
    merged: list[dict[str, Any]] = []
    waiting = list(told)
    for entry in timeline:
        at = datetime.fromisoformat(entry["occurred_at"])
        while waiting and datetime.fromisoformat(waiting[0]["occurred_at"]) < at:
            merged.append(waiting.pop(0))
        merged.append(entry)
    return merged + waiting


def _notified_entry(row: Any) -> dict[str, Any]:
    return {
        "event_id": str(row.event_id),
        "event_type": "hazard.notified",
        "occurred_at": row.occurred_at.isoformat(),
        "actor": "notifications",
        "producer": "notifications",
        "details": row.payload,
    }


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


def case_summary(row: Any) -> dict[str, Any]:
    """A case in a list (the timeline and links are in the case itself)."""
    return {
        "hazard_id": str(row.hazard_id),
        "state": row.state,
        "category": row.category,
        "grid_id": row.grid_id,
        "community_id": row.community_id,
        "building_id": row.building_id,
        "reporter_id": row.reporter_id,
        "reported_at": _iso(row.reported_at),
        "rectified_on_site": row.rectified_on_site,
        "department_id": row.department_id,
        "dispatch_id": str(row.dispatch_id) if row.dispatch_id else None,
        "receipt_deadline": _iso(row.receipt_deadline),
        "rectification_round": row.round,
        "rectification_deadline": _iso(row.rectification_deadline),
        "rectification_overdue": row.rectification_overdue,
        "rework_count": row.rework_count,
        "closed_at": _iso(row.closed_at),
    }


@router.get("/hazards", summary="Cases visible to you, newest report first (a grid's, a department's, yours)")
async def list_hazards(
    request: Request,
    principal: Principal = Depends(authenticate),
    state: Annotated[list[CaseState] | None, Query(max_length=11)] = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
    mine: bool = False,
    extension_request: Annotated[Literal["awaiting_approval"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> dict[str, Any]:
    """A reporter sees its grid's cases (``mine``: those it reported); a department those it holds now.

    ``state`` (repeatable) filters by state; ``open=true`` keeps the cases not closed;
    ``extension_request=awaiting_approval`` the cases whose rectification deadline extension awaits a decision.
    """
    grid_id = department_id = reporter_id = None
    if principal.role == "reporter":
        grid_id = principal.grid_id or ""
        if mine:
            reporter_id = principal.id
    elif principal.role == "department":
        department_id = principal.department_id or ""
    states: list[str] = list(state or ())
    if open_only:
        states = [x for x in (states or repository.OPEN_STATES) if x in repository.OPEN_STATES] or ["-"]
    runtime = _runtime(request)
    async with runtime.sessions() as session:
        rows = await repository.list_cases(
            session,
            grid_id=grid_id,
            department_id=department_id,
            reporter_id=reporter_id,
            states=states,
            limit=limit,
            offset=offset,
            rectification_extension_awaiting=extension_request == "awaiting_approval",
        )
    return {
        "items": [case_summary(row) for row in rows],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(rows) if len(rows) == limit else None,
    }


@router.get("/hazards/{hazard_id}", summary="The case: state, department, deadlines, links and timeline")
async def get_hazard(
    hazard_id: uuid.UUID, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    """The case of a hazard, for its grid's reporters, the departments that held it, operators, supervisors."""
    return await _view(_runtime(request), hazard_id, principal)


async def _run(request: Request, hazard_id: uuid.UUID, action: str, run: Any) -> Any:
    runtime = _runtime(request)
    try:
        async with runtime.sessions() as session, session.begin():
            return await run(session, runtime)
    except service.CaseNotFound:
        raise _not_found(hazard_id) from None
    except domain.NotPermitted as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    except domain.TransitionRefused as exc:
        raise ApiError(409, "invalid_state", str(exc), [{"action": action}]) from None
    except domain.ExtensionDateRefused as exc:
        raise ApiError(
            422, "invalid_deadline", str(exc), [{"field": "deadline", "problem": str(exc)}]
        ) from None


async def _act(
    request: Request,
    hazard_id: uuid.UUID,
    principal: Principal,
    action: str,
    run: Any,
) -> dict[str, Any]:
    await _run(request, hazard_id, action, run)
    return await _view(_runtime(request), hazard_id, principal)


@router.post(
    "/hazards/{hazard_id}/rectification",
    summary="Mark the hazard rectified, with evidence (holding department)",
    responses=error_responses(409, s409="The case is not awaiting rectification"),
)
async def post_rectification(
    hazard_id: uuid.UUID,
    body: RectificationBody,
    request: Request,
    principal: Principal = Depends(require("department")),
) -> dict[str, Any]:
    """The department holding the hazard reports it rectified; publishes ``hazard.rectified``."""
    department_id = principal.department_id or ""

    async def run(session: Any, runtime: ServiceRuntime[Any]) -> None:
        await service.rectify_case(
            session,
            hazard_id,
            department_id=department_id,
            actor=principal.id,
            note=body.note,
            photos=body.photos,
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )

    return await _act(request, hazard_id, principal, "rectification", run)


@router.post(
    "/hazards/{hazard_id}/verification",
    summary="Record the verification visit (a reporter of the hazard's grid)",
    responses=error_responses(409, s409="The case is not awaiting verification"),
)
async def post_verification(
    hazard_id: uuid.UUID,
    body: VerificationBody,
    request: Request,
    principal: Principal = Depends(require("reporter")),
) -> dict[str, Any]:
    """Passed closes the case (``hazard.verified``, ``hazard.closed``); failed orders the next round."""
    grid_id = principal.grid_id or ""

    async def run(session: Any, runtime: ServiceRuntime[Any]) -> None:
        await service.verify_case(
            session,
            hazard_id,
            grid_id=grid_id,
            actor=principal.id,
            passed=body.passed,
            note=body.note,
            photos=body.photos,
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )

    return await _act(request, hazard_id, principal, "verification", run)


@router.post(
    "/hazards/{hazard_id}/urgings",
    status_code=201,
    summary="Urge (督办) the open dispatch or rectification of a hazard (operator, supervisor)",
    responses=error_responses(409, s409="The case is closed or holds nothing open to urge"),
)
async def post_urging(
    hazard_id: uuid.UUID,
    body: UrgingBody,
    request: Request,
    principal: Principal = Depends(require("operator", "supervisor")),
) -> dict[str, Any]:
    """201 with the urging; publishes ``hazard.urged`` (the department and its escalation contacts are told).

    409 when the case has no open dispatch or rectification (closed, awaiting verification, unrouted).
    """

    async def run(session: Any, runtime: ServiceRuntime[Any]) -> list[Any]:
        _case, emitted = await service.urge_case(
            session,
            hazard_id,
            actor=principal.id,
            note=body.note,
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )
        return emitted

    emitted = await _run(request, hazard_id, "urging", run)
    event = next(e for e in emitted if isinstance(e, ev.HazardUrged))
    p = event.payload
    return {
        "id": str(p.urging_id),
        "hazard_id": str(hazard_id),
        "department_id": p.department_id,
        "dispatch_id": str(p.dispatch_id) if p.dispatch_id else None,
        "stage": p.stage,
        "note": p.note,
        "urged_by": p.urged_by,
        "urged_at": event.occurred_at.isoformat(),
    }


@router.post(
    "/hazards/{hazard_id}/notes",
    status_code=201,
    summary="Add a progress note to a case (the department holding it)",
    responses=error_responses(409, s409="The case is not open"),
)
async def post_note(
    hazard_id: uuid.UUID,
    body: NoteBody,
    request: Request,
    principal: Principal = Depends(require("department")),
) -> dict[str, Any]:
    """201 with the note; publishes ``hazard.progress_noted`` (on the timeline). 409 once the case is closed."""
    department_id = principal.department_id or ""

    async def run(session: Any, runtime: ServiceRuntime[Any]) -> list[Any]:
        _case, emitted = await service.note_progress(
            session,
            hazard_id,
            department_id=department_id,
            actor=principal.id,
            note=body.note,
            photos=body.photos,
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )
        return emitted

    emitted = await _run(request, hazard_id, "progress_note", run)
    event = next(e for e in emitted if isinstance(e, ev.HazardProgressNoted))
    p = event.payload
    return {
        "id": str(event.event_id),
        "hazard_id": str(hazard_id),
        "department_id": p.department_id,
        "note": p.note,
        "photos": list(p.photos),
        "noted_by": p.noted_by,
        "noted_at": event.occurred_at.isoformat(),
    }


@router.post(
    "/hazards/{hazard_id}/rectification/extension",
    status_code=202,
    summary="Ask for a later rectification deadline (延期申请; the department holding the case)",
    responses=error_responses(409, s409="Not awaiting rectification, or a request awaits a decision"),
)
async def post_extension(
    hazard_id: uuid.UUID,
    body: ExtensionBody,
    request: Request,
    principal: Principal = Depends(require("department")),
) -> JSONResponse:
    """202 with the case: the request awaits an operator's or supervisor's decision.

    422 ``invalid_deadline`` for a deadline not after the one in force or too far beyond it
    (``TRACKING__EXTENSIONS__MAX_DAYS_BEYOND``, 30 days); 409 when the case is not awaiting
    rectification, its deadline has passed, or another request awaits a decision.
    """
    department_id = principal.department_id or ""

    async def run(session: Any, runtime: ServiceRuntime[Any]) -> None:
        await service.request_extension(
            session,
            hazard_id,
            department_id=department_id,
            actor=principal.id,
            deadline=body.deadline,
            reason=body.reason,
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )

    return JSONResponse(await _act(request, hazard_id, principal, "extension", run), status_code=202)


async def _decide(
    hazard_id: uuid.UUID, body: DecisionBody | None, request: Request, principal: Principal, *, approved: bool
) -> dict[str, Any]:
    async def run(session: Any, runtime: ServiceRuntime[Any]) -> None:
        await service.decide_extension(
            session,
            hazard_id,
            approved=approved,
            actor=principal.id,
            note=body.note if body else "",
            visible=_may_see(principal),
            now=await database_now(session),
            work=_work(runtime),
        )

    return await _act(request, hazard_id, principal, "extension_decision", run)


@router.post(
    "/hazards/{hazard_id}/rectification/extension/approve",
    summary="Operator or supervisor: approve a rectification deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def approve_extension(
    hazard_id: uuid.UUID,
    request: Request,
    principal: Principal = Depends(require("operator", "supervisor")),
    body: DecisionBody | None = None,
) -> dict[str, Any]:
    """The rectification deadline (and its overdue timer) move to the requested one."""
    return await _decide(hazard_id, body, request, principal, approved=True)


@router.post(
    "/hazards/{hazard_id}/rectification/extension/refuse",
    summary="Operator or supervisor: refuse a rectification deadline extension",
    responses=error_responses(409, s409="No extension request awaits a decision"),
)
async def refuse_extension(
    hazard_id: uuid.UUID,
    request: Request,
    principal: Principal = Depends(require("operator", "supervisor")),
    body: DecisionBody | None = None,
) -> dict[str, Any]:
    """The rectification deadline in force stays; the refusal is on the timeline."""
    return await _decide(hazard_id, body, request, principal, approved=False)


@router.get("/hotspots", summary="Places with repeated relapses (operators, supervisors)")
async def get_hotspots(
    request: Request, principal: Principal = Depends(require("operator", "supervisor"))
) -> dict[str, Any]:
    """Places with at least the reference number of relapses, most first."""
    runtime = _runtime(request)
    minimum = runtime.reference.hotspot_min_relapses
    async with runtime.sessions() as session:
        found = await repository.list_hotspots(session, min_relapses=minimum)
    return {
        "min_relapses": minimum,
        "hotspots": [
            {
                "place_key": h.place_key,
                "relapses": h.relapses,
                "categories": h.categories,
                "community_id": h.community_id,
                "grid_id": h.grid_id,
                "first_relapse_at": h.first_relapse_at.isoformat(),
                "last_relapse_at": h.last_relapse_at.isoformat(),
                "last_hazard_id": str(h.last_hazard_id),
                "flagged_at": _iso(h.flagged_at),
            }
            for h in found
        ],
    }
