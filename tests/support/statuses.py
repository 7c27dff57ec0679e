"""Which statuses each route answered during the test run, and whether its OpenAPI document lists them.

A pytest plugin (registered in ``tests/conftest.py``): every answer of a service app running in
the test process (the integration tests' in-process apps) is recorded through
:attr:`shared.httpmetrics.HttpObservability.observers` with its route template and status, and
looked up in that app's own OpenAPI document. ``tests/abuse/test_abuse_openapi.py::
test_every_observed_status_is_documented`` runs last and fails on any status a route gave that
its document does not list. (The fuzzing of the service processes checks each of its answers
against the operation it fuzzes, in the same file.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.httpmetrics import CLIENT_CLOSED, UNMATCHED, HttpObservability

# The services of this repository (each has services/<name>/app.py); other apps are tests' own.
SERVICE_NAMES = frozenset(
    p.parent.name for p in (Path(__file__).resolve().parents[2] / "services").glob("*/app.py")
)

LAST = "test_every_observed_status_is_documented"

# (service, method, route, status) -> times seen, and the ones the document does not list.
observed: dict[tuple[str, str, str, int], int] = {}
undocumented: set[tuple[str, str, str, int]] = set()


def documented_statuses(document: dict[str, Any], method: str, route: str) -> set[int] | None:
    """The statuses the document lists for an operation, None when it documents no such operation."""
    operation = document.get("paths", {}).get(route, {}).get(method.lower())
    if operation is None:
        return None
    return {int(s) for s in operation.get("responses", {}) if s.isdigit()}


def record(service: str, openapi: Callable[[], dict[str, Any]], method: str, route: str, status: int) -> None:
    if service not in SERVICE_NAMES or status == CLIENT_CLOSED:
        return  # a test's own small app; a request the client left before any answer
    key = (service, method, route, status)
    if key in observed:
        observed[key] += 1
        return
    observed[key] = 1
    if route == UNMATCHED or method in ("HEAD", "OPTIONS"):
        return
    statuses = documented_statuses(openapi(), method, route)
    # No such operation in the document: the 405 of a known path, or an undocumented route
    # (/docs, /openapi.json); the schema tests see those.
    if statuses is not None and status not in statuses:
        undocumented.add(key)


def pytest_configure(config: pytest.Config) -> None:
    if record not in HttpObservability.observers:
        HttpObservability.observers.append(record)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The check runs after every other test, when all answers are in."""
    last = [item for item in items if item.name == LAST]
    for item in last:
        items.remove(item)
    items.extend(last)
