"""The OpenAPI document says what the API answers: the bearer scheme and the error shape for each status.

FastAPI documents a route's success answer and a 422 in its own validation shape, while every
error of this API leaves in one shape (:mod:`shared.errors`). :func:`install_openapi`, applied
to every service by the shared app factory, completes each operation from what the shared
machinery makes it answer, so that a route added later is covered without anyone listing it:

* a route whose endpoint takes a :class:`~shared.auth.Principal` needs a bearer token: the
  ``bearer`` security scheme (Swagger UI's "Authorize" sends it), 401, and 403 when the
  dependency admits only some roles (anything but bare :func:`~shared.auth.authenticate`);
* a route with path parameters answers 404 (no such object, or another department's);
* a route with a request body answers 400 (not JSON, bad Content-Length) and 413 (too large);
* every route answers 422 (invalid parameters or body, a NUL in the URL) and 500; every route but
  the operational ones answers 503 while the service drains.

Statuses only a route's own code gives (409, 429, 415...) are declared on the route with
``responses=error_responses(409, ...)``; whatever is declared there with a description only gets
the error shape too. ``tests/support/statuses.py`` checks, across a test run, that every status
the tests observe is documented for its route.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Principal, authenticate

SECURITY_SCHEME = "bearer"
OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Answered even while the service drains (every other path then answers 503)."""


class ErrorDetail(BaseModel):
    """One problem: which field and what is wrong with it (other keys may follow)."""

    model_config = ConfigDict(extra="allow")

    field: str | None = None
    problem: str | None = None


class ErrorInfo(BaseModel):
    """A stable code, a sentence a person can read, and details."""

    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["No such hazard."])
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every error answer of the API: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorInfo


class Open311Error(BaseModel):
    """An Open311 error (GeoReport v2): the list of these is the body, in JSON or XML."""

    code: int
    description: str


OPEN311_PREFIX = "/open311/"
"""Paths answering Open311's own error list (a malformed URL still gets :class:`ErrorBody`)."""


DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: the body is not valid JSON, or Content-Length is not a number",
    401: "No valid bearer token",
    403: "The caller's role may not do this",
    404: "No such object (another department's object is not found either)",
    405: "Method not allowed",
    409: "Conflicts with the object's current state or an earlier request",
    413: "The request body is larger than the service accepts",
    415: "Unsupported media type",
    422: "The request does not match what this endpoint accepts (parameters, body, a NUL in the URL)",
    429: "Too many requests: retry after the Retry-After header's seconds",
    500: "Something went wrong on the service's side; the request was not completed",
    503: "The service is stopping (draining); retry against another replica",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: these statuses, each with the error shape.

    ``descriptions`` by ``s409="..."`` override the default sentence of a status.
    """
    return {
        status: {"model": ErrorBody, "description": descriptions.get(f"s{status}", DESCRIPTIONS[status])}
        for status in statuses
    }


def _principal_dependency(endpoint: Any) -> str | None:
    """``"authenticate"`` or ``"role"`` when the endpoint needs a caller, None when it is public."""
    try:
        hints = typing.get_type_hints(endpoint, include_extras=True)
    except Exception:
        hints = {}
    for name, parameter in inspect.signature(endpoint).parameters.items():
        hint = hints.get(name, parameter.annotation)
        metadata: tuple[Any, ...] = ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            metadata = tuple(rest)
        if hint is not Principal:
            continue  # Principal | None: the caller is optional, the route public
        dependency = next(
            (getattr(m, "dependency", None) for m in metadata if hasattr(m, "dependency")), None
        )
        if dependency is None:
            dependency = getattr(parameter.default, "dependency", None)
        return "authenticate" if dependency is authenticate else "role"
    return None


def _error_content(path: str) -> dict[str, Any]:
    ours = {"$ref": "#/components/schemas/ErrorBody"}
    if not path.startswith(OPEN311_PREFIX):
        return {"application/json": {"schema": ours}}
    open311 = {"type": "array", "items": {"$ref": "#/components/schemas/Open311Error"}}
    return {
        "application/json": {"schema": {"oneOf": [open311, ours]}},
        "text/xml": {"schema": {"type": "string", "description": "<errors><error>...</error></errors>"}},
    }


def document(app: FastAPI, schema: dict[str, Any]) -> dict[str, Any]:
    """Complete ``schema`` (FastAPI's document of ``app``) in place; see the module's docstring."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorBody"] = error_schema
    schemas["Open311Error"] = Open311Error.model_json_schema()
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A bearer token issued to a grid member, department, operator or supervisor.",
    }
    paths = schema.get("paths", {})
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if not isinstance(original, APIRoute) or not original.include_in_schema or not route.path_format:
            continue
        path = route.path_format
        operations = paths.get(path, {})
        caller = _principal_dependency(original.endpoint)
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            statuses = {422, 500}
            if path not in OPERATIONS_PATHS:
                statuses.add(503)
            if "{" in path:
                statuses.add(404)
            if "requestBody" in operation:
                statuses.update({400, 413})
            if caller is not None:
                statuses.add(401)
                if caller == "role":
                    statuses.add(403)
                operation["security"] = [{SECURITY_SCHEME: []}]
            for status in statuses:
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                # A route's own model stays (readiness's 503); FastAPI's validation shape does not.
                if "content" not in response or code == "422":
                    response["content"] = _error_content(path)
                    if int(code) in DESCRIPTIONS and response.get("description") in (
                        None,
                        "",
                        "Validation Error",
                    ):
                        response["description"] = DESCRIPTIONS[int(code)]
    # FastAPI's own validation shapes are answered by no route any more.
    text = repr(paths)
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Have ``app.openapi()`` return the completed document (built once, on first use)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document(app, original())
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
