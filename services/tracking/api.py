"""HTTP routes of the tracking service: the case and its timeline, rectification, verification, hotspots."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.tracking import domain, repository, service, tables
from services.tracking.domain import Case, Entry
from services.tracking.settings import TrackingSettings
from shared.auth import Principal, authenticate, require
from shared.db import database_now
from shared.errors import ApiError
from shared.service import ServiceRuntime
from shared.text import Text

router = APIRouter(prefix="/api/v1", tags=["tracking"])

MAX_PHOTOS = 20


def _photo_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("a photo must be an http:// or https:// URL")
    return value


PhotoUrl = Annotated[str, Text(min_length=8, max_length=2000), AfterValidator(_photo_url)]


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


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _work(runtime: ServiceRuntime) -> service.Casework:
    settings = runtime.settings
    distance = settings.relapse.distance_m if isinstance(settings, TrackingSettings) else None
    return service.Casework(
        reference=runtime.reference, inbox=tables.inbox, outbox=runtime.outbox, relapse_distance_m=distance
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
            "receipt_overdue": case.receipt_overdue,
            "rectification": _iso(case.rectification_deadline),
            "rectification_overdue": case.rectification_overdue,
        },
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


async def _view(runtime: ServiceRuntime, hazard_id: uuid.UUID, principal: Principal) -> dict[str, Any]:
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


@router.get("/hazards/{hazard_id}", summary="The case: state, department, deadlines, links and timeline")
async def get_hazard(
    hazard_id: uuid.UUID, request: Request, principal: Principal = Depends(authenticate)
) -> dict[str, Any]:
    """The case of a hazard, for its grid's reporters, the departments that held it, operators, supervisors."""
    return await _view(_runtime(request), hazard_id, principal)


async def _act(
    request: Request,
    hazard_id: uuid.UUID,
    principal: Principal,
    action: str,
    run: Any,
) -> dict[str, Any]:
    runtime = _runtime(request)
    try:
        async with runtime.sessions() as session, session.begin():
            await run(session, runtime)
    except service.CaseNotFound:
        raise _not_found(hazard_id) from None
    except domain.NotPermitted as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    except domain.TransitionRefused as exc:
        raise ApiError(409, "invalid_state", str(exc), [{"action": action}]) from None
    return await _view(runtime, hazard_id, principal)


@router.post(
    "/hazards/{hazard_id}/rectification",
    summary="Mark the hazard rectified, with evidence (holding department)",
)
async def post_rectification(
    hazard_id: uuid.UUID,
    body: RectificationBody,
    request: Request,
    principal: Principal = Depends(require("department")),
) -> dict[str, Any]:
    """The department holding the hazard reports it rectified; publishes ``hazard.rectified``."""
    department_id = principal.department_id or ""

    async def run(session: Any, runtime: ServiceRuntime) -> None:
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
)
async def post_verification(
    hazard_id: uuid.UUID,
    body: VerificationBody,
    request: Request,
    principal: Principal = Depends(require("reporter")),
) -> dict[str, Any]:
    """Passed closes the case (``hazard.verified``, ``hazard.closed``); failed orders the next round."""
    grid_id = principal.grid_id or ""

    async def run(session: Any, runtime: ServiceRuntime) -> None:
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
