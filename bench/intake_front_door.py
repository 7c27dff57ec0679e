"""CPU per request of intake's HTTP layer alone: the hot routes as ``LeanRoute`` s against plain ``APIRoute`` s.

The app is ``create_app(settings)`` (every middleware, the shared auth, the body limit), nothing
connected; the write engine is replaced by a stub answering "created", so what is measured is
the front door: routing, auth, body decoding and validation, the use case's own checks, the
answer's encoding. Requests are driven straight through ASGI in one process (no sockets).
``generic`` mounts the same endpoints as ordinary FastAPI routes (the comparison of
``tests/integration/intake/test_intake_hot_routes.py``).

``python -m bench.intake_front_door [--requests 10000] [--batch-items 50]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
from fastapi import APIRouter, FastAPI
from starlette.types import Message

from services.intake import api
from services.intake.app import create_app
from services.intake.domain import Rejection, ReportIn
from services.intake.service import ItemResult
from services.intake.settings import IntakeSettings
from shared.auth import Principal, hash_token

TOKEN = "bench-reporter"
RESULTS = Path(__file__).resolve().parent / "results"


class _StubIntake:
    async def submit(
        self, *, principal: Principal, items: Sequence[ReportIn | Rejection], source: str
    ) -> list[ItemResult]:
        return [
            ItemResult(i, None, "rejected", error=item)
            if isinstance(item, Rejection)
            else ItemResult(i, item.report_id, "created", hazard_id=uuid.uuid4(), status="open")
            for i, item in enumerate(items)
        ]


def _generic_router() -> APIRouter:
    router = APIRouter(prefix=api.router.prefix, tags=["intake"])
    for route in api.router.routes:
        path = getattr(route, "path", "")
        router.add_api_route(
            path.removeprefix(api.router.prefix),
            getattr(route, "endpoint"),  # noqa: B009
            methods=sorted(getattr(route, "methods")),  # noqa: B009
            status_code=getattr(route, "status_code", None),
            response_model=getattr(route, "response_model", None),
            responses=getattr(route, "responses", None),
        )
    return router


def build(kind: str) -> FastAPI:
    settings = IntakeSettings.model_validate(
        {
            "database": {"url": "postgresql+asyncpg://bench:bench@127.0.0.1:1/bench"},
            "kafka": {"bootstrap_servers": "127.0.0.1:1"},
            "auth": {
                "tokens": [
                    {
                        "token_sha256": hash_token(TOKEN),
                        "principal": "gm-1",
                        "role": "reporter",
                        "grid_id": "liuyue-01",
                    }
                ]
            },
            "http": {"port": 0},
            "rate_limit": {"enabled": False},
        }
    )
    if kind == "generic":
        with mock.patch.object(api, "router", _generic_router()):
            app = create_app(settings)
    else:
        app = create_app(settings)
    app.state.intake = _StubIntake()
    return app


def _report() -> dict[str, Any]:
    return {
        "report_id": str(uuid.uuid4()),
        "category": "locked_rooftop_door",
        "description": "Rooftop escape door padlocked",
        "location": {"lat": 22.622, "lon": 114.16813, "address": "Liuyue, building 7", "building_id": None},
        "grid_id": "liuyue-01",
        "observed_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
        "photos": ["https://img.example.org/a.jpg"],
    }


async def _call(app: FastAPI, path: str, payload: bytes) -> int:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"intake"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("intake", 80),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(kind: str, requests: int, batch_items: int) -> dict[str, float]:
    app = build(kind)
    single = orjson.dumps(_report())
    batch = orjson.dumps({"reports": [_report() for _ in range(batch_items)]})
    out: dict[str, float] = {}
    for name, path, payload, count in (
        ("single", api.SINGLE_PATH, single, requests),
        ("batch", api.BATCH_PATH, batch, max(1, requests // batch_items)),
    ):
        for _ in range(200):
            assert await _call(app, path, payload) in (200, 201)
        started = time.process_time()
        for _ in range(count):
            await _call(app, path, payload)
        out[name] = (time.process_time() - started) / count * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--batch-items", type=int, default=50)
    args = parser.parse_args()
    print(f"| routes | single µs CPU/request | batch of {args.batch_items} µs CPU/request |")
    print("| --- | --- | --- |")
    results: dict[str, Any] = {"requests": args.requests, "batch_items": args.batch_items}
    for kind in ("lean", "generic"):
        figures = asyncio.run(measure(kind, args.requests, args.batch_items))
        results[kind] = {k: round(v, 1) for k, v in figures.items()}
        print(f"| {kind} | {figures['single']:.1f} | {figures['batch']:.1f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "intake_front_door.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
