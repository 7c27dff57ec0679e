"""The hot routes (``LeanRoute``, services/intake/lean.py) answer exactly as FastAPI's generic routes do.

Two intake apps on one database: the real one, and one whose ``api.router`` is rebuilt from the
same endpoints as plain ``APIRoute`` s (FastAPI's generic dependency solving, body validation and
encoding). The same requests go to both: success, replay, 400, 401, 403, 409, 413, 422 and 429
must have the same status, content type, ``Retry-After`` and body (ids masked: each app creates
its own hazards).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import httpx
import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

from services.intake import api
from services.intake.lean import LeanRoute
from tests.integration.intake.intake_helpers import AppFactory, auth, report

pytestmark = pytest.mark.integration

SETTINGS: dict[str, Any] = {
    "outbox": {"enabled": False},
    "broker": False,
    "http": {"port": 0, "max_body_bytes": 4096},
    "limits": {"batch_max_items": 3, "batch_max_body_bytes": 8192},
}
Pair = tuple[httpx.AsyncClient, httpx.AsyncClient]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def generic_router() -> APIRouter:
    """``api.router``'s endpoints as ordinary FastAPI routes (same paths, models and responses)."""
    router = APIRouter(prefix=api.router.prefix, tags=["intake"])
    for route in api.router.routes:
        assert isinstance(route, LeanRoute)
        router.add_api_route(
            route.path.removeprefix(api.router.prefix),
            route.endpoint,
            methods=sorted(route.methods),
            status_code=route.status_code,
            response_model=route.response_model,
            responses=route.responses,
        )
    assert all(type(r) is APIRoute for r in router.routes)
    return router


@contextlib.asynccontextmanager
async def both(intake_app: AppFactory, **extra: Any) -> AsyncIterator[Pair]:
    settings = {**SETTINGS, **extra}
    async with intake_app(**settings) as (_lean_app, lean):
        with mock.patch.object(api, "router", generic_router()):
            generic_cm = intake_app(**settings)
            _generic_app, generic = await generic_cm.__aenter__()
        try:
            yield lean, generic
        finally:
            await generic_cm.__aexit__(None, None, None)


def _masked(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {
            k: "<id>" if k in ("hazard_id", "report_id", "duplicate_of") else _masked(v)
            for k, v in payload.items()
        }
    if isinstance(payload, list):
        return [_masked(v) for v in payload]
    if isinstance(payload, str):
        return _UUID.sub("<id>", payload)
    return payload


def _seen(response: httpx.Response) -> tuple[Any, ...]:
    try:
        body = _masked(response.json())
    except ValueError:
        body = response.text
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("retry-after"),
        response.headers.get("www-authenticate"),
        body,
    )


async def _same(
    pair: Pair,
    path: str,
    body: Any,
    *,
    token: str | None = "tok-gm1",
    content_type: str | None = "application/json",
    raw: bytes | None = None,
) -> tuple[Any, ...]:
    """Send the same request to both apps; both answers must be the same; return it."""
    headers = {**(auth(token) if token else {}), **({"Content-Type": content_type} if content_type else {})}
    content = raw if raw is not None else json.dumps(body).encode()
    answers = [_seen(await client.post(path, content=content, headers=headers)) for client in pair]
    assert answers[0] == answers[1], (path, body, token, content_type)
    return answers[0]


async def test_single_reports_get_the_same_answers(intake_app: AppFactory) -> None:
    async with both(intake_app) as pair:
        lean, generic = pair
        # Created (201), then replayed (200), on each app with its own report.
        for client in pair:
            assert (
                await client.post(api.SINGLE_PATH, json=report(), headers=auth("tok-gm1"))
            ).status_code == 201
        bodies = [report(), report()]
        created = [
            _seen(await c.post(api.SINGLE_PATH, json=b, headers=auth("tok-gm1")))
            for c, b in zip(pair, bodies, strict=True)
        ]
        assert created[0] == created[1]
        assert created[0][:2] == (201, "application/json")
        replayed = [
            _seen(await c.post(api.SINGLE_PATH, json=b, headers=auth("tok-gm1")))
            for c, b in zip(pair, bodies, strict=True)
        ]
        assert replayed[0] == replayed[1]
        assert replayed[0][0] == 200
        # 409: another body under each app's own used id.
        conflicts = [
            _seen(
                await c.post(
                    api.SINGLE_PATH, json={**b, "description": "another text"}, headers=auth("tok-gm1")
                )
            )
            for c, b in zip(pair, bodies, strict=True)
        ]
        assert conflicts[0] == conflicts[1]
        assert conflicts[0][0] == 409
        fixed = report()
        cases: list[tuple[str, int, dict[str, Any]]] = [
            ("no token", 401, {"token": None}),
            ("unknown token", 401, {"token": "nobody"}),
            ("department", 403, {"token": "tok-fire"}),
            ("not your grid", 403, {"body": report(grid_id="liuyue-02")}),
            ("outside the street", 422, {"body": report(location={"lat": 10.0, "lon": 10.0})}),
            ("unknown field", 422, {"body": {**fixed, "colour": "red"}}),
            ("not an object", 422, {"body": [fixed]}),
            ("lone surrogate", 422, {"raw": json.dumps(report(description="a\ud800b")).encode()}),
            ("empty body", 422, {"raw": b""}),
            ("text/plain", 422, {"content_type": "text/plain"}),
            ("no content type", 422, {"content_type": None}),
            (
                "+json",
                403,
                {"content_type": "application/vnd.hazard+json", "body": report(grid_id="liuyue-02")},
            ),
            ("malformed JSON", 400, {"raw": b'{"report_id": '}),
            ("malformed JSON, no token", 400, {"raw": b'{"report_id": ', "token": None}),
            ("NaN", 422, {"raw": b'{"report_id": NaN}'}),
            ("invalid UTF-8", 400, {"raw": b'{"description": "\xff\xfe"}'}),
            ("invalid UTF-8, no token", 400, {"raw": b"\xff", "token": None}),
            ("deeply nested", 400, {"raw": b"[" * 3000}),
            ("too large", 413, {"raw": b'{"description": "' + b"x" * 5000 + b'"}'}),
        ]
        for name, status, case in cases:
            seen = await _same(pair, api.SINGLE_PATH, case.pop("body", fixed), **case)
            assert seen[0] == status, (name, seen)
        assert lean is not generic


async def test_batches_get_the_same_answers(intake_app: AppFactory) -> None:
    async with both(intake_app) as pair:
        answers = []
        for client in pair:
            good = report()
            items = [good, report(grid_id="liuyue-02"), {**report(), "colour": "red"}]
            response = await client.post(api.BATCH_PATH, json={"reports": [*items]}, headers=auth("tok-gm1"))
            answers.append(_seen(response))
        assert answers[0] == answers[1]
        assert answers[0][0] == 200
        assert [r["outcome"] for r in answers[0][4]["results"]] == ["created", "rejected", "rejected"]
        cases: list[tuple[str, int, dict[str, Any]]] = [
            ("empty", 422, {"body": {"reports": []}}),
            ("extra key", 422, {"body": {"reports": [report()], "extra": 1}}),
            ("no reports", 422, {"body": {"items": [report()]}}),
            ("over the item limit", 422, {"body": {"reports": [report() for _ in range(4)]}}),
            ("no token", 401, {"body": {"reports": [report()]}, "token": None}),
            ("department", 403, {"body": {"reports": [report()]}, "token": "tok-fire"}),
            ("malformed", 400, {"raw": b'{"reports": ['}),
            ("invalid UTF-8", 400, {"raw": b'{"reports": ["\xff"]}'}),
            ("invalid UTF-8 as a department", 400, {"raw": b"\xc3", "token": "tok-fire"}),
            ("over the batch body limit", 413, {"raw": b'{"reports": ["' + b"x" * 9000 + b'"]}'}),
        ]
        for name, status, case in cases:
            seen = await _same(pair, api.BATCH_PATH, case.pop("body", None), **case)
            assert seen[0] == status, (name, seen)
        # The batch route reads more than the single route's limit, up to its own.
        answers = []
        for client in pair:
            between = {"reports": [report(description=c * 1500) for c in "xyz"]}
            assert 4096 < len(json.dumps(between)) < 8192
            answers.append(_seen(await client.post(api.BATCH_PATH, json=between, headers=auth("tok-gm1"))))
        assert answers[0] == answers[1]
        assert answers[0][0] == 200


async def test_the_rate_limit_answers_alike_and_takes_one_token_per_request(intake_app: AppFactory) -> None:
    limited = {"rate_limit": {"enabled": True, "requests_per_s": 0.1, "burst": 2}}
    async with both(intake_app, **limited) as pair:
        # An invalid body still takes its token (the limit is checked before the body), on both.
        invalid = await _same(pair, api.SINGLE_PATH, {**report(), "colour": "red"})
        assert invalid[0] == 422
        first = [_seen(await c.post(api.SINGLE_PATH, json=report(), headers=auth("tok-gm1"))) for c in pair]
        assert first[0] == first[1]
        assert first[0][0] == 201
        over = await _same(pair, api.SINGLE_PATH, report())
        assert over[0] == 429
        assert over[4]["error"]["code"] == "rate_limited"
        assert 1 <= int(over[2]) <= 10
        assert (await _same(pair, api.BATCH_PATH, {"reports": [report()]}))[0] == 429
        # Another reporter has a bucket of their own.
        other = [
            _seen(await c.post(api.SINGLE_PATH, json=report(grid_id="liuyue-02"), headers=auth("tok-gm2")))
            for c in pair
        ]
        assert other[0] == other[1]
        assert other[0][0] == 201
