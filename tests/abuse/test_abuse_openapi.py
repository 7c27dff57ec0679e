"""Every HTTP operation of every service, fuzzed from its own OpenAPI schema (schemathesis + hypothesis).

Valid and invalid requests (positive and negative generation) go to the real service
processes, each with a caller drawn from: no token, a wrong token, a reporter, a department,
an operator and a supervisor. Every write route also gets valid bodies with ``\u0000`` or
``\ud800`` (JSON escapes) put into every string: text PostgreSQL cannot hold (#14). Every
answer must be below 500, and every 4xx must carry the API's error shape. All failures are
collected and reported together.

Every answer's status must also be one the operation documents (``shared/openapi.py`` completes
each document), and :func:`test_every_observed_status_is_documented`, run last, checks the same
for every answer the in-process apps of the whole test run gave (``tests/support/statuses.py``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.abuse.checks import EXAMPLES, response_problem
from tests.support import statuses
from tests.support.system import SERVICES, System

pytestmark = pytest.mark.integration

# Operations whose fuzzing tells nothing or waits on purpose (the dashboard page is static).
SKIPPED = {("GET", "/")}


def _callers(system: System) -> list[tuple[str, dict[str, str]]]:
    return [
        ("anonymous", {}),
        ("bad token", {"Authorization": "Bearer not-a-real-token"}),
        ("not bearer", {"Authorization": "Basic dXNlcjpwYXNz"}),
        ("reporter", system.headers("reporter", grid_id="liuyue-01")),
        ("department", system.headers("department", department_id="fire")),
        ("operator", system.headers("operator")),
        ("supervisor", system.headers("supervisor")),
    ]


# Characters a JSON body may carry as escapes but PostgreSQL text cannot store.
UNSTORABLE = {"NUL": "\x00", "surrogate": "\ud800"}


def with_unstorable(value: Any, bad: str) -> tuple[Any, int]:
    """``value`` with ``bad`` inside every string of it (keys stay), and how many strings it spoiled."""
    if isinstance(value, str):
        return value[:1] + bad + value[1:], 1
    if isinstance(value, list):
        items = [with_unstorable(item, bad) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        pairs = {key: with_unstorable(item, bad) for key, item in value.items()}
        return {key: item for key, (item, _) in pairs.items()}, sum(n for _, n in pairs.values())
    return value, 0


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    *,
    base: str,
    callers: list[tuple[str, dict[str, str]]],
    examples: int,
    spoil: str | None = None,
) -> tuple[int, list[str]]:
    """Run hypothesis over one operation in one generation mode; return (requests made, problems).

    ``spoil``: a name in :data:`UNSTORABLE`; each request made has it in at least one body string.
    """
    found: list[str] = []
    calls = 0

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode), caller=st.sampled_from(callers))
    def run(case: Any, caller: tuple[str, dict[str, str]]) -> None:
        nonlocal calls
        who, headers = caller
        if spoil is not None:
            body, spoiled = with_unstorable(case.body, UNSTORABLE[spoil])
            if not spoiled:
                return
            case.body = json.dumps(body).encode()  # as \u0000 / \ud800 escapes, as clients send them
        try:
            response = case.call(base_url=base, headers=headers, timeout=30)
        except Exception as exc:  # a dropped connection is as bad as a 500
            found.append(f"{case.method} {case.formatted_path} as {who}: {type(exc).__name__}: {exc}")
            return
        calls += 1
        problem = response_problem(response, path=operation.path)
        documented = operation.definition.raw.get("responses", {})
        if not problem and str(response.status_code) not in documented:
            problem = f"answered {response.status_code}, which the operation does not document ({', '.join(documented)})"
        if problem and len(found) < 3:
            label = mode.value if spoil is None else f"{mode.value}, {spoil} in the body"
            found.append(f"{case.method} {case.formatted_path} as {who} ({label}): {problem}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to get wrong: an operation without parameters or body has no invalid form.
        assert mode is GenerationMode.NEGATIVE, operation.label
    return calls, found


def fuzz_service(system: System, service: str, *, examples: int) -> tuple[int, list[str]]:
    """Fuzz every operation of one service; return (requests made, problems found)."""
    base = system.url(service)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    callers = _callers(system)
    problems: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"{service} publishes no operations"
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            made, found = _fuzz_operation(operation, mode, base=base, callers=callers, examples=examples)
            calls += made
            problems.extend(found)
        if operation.method.upper() != "POST" or operation.path.startswith("/open311/"):
            continue  # Open311's POST is a form (its NUL: tests/abuse/test_abuse_text.py)
        for spoil in UNSTORABLE:
            made, found = _fuzz_operation(
                operation, GenerationMode.POSITIVE, base=base, callers=callers, examples=examples, spoil=spoil
            )
            # Every write route with a JSON body (all hold text) must have been sent the escapes.
            assert made > 0 or "requestBody" not in operation.definition.raw, (operation.label, spoil)
            calls += made
            problems.extend(found)
    return calls, problems


@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_never_get_a_server_error_and_errors_have_the_shape(
    system: System, service: str
) -> None:
    calls, problems = fuzz_service(system, service, examples=EXAMPLES)
    assert calls > 0
    assert problems == [], "\n".join(problems)
    assert httpx.get(system.url(service) + "/readyz", timeout=10).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_at_length(system: System, service: str) -> None:
    calls, problems = fuzz_service(system, service, examples=EXAMPLES * 15)
    assert calls > 0
    assert problems == [], "\n".join(problems)


def test_documents_have_the_bearer_scheme_and_the_error_shape(system: System) -> None:
    """Swagger UI can send a token, and no error is documented in FastAPI's validation shape."""
    for service in SERVICES:
        document = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
        schemes = document["components"]["securitySchemes"]
        assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}, service
        assert "HTTPValidationError" not in document["components"]["schemas"], service
        secured = 0
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert "422" in responses, (service, method, path)
                for status, response in responses.items():
                    if int(status) >= 400 and path != "/readyz":
                        schema = json.dumps(response["content"]["application/json"]["schema"])
                        assert "ErrorBody" in schema, (service, method, path, status)
                if "security" in operation:
                    secured += 1
                    assert "401" in responses, (service, method, path)
        assert secured > 0, service


def test_every_observed_status_is_documented() -> None:
    """Run last (tests/support/statuses.py): each status an app answered is in its route's document."""
    if not statuses.observed:
        pytest.skip("no in-process app answered in this run: run it with the integration tests")
    missing = sorted(statuses.undocumented)
    assert missing == [], "\n".join(
        f"{service} {method} {route} answered {status}, undocumented"
        for service, method, route, status in missing
    )
