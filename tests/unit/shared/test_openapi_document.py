"""The OpenAPI documents: the bearer scheme, and the error shape for every status a route can give.

``shared.openapi`` completes each service's document from what the shared machinery makes a route
answer; here on a small app whose routes show each rule, and on the four services' documents.
Whether the statuses the tests observe are all documented: tests/abuse/test_abuse_openapi.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from shared.auth import Principal, authenticate, require
from shared.openapi import error_responses, install_openapi
from tests.unit.shared.test_openapi_parameters import APPS


class Body(BaseModel):
    note: str


def small_app() -> FastAPI:
    app = FastAPI()
    install_openapi(app)

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {}

    @app.get("/mine/{item_id}")
    async def mine(item_id: uuid.UUID, principal: Principal = Depends(authenticate)) -> dict[str, str]:
        return {}

    @app.post("/things", responses=error_responses(409, s409="Already there"))
    async def things(
        body: Body, principal: Annotated[Principal, Depends(require("operator"))]
    ) -> dict[str, str]:
        return {}

    return app


def statuses(document: dict[str, Any], method: str, path: str) -> list[str]:
    return sorted(document["paths"][path][method]["responses"])


def test_each_rule_adds_the_statuses_its_machinery_can_answer() -> None:
    document = small_app().openapi()
    assert statuses(document, "get", "/public") == ["200", "422", "500", "503"]
    # A caller needed (bare authenticate: no role check), and a path parameter.
    assert statuses(document, "get", "/mine/{item_id}") == ["200", "401", "404", "422", "500", "503"]
    # A role check and a JSON body, plus the route's own 409.
    assert statuses(document, "post", "/things") == [
        "200",
        "400",
        "401",
        "403",
        "409",
        "413",
        "422",
        "500",
        "503",
    ]
    things = document["paths"]["/things"]["post"]
    assert things["responses"]["409"]["description"] == "Already there"
    assert things["security"] == [{"bearer": []}]
    assert "security" not in document["paths"]["/public"]["get"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_error_answer_has_the_error_shape_and_fastapis_validation_shape_is_gone() -> None:
    document = small_app().openapi()
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"
                    }
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    error = schemas["ErrorInfo"]
    assert set(error["required"]) == {"code", "message"}
    assert schemas["ErrorBody"]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorInfo"}


@pytest.mark.parametrize("service", sorted(APPS))
def test_every_service_document_is_complete(service: str) -> None:
    document = APPS[service]().openapi()
    paths = document["paths"]
    # Readiness answers 503 in its own shape; health and metrics stay up while draining.
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "ErrorBody" not in str(paths["/readyz"]["get"]["responses"]["503"])
    assert "503" not in paths["/healthz"]["get"]["responses"]
    secured = [
        (path, method) for path, ops in paths.items() for method, op in ops.items() if "security" in op
    ]
    assert secured, service
    for path, method in secured:
        assert "401" in paths[path][method]["responses"], (path, method)
    for path, ops in paths.items():
        for method, op in ops.items():
            if "{" in path:
                assert "404" in op["responses"], (path, method)
            if "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"]), (path, method)
    if service == "intake":
        assert "429" in paths["/api/v1/hazards"]["post"]["responses"]


@pytest.mark.parametrize("service", sorted(APPS))
def test_every_success_answer_is_described(service: str) -> None:
    """Each 2xx answer names its media type, and a JSON one its schema (no bare "any object")."""
    document = APPS[service]().openapi()
    undescribed = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                content = answer.get("content") or {}
                if not content:
                    undescribed.append((method, path, status, "no media type"))
                for media_type, body in content.items():
                    if "json" in media_type and not body.get("schema"):
                        undescribed.append((method, path, status, media_type))
    assert undescribed == []
