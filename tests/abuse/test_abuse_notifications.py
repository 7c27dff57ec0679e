"""The notifications service under the abuse suite's checks: fuzzed from its OpenAPI, tokens refused.

It runs as a process of its own beside PostgreSQL and the broker (the other services are not
needed to fuzz its API).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.abuse.checks import EXAMPLES
from tests.abuse.test_abuse_openapi import fuzz_service
from tests.support.system import System

pytestmark = pytest.mark.integration

KEY = "Wg1aAWgxp0Y4Z3C0PnQhz5b9o2uOJQp4TeQ1RyVPZlU="


@pytest.fixture(scope="module")
def notifications_system() -> Iterator[System]:
    with System(services=("notifications",), service_env={"notifications": {"SECRET_KEY": KEY}}) as running:
        yield running


def test_fuzzed_notifications_requests_never_get_a_server_error_and_errors_have_the_shape(
    notifications_system: System,
) -> None:
    calls, problems = fuzz_service(notifications_system, "notifications", examples=EXAMPLES)
    assert calls > 0
    assert problems == [], "\n".join(problems)
    assert httpx.get(notifications_system.url("notifications") + "/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/subscriptions"),
        ("POST", "/api/v1/subscriptions"),
        ("DELETE", "/api/v1/subscriptions/00000000-0000-0000-0000-000000000000"),
        ("GET", "/api/v1/deliveries"),
    ],
)
def test_notifications_routes_refuse_missing_bad_and_non_bearer_tokens(
    notifications_system: System, method: str, path: str
) -> None:
    url = notifications_system.url("notifications") + path
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = httpx.request(
            method, url, headers=headers, json={} if method == "POST" else None, timeout=10
        )
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.json()["error"]["code"] == "unauthenticated"
