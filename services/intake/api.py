"""HTTP routes of intake for grid members' phones: one report, or an offline batch.

A reporter may report only in the grid their token is bound to (403 otherwise). Every
accepted report is committed together with its ``hazard.reported`` event before the answer.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from services.intake import metrics
from services.intake.domain import Rejection, ReportIn
from services.intake.ratelimit import RateLimiter
from services.intake.service import Intake, ItemResult
from shared.auth import Principal, require
from shared.errors import ApiError, error_body, validation_details
from shared.openapi import error_responses

router = APIRouter(prefix="/api/v1", tags=["intake"])

REPORT = TypeAdapter(ReportIn)
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


async def reporter_within_limit(
    request: Request, principal: Annotated[Principal, Depends(_reporter)]
) -> Principal:
    """The calling reporter, or 429 with Retry-After when they send faster than the limit."""
    error = over_limit(request.app.state.rate_limiter, principal)
    if error is not None:
        raise error
    return principal


Reporter = Annotated[Principal, Depends(reporter_within_limit)]


class BatchIn(BaseModel):
    """Reports collected offline, sent together; each item is checked on its own."""

    model_config = ConfigDict(extra="forbid")

    reports: Annotated[list[Any], Field(min_length=1, max_length=5000)]


def _intake(request: Request) -> Intake:
    intake: Intake = request.app.state.intake
    return intake


def item_rejection(exc: ValidationError) -> Rejection:
    """A report that does not match the schema, as a 422 with the fields at fault."""
    return Rejection(
        422,
        "invalid",
        "The report does not match what this endpoint accepts.",
        tuple(validation_details(exc.errors())),
    )


@router.post(
    "/hazards",
    status_code=201,
    summary="Report one hazard (201 created; 200 when the same report_id and body were seen before)",
    responses={
        200: {"description": "A retry: the hazard already created for this report_id"},
        **error_responses(409, 429, s409="This report_id was used before with a different body"),
    },
)
async def report_hazard(request: Request, report: ReportIn, principal: Reporter) -> JSONResponse:
    """Accept one report; a different body under a used report_id is 409."""
    [result] = await _intake(request).submit(principal=principal, items=[report], source="app")
    status, body = single_answer(result)
    return JSONResponse(body, status_code=status)


def single_answer(result: ItemResult) -> tuple[int, dict[str, Any]]:
    """Status and body of the single-report answer (a refusal in the API's error shape)."""
    if result.error is not None:
        error = result.error
        return error.status, error_body(error.code, error.message, list(error.details))
    return result.http_status, {
        "hazard_id": str(result.hazard_id),
        "report_id": str(result.report_id),
        "status": result.status,
        "duplicate_of": None if result.duplicate_of is None else str(result.duplicate_of),
    }


@router.post(
    "/hazards/batch",
    summary="Sync up to 500 offline reports; one result per item, in order",
    responses=error_responses(429),
)
async def report_batch(request: Request, batch: BatchIn, principal: Reporter) -> dict[str, Any]:
    """Valid items are accepted even when others fail; each result says created, replayed or rejected."""
    limit = request.app.state.batch_max_items
    if len(batch.reports) > limit:
        raise ApiError(
            422,
            "batch_too_large",
            f"A batch holds at most {limit} reports; this one has {len(batch.reports)}. Split it.",
            [{"field": "reports", "problem": f"at most {limit} items", "type": "too_long"}],
        )
    return await batch_answer(_intake(request), principal, batch.reports)


async def batch_answer(intake: Intake, principal: Principal, reports: list[Any]) -> dict[str, Any]:
    """Check each item, submit the valid ones, and say what became of each."""
    items: list[ReportIn | Rejection] = []
    for raw in reports:
        try:
            items.append(REPORT.validate_python(raw))
        except ValidationError as exc:
            items.append(item_rejection(exc))
    results = await intake.submit(principal=principal, items=items, source="batch")
    return {
        "results": [r.json() for r in results],
        "accepted": sum(r.outcome == "created" for r in results),
        "replayed": sum(r.outcome == "replayed" for r in results),
        "rejected": sum(r.outcome == "rejected" for r in results),
    }
