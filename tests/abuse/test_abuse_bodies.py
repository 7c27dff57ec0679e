"""Hostile request bodies on every POST route: oversized, streamed oversized, malformed JSON and form data.

Each POST operation from each service's OpenAPI schema gets the bodies below, as every role
(so the body is read past authentication). No answer may be a 5xx; every 4xx carries the
error shape; oversized bodies are refused with 413 before they are read whole; and every
service is still ready afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.abuse.checks import error_shape_problem
from tests.support.system import SERVICES, System

pytestmark = pytest.mark.integration

OVERSIZED = 6 * 1024 * 1024  # above http.max_body_bytes (1 MiB) and intake's batch limit (4 MiB)

MALFORMED: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"reason": "not our', "application/json"),
    ("not JSON at all", b"<xml>hello</xml>", "application/json"),
    ("JSON of the wrong type", b'["a", 1, null]', "application/json"),
    (
        "wrong field types",
        b'{"reason": 12, "passed": "yes", "department_id": [], "reports": {}}',
        "application/json",
    ),
    ("invalid UTF-8", b'{"reason": "\xff\xfe\xfd"}', "application/json"),
    (
        "NaN and huge numbers",
        b'{"lat": NaN, "lon": 1e999999, "passed": 1' + b"0" * 5000 + b"}",
        "application/json",
    ),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (
        "form data to a JSON route",
        b"reason=x&passed=true&service_code=%ff%fe",
        "application/x-www-form-urlencoded",
    ),
    (
        "broken multipart",
        b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n',
        "multipart/form-data; boundary=xyz",
    ),
    ("empty body", b"", "application/json"),
    ("null bytes", b'{"reason": "a\x00b", "note": "\x00"}', "application/json"),
]


def concrete(path: str) -> str:
    """Fill path parameters: a format with ``json``, anything else with a well-formed id."""
    return re.sub(
        r"\{(\w+)\}", lambda m: "json" if m.group(1) in ("fmt", "format") else str(uuid.uuid4()), path
    )


def _post_operations(system: System, service: str) -> list[str]:
    spec = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
    return [concrete(path) for path, methods in spec["paths"].items() if "post" in methods]


def _roles(system: System) -> list[dict[str, str]]:
    return [
        system.headers("reporter", grid_id="huale-02"),
        system.headers("department", department_id="fire"),
        system.headers("operator"),
        system.headers("supervisor"),
    ]


def _check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        problem = error_shape_problem(
            response.status_code,
            response.headers.get("content-type", ""),
            response.content,
            open311=response.request.url.path.startswith("/open311"),
        )
        assert problem is None, f"{what}: {problem}"


@pytest.mark.parametrize("service", SERVICES)
def test_oversized_bodies_are_refused_with_413(system: System, service: str) -> None:
    paths = _post_operations(system, service)
    if not paths:
        pytest.skip(f"{service} has no POST routes")
    big = b'{"reports": [' + b" " * OVERSIZED + b"]}"

    def stream() -> Iterator[bytes]:
        chunk = b" " * 65536
        yield b'{"note": "'
        for _ in range(OVERSIZED // len(chunk)):
            yield chunk
        yield b'"}'

    with httpx.Client(timeout=60) as client:
        for path in paths:
            url = system.url(service) + path
            headers = {**system.headers("supervisor"), "content-type": "application/json"}
            declared = client.post(url, content=big, headers=headers)
            _check(declared, f"POST {path} with {len(big)} bytes")
            assert declared.status_code == 413, (path, declared.status_code, declared.text[:200])
            try:
                streamed = client.post(url, content=stream(), headers=headers)
            except httpx.RemoteProtocolError:
                # The server may answer 413 and close while we are still sending: refused either way.
                continue
            _check(streamed, f"POST {path} streamed without Content-Length")
            # A route may refuse the caller before it reads any body; it must never accept one.
            assert 400 <= streamed.status_code < 500, (path, streamed.status_code, streamed.text[:200])


@pytest.mark.parametrize("service", SERVICES)
def test_malformed_json_and_form_bodies_get_a_4xx_with_the_error_shape(system: System, service: str) -> None:
    paths = _post_operations(system, service)
    if not paths:
        pytest.skip(f"{service} has no POST routes")
    with httpx.Client(timeout=60) as client:
        for path in paths:
            for headers in _roles(system):
                for name, body, content_type in MALFORMED:
                    response = client.post(
                        system.url(service) + path,
                        content=body,
                        headers={**headers, "content-type": content_type},
                    )
                    _check(response, f"POST {path} with {name}")
    for name in SERVICES:
        assert httpx.get(system.url(name) + "/readyz", timeout=10).status_code == 200, (
            f"{name} not ready afterwards"
        )


@pytest.mark.parametrize(
    ("service", "path", "role", "scope"),
    [
        ("intake", "/api/v1/hazards", "reporter", {"grid_id": "huale-03"}),
        ("intake", "/api/v1/hazards/batch", "reporter", {"grid_id": "huale-03"}),
        ("tracking", "/api/v1/hazards/{id}/rectification", "department", {"department_id": "fire"}),
        ("tracking", "/api/v1/hazards/{id}/verification", "reporter", {"grid_id": "huale-03"}),
    ],
)
def test_a_streamed_body_that_grows_too_large_is_cut_off_with_413(
    system: System, service: str, path: str, role: str, scope: dict[str, str]
) -> None:
    """The caller may post here, so the body is read: the size limit must stop it while streaming."""

    def stream() -> Iterator[bytes]:
        chunk = b" " * 65536
        yield b'{"note": "'
        for _ in range(OVERSIZED // len(chunk)):
            yield chunk
        yield b'"}'

    url = system.url(service) + concrete(path)
    headers = {**system.headers(role, **scope), "content-type": "application/json"}
    try:
        response = httpx.post(url, content=stream(), headers=headers, timeout=60)
    except httpx.RemoteProtocolError:
        return  # answered and closed mid-upload: nothing was accepted
    _check(response, f"POST {path} streamed")
    assert response.status_code == 413, (response.status_code, response.text[:200])


# Query values the long fuzzing run found answered with 500: PostgreSQL text cannot hold NUL, an
# integer beyond 64 bits cannot be a statement's parameter, and days at the ends of the calendar
# overflowed the default period and the comparison periods.
HOSTILE_QUERY: dict[str, list[str]] = {
    "string": ["a\x00b", "\x00"],
    "integer": [str(2**70), str(-(2**70))],
    "date": ["0001-01-01", "0001-01-05", "9999-12-31"],
    # Open311's start_date/end_date: an offset past the calendar's ends answered 500 (#14).
    "date-time": ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00", "0001-01-01", "9999-12-31"],
}


def _get_query_parameters(system: System, service: str) -> list[tuple[str, str, str]]:
    """(path, query parameter, its JSON-schema type) of every GET operation that takes a query."""
    spec = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
    found = []
    for path, methods in spec["paths"].items():
        for parameter in methods.get("get", {}).get("parameters", []):
            if parameter.get("in") != "query":
                continue
            schema = parameter.get("schema", {})
            variants = [schema, *schema.get("anyOf", [])]
            kinds = {v.get("format") if v.get("format") in HOSTILE_QUERY else v.get("type") for v in variants}
            for kind in HOSTILE_QUERY.keys() & kinds:
                found.append((concrete(path), parameter["name"], kind))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_nul_characters_and_huge_integers_in_query_parameters_get_a_4xx(system: System, service: str) -> None:
    parameters = _get_query_parameters(system, service)
    if not parameters:
        pytest.skip(f"{service} has no GET routes with query parameters")
    with httpx.Client(timeout=60) as client:
        for path, name, kind in parameters:
            for headers in _roles(system):
                for value in HOSTILE_QUERY[kind]:
                    response = client.get(system.url(service) + path, params={name: value}, headers=headers)
                    _check(response, f"GET {path}?{name}={value[:12]!r}")
