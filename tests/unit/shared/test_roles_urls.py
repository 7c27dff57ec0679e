"""Service roles' names, URLs and passwords (shared.roles), without a database."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from shared.roles import passwords_from_env, role_url, service_role


def test_a_role_url_keeps_the_server_and_database_and_quotes_the_password() -> None:
    url = role_url("postgresql+asyncpg://hazard:owner@db.internal:5433/hazard", "tracking", "p@ss:w/rd")
    parsed = make_url(url)
    assert (parsed.drivername, parsed.host, parsed.port, parsed.database) == (
        "postgresql+asyncpg",
        "db.internal",
        5433,
        "hazard",
    )
    assert parsed.username == "hazard_tracking"
    assert parsed.password == "p@ss:w/rd"
    assert make_url(role_url("postgresql+asyncpg://hazard@127.0.0.1:1/hazard", "intake")).password is None


def test_only_the_four_services_have_roles() -> None:
    assert service_role("reporting") == "hazard_reporting"
    with pytest.raises(ValueError, match="unknown service"):
        service_role("public")


def test_passwords_come_from_the_environment_and_empty_ones_are_left_out() -> None:
    env = {"HAZARD_INTAKE_DB_PASSWORD": "a", "HAZARD_DISPATCH_DB_PASSWORD": "", "OTHER": "x"}
    assert passwords_from_env(env) == {"intake": "a"}
