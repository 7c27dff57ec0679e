"""HTTP routes of intake for grid members' phones: one report, or an offline batch.

A reporter may report only in the grid their token is bound to (403 otherwise). Every
accepted report is committed together with its ``hazard.reported`` event before the answer.
Both routes are hot: they are :class:`~services.intake.lean.LeanRoute` s (declared and
documented as FastAPI routes, served without FastAPI's generic per-request machinery).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.intake import metrics, service
from services.intake.domain import ReportIn
from services.intake.lean import LeanRoute, json_answer
from services.intake.ratelimit import RateLimiter
from services.intake.service import BatchOutcome, Intake, ItemResult
from shared.auth import Principal, require
from shared.errors import ApiError
from shared.openapi import ErrorInfo, error_responses

SINGLE_PATH = "/api/v1/hazards"
BATCH_PATH = "/api/v1/hazards/batch"

router = APIRouter(prefix="/api/v1", tags=["intake"], route_class=LeanRoute)

_reporter = require("reporter")


def over_limit(limiter: RateLimiter | None, principal: Principal) -> ApiError | None:
    """Take one request from the reporter's bucket: None, or the 429 (with Retry-After) to answer."""
    if limiter is None:
        return None
    wait = limiter.take(principal.id, now=time.monotonic())
    if wait <= 0:
        return None
    metrics.RATE_LIMITED.inc()
    metrics.REJECTED.labels("rate_limited").inc()
    retry = limiter.retry_after_header(wait)
    return ApiError(
        429,
        "rate_limited",
        f"Too many requests from {principal.id}; retry after {retry} s "
        "(batch offline reports with POST /api/v1/hazards/batch).",
        headers={"Retry-After": retry},
    )


async def reporter_within_limit(request: Request) -> Principal:
    """The calling reporter (401/403 from the shared auth), or 429 with Retry-After over the limit."""
    principal = await _reporter(request)
    error = over_limit(request.app.state.rate_limiter, principal)
    if error is not None:
        raise error
    return principal


async def intake_service(request: Request) -> Intake:
    """This process's intake (the write engine with its group committer)."""
    intake: Intake = request.app.state.intake
    return intake


async def batch_max_items(request: Request) -> int:
    """``INTAKE__LIMITS__BATCH_MAX_ITEMS``."""
    limit: int = request.app.state.batch_max_items
    return limit


Reporter = Annotated[Principal, Depends(reporter_within_limit)]
IntakeService = Annotated[Intake, Depends(intake_service)]
BatchMaxItems = Annotated[int, Depends(batch_max_items)]


class BatchIn(BaseModel):
    """Reports collected offline, sent together; each item is checked on its own."""

    model_config = ConfigDict(extra="forbid")

    reports: Annotated[list[Any], Field(min_length=1, max_length=5000)]


class HazardAnswer(BaseModel):
    """The hazard a report created (201) or, for a retry, created before (200)."""

    model_config = ConfigDict(extra="forbid")

    hazard_id: uuid.UUID
    report_id: uuid.UUID
    status: str
    duplicate_of: uuid.UUID | None


class AcceptedItem(BaseModel):
    """A batch item that created a hazard, or replayed one created before."""

    model_config = ConfigDict(extra="forbid")

    index: int
    report_id: uuid.UUID
    outcome: Literal["created", "replayed"]
    http_status: Literal[200, 201]
    hazard_id: uuid.UUID
    status: str
    duplicate_of: uuid.UUID | None


class RejectedItem(BaseModel):
    """A refused batch item: the status and error a single report would have got."""

    model_config = ConfigDict(extra="forbid")

    index: int
    report_id: uuid.UUID | None
    outcome: Literal["rejected"]
    http_status: int
    error: ErrorInfo


class BatchAnswer(BaseModel):
    """One result per item, in order, and the counts."""

    model_config = ConfigDict(extra="forbid")

    results: list[AcceptedItem | RejectedItem]
    accepted: int
    replayed: int
    rejected: int


def hazard_json(result: ItemResult) -> dict[str, Any]:
    """The :class:`HazardAnswer` of an accepted report."""
    return {
        "hazard_id": str(result.hazard_id),
        "report_id": str(result.report_id),
        "status": result.status,
        "duplicate_of": None if result.duplicate_of is None else str(result.duplicate_of),
    }


def batch_json(outcome: BatchOutcome) -> dict[str, Any]:
    """The :class:`BatchAnswer` of a batch."""
    return {
        "results": [r.json() for r in outcome.results],
        "accepted": outcome.count("created"),
        "replayed": outcome.count("replayed"),
        "rejected": outcome.count("rejected"),
    }


@router.post(
    "/hazards",
    status_code=201,
    response_model=HazardAnswer,
    summary="Report one hazard (201 created; 200 when the same report_id and body were seen before)",
    responses={
        200: {"model": HazardAnswer, "description": "A retry: the hazard already created for this report_id"},
        **error_responses(409, 429, s409="This report_id was used before with a different body"),
    },
)
async def report_hazard(report: ReportIn, principal: Reporter, intake: IntakeService) -> Response:
    """Accept one report; a different body under a used report_id is 409."""
    result = await service.report_hazard(intake, principal, report)
    return json_answer(result.http_status, hazard_json(result))


@router.post(
    "/hazards/batch",
    response_model=BatchAnswer,
    summary="Sync up to 500 offline reports; one result per item, in order",
    responses=error_responses(429),
)
async def report_batch(
    batch: BatchIn, principal: Reporter, intake: IntakeService, max_items: BatchMaxItems
) -> Response:
    """Valid items are accepted even when others fail; each result says created, replayed or rejected."""
    outcome = await service.report_batch(intake, principal, batch.reports, max_items=max_items)
    return json_answer(200, batch_json(outcome))
