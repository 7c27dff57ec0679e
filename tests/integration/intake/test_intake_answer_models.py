"""Every intake route's declared success model describes exactly what it answers (#15).

Real answers are validated against the routes' response models, which forbid unknown fields:
a field answered but not declared, or declared but missing, or null where the model says it
never is, fails here. The OpenAPI document must name a success schema for every route.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel, TypeAdapter

from services.intake import api, history_api, open311, photo_api
from shared.auth import hash_token
from tests.integration.intake.intake_helpers import LAT, LON, TOKENS, AppFactory, auth, report

pytestmark = pytest.mark.integration

TEMPLATE = Path(__file__).parents[3] / "docs" / "history-import" / "history-import-template.csv"
SHOWN: dict[str, Any] = {
    "outbox": {"enabled": False},
    "broker": False,
    "open311": {"show_photos": True, "show_address": True, "rate_limit": {"enabled": False}},
}


def _fits(model: Any, payload: Any) -> None:
    TypeAdapter(model).validate_python(payload)


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


async def test_answers_match_their_declared_models(intake_app: AppFactory) -> None:
    async with intake_app(**SHOWN) as (app, client):
        photo = await client.post(
            "/api/v1/photos", files={"file": ("a.jpg", _jpeg(), "image/jpeg")}, headers=auth("tok-gm1")
        )
        assert photo.status_code == 201, photo.text
        _fits(photo_api.PhotoOut, photo.json())

        single = report(photos=[photo.json()["url"]], location={"building_id": "B-7"})
        created = await client.post(api.SINGLE_PATH, json=single, headers=auth("tok-gm1"))
        assert created.status_code == 201, created.text
        _fits(api.HazardAnswer, created.json())
        duplicate = await client.post(
            api.SINGLE_PATH, json=report(location={"building_id": "B-7"}), headers=auth("tok-gm1")
        )
        assert duplicate.json()["duplicate_of"] is not None
        _fits(api.HazardAnswer, duplicate.json())
        replayed = await client.post(api.SINGLE_PATH, json=single, headers=auth("tok-gm1"))
        assert replayed.status_code == 200
        _fits(api.HazardAnswer, replayed.json())

        batch = await client.post(
            api.BATCH_PATH,
            json={"reports": [report(), report(grid_id="liuyue-02"), {"x": 1}, single]},
            headers=auth("tok-gm1"),
        )
        assert [r["outcome"] for r in batch.json()["results"]] == [
            "created",
            "rejected",
            "rejected",
            "replayed",
        ]
        _fits(api.BatchAnswer, batch.json())

        for fmt in ("json",):
            discovery = await client.get(f"/open311/discovery.{fmt}")
            _fits(open311.DiscoveryOut, discovery.json())
            services = await client.get(f"/open311/v2/services.{fmt}")
            _fits(list[open311.ServiceOut], services.json())
            definition = await client.get("/open311/v2/services/gas_leak.json")
            _fits(open311.ServiceDefinitionOut, definition.json())
            posted = await client.post(
                "/open311/v2/requests.json",
                data={"api_key": "tok-gm1", "service_code": "gas_leak", "lat": str(LAT), "long": str(LON)},
            )
            assert posted.status_code == 201, posted.text
            _fits(list[open311.PostedRequest], posted.json())
            listed = await client.get("/open311/v2/requests.json")
            assert len(listed.json()) >= 3
            _fits(list[open311.ServiceRequestOut], listed.json())
            one = await client.get(f"/open311/v2/requests/{created.json()['hazard_id']}.json")
            assert one.json()[0]["media_url"] is not None
            _fits(list[open311.ServiceRequestOut], one.json())

        undecided = await client.get("/api/v1/reconciliation/undecided", headers=auth("tok-supervisor"))
        assert undecided.status_code == 403  # operators only; the model is the route's return type

        document = app.openapi()
        ours = [p for p in document["paths"] if p.startswith(("/api/", "/open311/"))]
        assert len(ours) == 14  # requests.{fmt} holds the GET and the POST
        for path in ours:
            for method, operation in document["paths"][path].items():
                ok = operation["responses"].get("200") or operation["responses"].get("201")
                assert ok is not None, (method, path)
                assert ok.get("content"), (method, path)
                if not path.startswith(("/open311/v2/media", "/api/v1/photos/")):
                    assert "application/json" in ok["content"], (method, path)
                    assert ok["content"]["application/json"].get("schema"), (method, path)


async def test_the_history_import_answer_matches_its_model(intake_app: AppFactory) -> None:
    tokens = [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]
    tokens.append({"token_sha256": hash_token("tok-op"), "principal": "op-1", "role": "operator"})
    async with intake_app(outbox={"enabled": False}, broker=False, auth={"tokens": tokens}) as (_app, client):
        answer = await client.post(
            history_api.IMPORT_PATH,
            files={"file": ("history.csv", TEMPLATE.read_bytes(), "text/csv")},
            data={"on_error": "skip"},
            headers=auth("tok-op"),
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["imported"] == 3
        _fits(history_api.ImportOut, answer.json())


def test_the_models_forbid_unknown_fields() -> None:
    for model in (
        api.HazardAnswer,
        api.BatchAnswer,
        photo_api.PhotoOut,
        history_api.ImportOut,
        open311.ServiceRequestOut,
        open311.PostedRequest,
        open311.DiscoveryOut,
        open311.ServiceOut,
        open311.ServiceDefinitionOut,
    ):
        assert issubclass(model, BaseModel)
        assert model.model_config.get("extra") == "forbid", model
