"""HTTP RED metrics, request ids and the access log (shared/httpmetrics.py), and the JSON log lines (shared/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import service as shared_service
from shared.consumer import each_event, event_context
from shared.errors import install_error_handlers
from shared.httpmetrics import HttpObservability
from shared.logs import make_handler

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")
SERVICE = "unit-http"


class AnswerBeforeRouting:
    """Like intake's fast path: answers one path itself, before the router runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/fast" and scope["method"] == "POST":
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await self.app(scope, receive, send)


def make_app() -> FastAPI:
    app = shared_service.ServiceApp()
    app.service_name = SERVICE
    install_error_handlers(app)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            raise HTTPException(404, "no such item")
        logging.getLogger("unit.route").info("looking at %s", item_id)
        return {"id": item_id}

    @app.post("/fast")
    async def fast() -> dict[str, str]:  # answered by the middleware; listed for its template
        return {}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internals")

    # Added after the app is made, as services add theirs: still inside the metrics.
    app.add_middleware(AnswerBeforeRouting)
    return app


def count(route: str, status_class: str, method: str = "GET") -> float:
    labels = {"service": SERVICE, "method": method, "route": route, "status_class": status_class}
    return REGISTRY.get_sample_value("hazard_http_requests_total", labels) or 0.0


def duration_count(route: str, status_class: str, method: str = "GET") -> float:
    labels = {"service": SERVICE, "method": method, "route": route, "status_class": status_class}
    return REGISTRY.get_sample_value("hazard_http_request_duration_seconds_count", labels) or 0.0


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines written so far through the services' log handler."""
    stream = io.StringIO()
    handler = make_handler(SERVICE, json=True)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # uvicorn's loggers as a service process has them (shared.runner: log_config=None). A test that
    # served an app with uvicorn's default config earlier in the session left them on a handler of
    # their own, not propagating, at its log level.
    uvicorn_loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    saved = [(lg.level, lg.propagate, lg.handlers[:]) for lg in uvicorn_loggers]
    for lg in uvicorn_loggers:
        lg.setLevel(logging.NOTSET)
        lg.propagate = True
        lg.handlers.clear()
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for lg, (level, propagate, handlers) in zip(uvicorn_loggers, saved, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate
            lg.handlers[:] = handlers


async def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )


async def test_requests_are_counted_by_route_template_and_status_class() -> None:
    app = make_app()
    before = {
        "item": count("/items/{item_id}", "2xx"),
        "missing": count("/items/{item_id}", "4xx"),
        "unmatched": count("(unmatched)", "4xx"),
        "boom": count("/boom", "5xx"),
        "fast": count("/fast", "2xx", "POST"),
        "wrong_method": count("/boom", "4xx", "OTHER"),
        "timed": duration_count("/items/{item_id}", "2xx"),
    }
    async with await _client(app) as client:
        assert (await client.get("/items/a")).status_code == 200
        assert (await client.get("/items/b")).status_code == 200
        assert (await client.get("/items/missing")).status_code == 404
        assert (await client.get("/nowhere/1")).status_code == 404
        assert (await client.get("/nowhere/2")).status_code == 404
        assert (await client.get("/boom")).status_code == 500
        assert (await client.post("/fast")).status_code == 201
        assert (await client.request("BREW", "/boom")).status_code == 405
    assert count("/items/{item_id}", "2xx") - before["item"] == 2
    assert count("/items/{item_id}", "4xx") - before["missing"] == 1
    assert count("(unmatched)", "4xx") - before["unmatched"] == 2
    assert count("/boom", "5xx") - before["boom"] == 1
    assert count("/fast", "2xx", "POST") - before["fast"] == 1
    assert count("/boom", "4xx", "OTHER") - before["wrong_method"] == 1
    assert duration_count("/items/{item_id}", "2xx") - before["timed"] == 2
    # Raw paths never become labels.
    routes = {
        s.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "hazard_http_requests"
        for s in metric.samples
        if s.labels.get("service") == SERVICE
    }
    assert routes <= {"/items/{item_id}", "(unmatched)", "/boom", "/fast"}


async def test_the_request_id_is_taken_or_made_returned_and_on_every_line(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    app = make_app()
    async with await _client(app) as client:
        given = await client.get(
            "/items/x", headers={"X-Request-ID": "abc-123", "Authorization": "Bearer s3cret"}
        )
        made = await client.get("/items/y")
        refused = await client.get("/items/z", headers={"X-Request-ID": "bad id\twith spaces"})
    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"])
    lines = log_lines()
    route_lines = [line for line in lines if line["logger"] == "unit.route"]
    assert [(line["message"], line["request_id"]) for line in route_lines] == [
        ("looking at x", "abc-123"),
        ("looking at y", made.headers["x-request-id"]),
        ("looking at z", refused.headers["x-request-id"]),
    ]
    access = [line for line in lines if line["logger"] == "hazard.access"]
    assert [(line["request_id"], line["status"], line["route"]) for line in access] == [
        ("abc-123", 200, "/items/{item_id}"),
        (made.headers["x-request-id"], 200, "/items/{item_id}"),
        (refused.headers["x-request-id"], 200, "/items/{item_id}"),
    ]
    assert access[0]["path"] == "/items/x"
    assert isinstance(access[0]["duration_ms"], float)
    everything = "\n".join(json.dumps(line) for line in lines)
    assert "s3cret" not in everything
    assert "authorization" not in everything.lower()


async def test_log_lines_have_iso_utc_times_and_no_colour(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    logger = logging.getLogger("uvicorn.error")
    logger.info(
        "Uvicorn running on %s (Press CTRL+C to quit)",
        "\x1b[1mhttp://127.0.0.1:8101\x1b[0m",
        extra={"color_message": "Uvicorn running on \x1b[1m%s\x1b[0m"},
    )
    logging.getLogger("unit.colour").warning("\x1b[31mred\x1b[0m alert")
    [uvicorn_line, colour_line] = log_lines()
    assert ISO_UTC.match(uvicorn_line["ts"]), uvicorn_line["ts"]
    assert "color_message" not in uvicorn_line
    assert uvicorn_line["message"] == "Uvicorn running on http://127.0.0.1:8101 (Press CTRL+C to quit)"
    assert colour_line["message"] == "red alert"
    assert colour_line["level"] == "WARNING"
    assert colour_line["service"] == SERVICE
    assert "request_id" not in colour_line  # outside a request: no empty id


async def test_lines_written_while_one_event_is_applied_carry_its_ids(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    event = SimpleNamespace(event_id=uuid.uuid4(), hazard_id=uuid.uuid4())
    logger = logging.getLogger("unit.consumer")
    with event_context(event):
        logger.warning("batch of 1 failed")
    logger.info("between batches")
    [inside, outside] = log_lines()
    assert (inside["event_id"], inside["hazard_id"]) == (str(event.event_id), str(event.hazard_id))
    assert "event_id" not in outside
    assert "hazard_id" not in outside


async def test_lines_written_while_each_event_is_applied_carry_its_ids_as_text(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    events = [SimpleNamespace(event_id=uuid.uuid4(), hazard_id=uuid.uuid4()) for _ in range(2)]
    logger = logging.getLogger("unit.consumer")
    for _event in each_event(events):
        logger.warning("applying")
    logger.info("after the batch")
    [first, second, after] = log_lines()
    for line, event in zip((first, second), events, strict=True):
        assert (line["event_id"], line["hazard_id"]) == (str(event.event_id), str(event.hazard_id))
    assert "event_id" not in after
    assert "hazard_id" not in after


async def test_a_request_left_unanswered_is_a_client_abort_not_a_server_error() -> None:
    async def leaves(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the client went away: nothing to answer (as intake's fast path does)

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("broken before answering")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        raise AssertionError(f"nothing should be sent: {message}")

    def openapi() -> dict[str, Any]:
        return {"paths": {"/api/v1/hazards": {"post": {}}}}

    scope = {"type": "http", "method": "POST", "path": "/api/v1/hazards", "headers": [], "query_string": b""}
    before = (count("/api/v1/hazards", "4xx", "POST"), count("/api/v1/hazards", "5xx", "POST"))
    await HttpObservability(leaves, service=SERVICE, openapi=openapi)(dict(scope), receive, send)
    with pytest.raises(RuntimeError):
        await HttpObservability(fails, service=SERVICE, openapi=openapi)(dict(scope), receive, send)
    after = (count("/api/v1/hazards", "4xx", "POST"), count("/api/v1/hazards", "5xx", "POST"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
