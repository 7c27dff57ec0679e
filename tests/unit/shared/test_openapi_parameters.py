"""Every query parameter a route reads is in its service's OpenAPI document, so fuzzers try it too.

Open311's GET requests read ``start_date``/``end_date`` from ``request.query_params`` without
declaring them: the schema fuzzing never sent year 1 or 9999, which answered 500. Here each
route of each service is checked: the parameters FastAPI resolves for it, and the names its
code reads from ``request.query_params`` (found in its source), must all be documented.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from services.dispatch.app import create_app as dispatch_app
from services.dispatch.settings import DispatchSettings
from services.intake.app import create_app as intake_app
from services.intake.settings import IntakeSettings
from services.notifications.app import create_app as notifications_app
from services.notifications.settings import NotificationsSettings
from services.reporting.app import create_app as reporting_app
from services.reporting.settings import ReportingSettings
from services.tracking.app import create_app as tracking_app
from services.tracking.settings import TrackingSettings
from shared.reference import load_reference_data

# Nothing connects while an app is built: these addresses are never dialled.
NOWHERE: dict[str, Any] = {
    "database": {"url": "postgresql://nobody:nothing@127.0.0.1:9/none"},
    "kafka": {"bootstrap_servers": "127.0.0.1:9"},
    "http": {"port": 0},
}
APPS: dict[str, Callable[[], FastAPI]] = {
    "intake": lambda: intake_app(IntakeSettings(**NOWHERE), reference=load_reference_data()),
    "dispatch": lambda: dispatch_app(DispatchSettings(**NOWHERE), reference=load_reference_data()),
    "tracking": lambda: tracking_app(TrackingSettings(**NOWHERE), reference=load_reference_data()),
    "reporting": lambda: reporting_app(ReportingSettings(**NOWHERE), reference=load_reference_data()),
    "notifications": lambda: notifications_app(
        NotificationsSettings(**NOWHERE, secret_key="Wg1aAWgxp0Y4Z3C0PnQhz5b9o2uOJQp4TeQ1RyVPZlU="),
        reference=load_reference_data(),
    ),
}
UNNAMED = "(a read whose name the source does not say)"


def query_reads(function: Callable[..., Any]) -> set[str]:
    """The query parameter names a function reads from ``<request>.query_params`` (nested functions
    included), directly or through a name bound to it; :data:`UNNAMED` for any other use."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    aliases = {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "query_params"
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def is_params(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "query_params") or (
            isinstance(node, ast.Name) and node.id in aliases and isinstance(node.ctx, ast.Load)
        )

    reads: set[str] = set()
    named: set[int] = set()  # the params nodes whose read names a parameter
    for node in ast.walk(tree):
        key: ast.AST | None = None
        base: ast.AST | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "getlist") and is_params(node.func.value):
                key, base = node.args[0], node.func.value
        elif isinstance(node, ast.Subscript) and is_params(node.value):
            key, base = node.slice, node.value
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and is_params(node.comparators[0])
        ):
            key, base = node.left, node.comparators[0]
        if base is not None and isinstance(key, ast.Constant) and isinstance(key.value, str):
            reads.add(key.value)
            named.add(id(base))
    bound = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign) and is_params(node.value)
    }
    for node in ast.walk(tree):
        if is_params(node) and id(node) not in named and id(node) not in bound:
            reads.add(UNNAMED)
    return reads


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, those of included routers too (FastAPI keeps those behind a wrapper)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif isinstance(included := getattr(route, "original_router", None), APIRouter):
            yield from api_routes(included.routes)


def declared(dependant: Dependant) -> set[str]:
    """The query parameters FastAPI resolves for a route, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= declared(sub)
    return names


def documented(app: FastAPI, route: APIRoute) -> set[str]:
    """The query parameters the OpenAPI document gives for a route (every method of it)."""
    if not route.include_in_schema:
        return set()
    operations = app.openapi()["paths"][route.path_format]
    return {
        parameter["name"]
        for method in route.methods
        for parameter in operations[method.lower()].get("parameters", [])
        if parameter["in"] == "query"
    }


def _old_open311_listing(request: Request) -> None:
    """How Open311's GET requests read its filters before they were declared (the scanner's witness)."""
    params = request.query_params
    params.get("service_request_id")
    _ = params["status"], "service_code" in request.query_params
    request.query_params.getlist("start_date")
    dict(request.query_params)


def test_the_scanner_finds_every_read_of_query_params() -> None:
    assert query_reads(_old_open311_listing) == {
        "service_request_id",
        "status",
        "service_code",
        "start_date",
        UNNAMED,
    }


@pytest.mark.parametrize("service", list(APPS))
def test_every_query_parameter_a_route_reads_is_in_its_openapi_document(service: str) -> None:
    app = APPS[service]()
    routes = list(api_routes(app.routes))
    paths = app.openapi()["paths"]
    assert {r.path_format for r in routes if r.include_in_schema} == set(paths), "a route was not found"
    undocumented: dict[str, set[str]] = {}
    for route in routes:
        missing = (declared(route.dependant) | query_reads(route.endpoint)) - documented(app, route)
        if missing:
            undocumented[f"{sorted(route.methods)} {route.path}"] = missing
    assert undocumented == {}
