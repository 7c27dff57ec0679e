"""The API's one error shape: {"error": {"code", "message", "details"}}, and the handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.domain_errors import (
    ConflictError,
    DomainError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    TooManyError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client should read: status, stable code, a sentence, and details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message, "details": details or []}}


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors as {field, problem} pairs a person can read."""
    details = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        detail: dict[str, Any] = {"field": ".".join(loc) or "(body)", "problem": err.get("msg", "invalid")}
        if err.get("type"):
            detail["type"] = err["type"]
        details.append(detail)
    return details


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
}


STATUS_OF_DOMAIN_ERROR: dict[type[DomainError], int] = {
    NotFoundError: 404,
    ForbiddenError: 403,
    ConflictError: 409,
    InvalidError: 422,
    TooManyError: 429,
}
"""The one place a domain refusal becomes an HTTP status (the most specific base class wins)."""


def status_of(exc: DomainError) -> int:
    """The HTTP status a domain refusal answers with (422 for a refusal of no known kind)."""
    for kind in type(exc).__mro__:
        if kind in STATUS_OF_DOMAIN_ERROR:
            return STATUS_OF_DOMAIN_ERROR[kind]
    return 422


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in the API's shape; never a stack trace."""

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_of(exc))

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc.errors())
        if any(d.get("type") == "json_invalid" for d in details):
            return JSONResponse(
                error_body("malformed_json", "The request body is not valid JSON.", details), 400
            )
        return JSONResponse(
            error_body("invalid", "The request does not match what this endpoint accepts.", details), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", "Something went wrong on our side; the request was not completed."), 500
        )
