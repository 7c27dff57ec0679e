"""Shared checks of the abuse suite: no 5xx, and the API's error shape on every 4xx."""

from __future__ import annotations

import os
from typing import Any

import httpx

EXAMPLES = int(os.environ.get("HAZARD_ABUSE_EXAMPLES", "20"))
"""Hypothesis examples per operation in the default run (the slow variant multiplies it)."""


def open311_error_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why a 4xx under /open311/ is not GeoReport v2's error list ``[{"code", "description"}]`` (JSON or XML)."""
    if "xml" in content_type:
        return None if b"<errors>" in body and b"<description>" in body else f"{status} XML without <errors>"
    try:
        data: Any = httpx.Response(status, content=body).json()
    except ValueError:
        return f"{status} with a body that is neither JSON nor XML: {body[:200]!r}"
    if isinstance(data, dict) and "error" in data:
        return error_shape_problem(status, content_type, body)
    if not (
        isinstance(data, list) and data and all(isinstance(e, dict) and e.get("description") for e in data)
    ):
        return f"{status} without GeoReport v2 errors: {body[:200]!r}"
    return None


def error_shape_problem(status: int, content_type: str, body: bytes, *, open311: bool = False) -> str | None:
    """Why a 4xx/5xx body is not ``{"error": {"code", "message", "details"}}`` (None when it is).

    Under ``/open311/`` the GeoReport v2 standard's own error list is the contract instead.
    """
    if status < 400:
        return None
    if open311:
        return open311_error_problem(status, content_type, body)
    if "json" not in content_type:
        return f"{status} with content type {content_type!r}, not JSON"
    try:
        data: Any = httpx.Response(status, content=body).json()
    except ValueError:
        return f"{status} with a body that is not JSON: {body[:200]!r}"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return f"{status} without an 'error' object: {body[:200]!r}"
    if not isinstance(error.get("code"), str) or not error["code"]:
        return f"{status} error without a code: {error}"
    if not isinstance(error.get("message"), str) or not error["message"]:
        return f"{status} error without a message: {error}"
    if not isinstance(error.get("details"), list):
        return f"{status} error whose details is not a list: {error}"
    return None


def response_problem(response: httpx.Response | Any, *, path: str = "") -> str | None:
    """A 5xx, or a 4xx without the error shape (works with httpx and requests responses)."""
    status = int(response.status_code)
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    if isinstance(content_type, list):  # schemathesis keeps every header as a list of values
        content_type = ",".join(content_type)
    if status >= 500:
        return f"server error {status}: {response.content[:300]!r}"
    return error_shape_problem(status, content_type, response.content, open311=path.startswith("/open311"))
