"""Domain refusals become the API's error shape in one place (shared.errors)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from shared.domain_errors import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    TooManyError,
)
from shared.errors import install_error_handlers, status_of


class AlreadyAcknowledgedError(ConflictError):
    code = "already_acknowledged"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFoundError("No dispatch x is visible to you."), 404),
        (ForbiddenError("Operators only."), 403),
        (ConflictError("Changed meanwhile."), 409),
        (AlreadyAcknowledgedError("Already acknowledged."), 409),
        (InvalidError.field("deadline", "The deadline is in the past."), 422),
        (TooManyError("Too many urgings today."), 429),
        (DomainError("Refused."), 422),
    ],
)
async def test_each_kind_of_refusal_answers_its_status_in_the_error_shape(
    error: DomainError, status: int
) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/x")
    async def refuse() -> None:
        raise error

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/x")
    assert status_of(error) == status
    assert response.status_code == status
    assert response.json() == {
        "error": {"code": error.code, "message": error.message, "details": error.details}
    }


def test_a_subclass_keeps_its_own_code_and_a_field_refusal_names_the_field() -> None:
    assert AlreadyAcknowledgedError("x").code == "already_acknowledged"
    refused = InvalidError.field("department_id", "Unknown department 'x'.", code="unknown_department")
    assert refused.code == "unknown_department"
    assert refused.details == [{"field": "department_id", "problem": "Unknown department 'x'."}]
