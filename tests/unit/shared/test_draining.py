"""A service told to drain (SIGUSR1 from the local runner) refuses requests but still answers operations."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace
from typing import Any

import httpx
from fastapi import FastAPI

from shared.errors import install_error_handlers
from shared.runner import serve
from shared.service import RefuseWhileDraining


def make_app(runtime: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RefuseWhileDraining, runtime=runtime)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/api/v1/hazards")
    async def report() -> dict[str, str]:
        return {"hazard_id": "h"}

    return app


async def test_requests_are_refused_with_503_while_draining_and_operations_still_answer() -> None:
    runtime = SimpleNamespace(draining=False)
    app = make_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.post("/api/v1/hazards")).status_code == 200
        runtime.draining = True
        refused = await client.post("/api/v1/hazards")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "draining"
        assert (await client.get("/readyz")).status_code == 200


def test_sigusr1_makes_the_served_runtime_stop_accepting(monkeypatch: Any) -> None:
    calls: list[str] = []
    runtime = SimpleNamespace(stop_accepting=lambda: calls.append("stop_accepting"))
    app = FastAPI()
    app.state.runtime = runtime
    settings = SimpleNamespace(
        http=SimpleNamespace(host="127.0.0.1", port=0), kafka=SimpleNamespace(graceful_timeout_s=1.0)
    )

    def fake_run(self: Any) -> None:  # instead of serving: the signal arrives while "serving"
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.getsignal(signal.SIGUSR1)
    monkeypatch.setattr("uvicorn.Server.run", fake_run)
    try:
        serve(app, settings, service="test")  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls == ["stop_accepting"]
