"""The two hot routes (one report, a batch) served without FastAPI's generic request machinery.

Under load FastAPI's routing, dependency solving, body handling and response encoding cost
more CPU than committing the report. :class:`HotRoutes` sits in front of the app and answers
``POST /api/v1/hazards`` and ``POST /api/v1/hazards/batch`` itself when the request is the
ordinary one: a JSON body (``application/json``), a reporter's bearer token and a body that
passes the same checks as the routes' (the single route: ``ReportIn``; the batch:
``{"reports": [1..limit items]}``, each item then checked on its own exactly as the route
does). It shares the routes' use case and answers (``api.single_answer``,
``api.batch_answer``, ``api.over_limit``), so a 201/200, a domain refusal (403, 409, 422) or
a 429 is the same response either way.

Anything else (no or another content type, malformed JSON, a missing, unknown or
non-reporter token, a body that fails validation, a batch over the limit) is handed to the
FastAPI app with the body already read replayed to it, untouched: the app then answers
exactly as before (its error shape, its order of checks). Nothing with a side effect (the
rate-limit bucket) happens before that decision, so a handed-over request is counted once.

The body-size limits stay in front of this (it is added inside ``RouteBodyLimits``), and an
unexpected error propagates to the app's outer error middleware as a route's would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.intake import api
from shared.auth import Principal, TokenRegistry
from shared.errors import ApiError, error_body

SINGLE_PATH = "/api/v1/hazards"
BATCH_PATH = "/api/v1/hazards/batch"
_JSON = b"application/json"


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    value = content_type.strip().lower()
    if not value.startswith(_JSON):
        return False
    rest = value[len(_JSON) :].lstrip()
    return not rest or rest.startswith(b";")


def _bearer_reporter(registry: TokenRegistry, header: bytes | None) -> Principal | None:
    """The reporter holding the bearer token, or None (the app then answers 401/403)."""
    if header is None:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    principal = registry.authenticate(token)
    if principal is None or principal.role != "reporter":
        return None
    return principal


class HotRoutes:
    """ASGI middleware answering the hot routes' ordinary requests; see the module's docstring."""

    def __init__(self, app: ASGIApp, *, fastapi_app: FastAPI) -> None:
        self.app = app
        self.state = fastapi_app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == SINGLE_PATH:
            batch = False
        elif path == BATCH_PATH:
            batch = True
        else:
            await self.app(scope, receive, send)
            return
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"authorization":
                authorization = value
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        answered = False
        if _is_json(content_type):
            principal = _bearer_reporter(self.state.tokens, authorization)
            if principal is not None:
                answered = await (self._batch if batch else self._single)(principal, body, send)
        if not answered:
            await self.app(scope, _replay(body, receive), send)

    async def _single(self, principal: Principal, body: bytes, send: Send) -> bool:
        try:
            report = api.REPORT.validate_python(orjson.loads(body))
        except (orjson.JSONDecodeError, ValidationError):
            return False
        limited = api.over_limit(self.state.rate_limiter, principal)
        if limited is not None:
            await _answer_error(send, limited)
            return True
        intake = self.state.intake
        [result] = await intake.submit(principal=principal, items=[report], source="app")
        status, answer = api.single_answer(result)
        await _answer(send, status, answer)
        return True

    async def _batch(self, principal: Principal, body: bytes, send: Send) -> bool:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(parsed, dict) or parsed.keys() != {"reports"}:
            return False
        reports = parsed["reports"]
        if not isinstance(reports, list) or not 1 <= len(reports) <= self.state.batch_max_items:
            return False
        limited = api.over_limit(self.state.rate_limiter, principal)
        if limited is not None:
            await _answer_error(send, limited)
            return True
        await _answer(send, 200, await api.batch_answer(self.state.intake, principal, reports))
        return True


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then what the server sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, status: int, content: Any, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    payload = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(payload)).encode()),
                (b"content-type", b"application/json"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _answer_error(send: Send, error: ApiError) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (error.headers or {}).items()]
    await _answer(send, error.status, error_body(error.code, error.message, error.details), headers)
