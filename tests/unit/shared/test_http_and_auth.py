"""Auth, the error shape and the body limit, on a small app built from the shared pieces."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from shared.auth import Principal, TokenRegistry, hash_token, load_token_file, require
from shared.errors import install_error_handlers
from shared.http import BodySizeLimit, RefuseNulInUrl
from shared.settings import AuthSettings, TokenEntry


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def make_app(max_bytes: int = 2048) -> FastAPI:
    app = FastAPI()
    app.state.tokens = TokenRegistry(
        [
            TokenEntry(token_sha256=hash_token("op-token"), principal="ops-1", role="operator"),
            TokenEntry(
                token_sha256=hash_token("gm-token"), principal="gm-1", role="reporter", grid_id="liuyue-01"
            ),
        ]
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    app.add_middleware(RefuseNulInUrl)

    @app.post("/ops")
    async def ops(body: Body, who: Principal = Depends(require("operator"))) -> dict[str, str]:
        return {"who": who.id, "name": body.name}

    @app.get("/boom")
    async def boom(who: Principal = Depends(require("operator", "reporter"))) -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
async def client():
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


async def test_missing_token_is_401_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/ops", json={"name": "x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_unknown_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/ops", json={"name": "x"}, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


async def test_wrong_role_is_403_naming_the_role_needed(client: httpx.AsyncClient) -> None:
    response = await client.post("/ops", json={"name": "x"}, headers={"Authorization": "Bearer gm-token"})
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "forbidden",
        "message": "This action needs the role operator; you are a reporter.",
        "details": [],
    }


async def test_right_role_passes_with_its_principal(client: httpx.AsyncClient) -> None:
    response = await client.post("/ops", json={"name": "x"}, headers={"Authorization": "Bearer op-token"})
    assert response.json() == {"who": "ops-1", "name": "x"}


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ops",
        content=b'{"name": ',
        headers={"Authorization": "Bearer op-token", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


async def test_unknown_field_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ops", json={"name": "x", "colour": "red"}, headers={"Authorization": "Bearer op-token"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "colour", "problem": "Extra inputs are not permitted", "type": "extra_forbidden"}
    ]


async def test_oversized_body_is_413_before_parsing(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/ops",
        content=b"x" * 5000,
        headers={"Authorization": "Bearer op-token", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post(
        "/ops",
        content=chunks(),
        headers={"Authorization": "Bearer op-token", "content-type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize("url", ["/boom?department_id=a%00b", "/bo%00om"])
async def test_a_nul_character_in_the_url_is_422_before_the_route_runs(
    client: httpx.AsyncClient, url: str
) -> None:
    # PostgreSQL text cannot hold NUL: such a filter used to reach the database and answer 500.
    response = await client.get(url, headers={"Authorization": "Bearer op-token"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert response.json()["error"]["details"] == [
        {"field": "(url)", "problem": "must not contain NUL characters"}
    ]


async def test_unexpected_error_is_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"Authorization": "Bearer op-token"})
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert response.json()["error"]["code"] == "internal"


def test_token_file_holds_hashes_and_reporter_needs_a_grid(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"- token_sha256: {hash_token('t1')}\n  principal: gm-9\n  role: reporter\n")
    with pytest.raises(ValueError, match="must be bound to a grid_id"):
        TokenRegistry.from_settings(AuthSettings(tokens_file=path))
    path.write_text(
        f"- token_sha256: {hash_token('t1')}\n  principal: gm-9\n  role: reporter\n  grid_id: g1\n"
    )
    registry = TokenRegistry.from_settings(AuthSettings(tokens_file=path))
    assert registry.authenticate("t1") == Principal("gm-9", "reporter", "g1", None)
    assert registry.authenticate("t2") is None


def test_a_reporter_token_may_name_its_reporter_type(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    entry = f"- token_sha256: {hash_token('t1')}\n  principal: bm-3\n  role: reporter\n  grid_id: g1\n"
    path.write_text(entry + "  reporter_type: building_manager\n")
    registry = TokenRegistry.from_settings(AuthSettings(tokens_file=path))
    assert registry.authenticate("t1") == Principal("bm-3", "reporter", "g1", None, "building_manager")
    path.write_text(entry + "  reporter_type: astronaut\n")
    with pytest.raises(ValueError, match="reporter_type"):
        load_token_file(path)


def test_plain_token_in_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("- token_sha256: my-plain-token\n  principal: x\n  role: operator\n")
    with pytest.raises(ValueError, match="token_sha256"):
        load_token_file(path)
