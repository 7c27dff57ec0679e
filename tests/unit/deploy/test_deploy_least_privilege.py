"""Least privilege in the deployment files: each service has its own database role, the migrations run as
the schemas' owner (not the superuser), and compose publishes ports on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import make_url

from shared.roles import password_env, service_role
from tests.unit.deploy.deploy_files import (
    ROOT,
    SERVICES,
    compose_env,
    env_prefix,
    interpolate,
    k8s_container_env,
    k8s_object,
    load_compose,
    load_k8s,
)

# Every ${VAR} compose may ask the operator for, with a value (defaults of ${VAR:-x} stay defaults).
SECRETS = {
    "POSTGRES_PASSWORD": "su",
    "HAZARD_OWNER_PASSWORD": "owner",
    "GRAFANA_ADMIN_PASSWORD": "g",
    **{f"{service.upper()}_DB_PASSWORD": f"pw-{service}" for service in SERVICES},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _compose_user(compose: dict[str, Any], service: str, variable: str) -> str:
    url = make_url(interpolate(compose_env(compose["services"][service])[variable], SECRETS))
    assert url.username
    return url.username


def test_compose_services_connect_as_their_own_roles_and_migrations_as_the_owner(
    compose: dict[str, Any],
) -> None:
    owner = _compose_user(compose, "migrate", "HAZARD_DATABASE_URL")
    superuser = compose_env(compose["services"]["postgres"]).get("POSTGRES_USER", "postgres")
    users = {s: _compose_user(compose, s, f"{env_prefix(s)}DATABASE__URL") for s in SERVICES}
    assert owner != superuser, "the migrations run as the schemas' owner, not as the superuser"
    assert owner not in users.values(), f"a service connects as the owner {owner!r}: {users}"
    assert superuser not in users.values(), f"a service connects as the superuser: {users}"
    assert len(set(users.values())) == len(SERVICES), f"services share a database role: {users}"


def test_k8s_services_connect_as_their_own_roles_and_the_job_as_the_owner() -> None:
    docs = load_k8s()
    owner = make_url(
        k8s_object(docs, "Secret", "hazard-migrate")["stringData"]["HAZARD_DATABASE_URL"]
    ).username
    users = {}
    for service in SERVICES:
        container = k8s_object(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
        users[service] = make_url(
            k8s_container_env(docs, container)[f"{env_prefix(service)}DATABASE__URL"]
        ).username
    assert owner not in users.values(), f"a service connects as the owner {owner!r}: {users}"
    assert len(set(users.values())) == len(SERVICES), f"services share a database role: {users}"


def _host_ip(entry: Any) -> str:
    """The host address a compose port entry publishes on, with the defaults of its ${VAR:-x}."""
    if isinstance(entry, dict):
        return interpolate(str(entry.get("host_ip", "0.0.0.0")), {})
    parts = interpolate(str(entry), {}).split(":")
    return ":".join(parts[:-2]) if len(parts) > 2 else "0.0.0.0"


def test_published_ports_bind_to_loopback_unless_the_operator_says_otherwise(compose: dict[str, Any]) -> None:
    published = {name: svc["ports"] for name, svc in compose["services"].items() if svc.get("ports")}
    assert {"intake", "reporting", "prometheus", "grafana"} <= set(published)
    wrong = {name: [_host_ip(p) for p in ports] for name, ports in published.items()}
    assert all(ips == ["127.0.0.1"] * len(ips) for ips in wrong.values()), wrong


def test_the_roles_are_the_ones_the_migration_grants_and_get_the_passwords_the_services_use(
    compose: dict[str, Any],
) -> None:
    migrate_env = {k: interpolate(v, SECRETS) for k, v in compose_env(compose["services"]["migrate"]).items()}
    for service in SERVICES:
        url = make_url(
            interpolate(
                compose_env(compose["services"][service])[f"{env_prefix(service)}DATABASE__URL"], SECRETS
            )
        )
        assert url.username == service_role(service)
        assert migrate_env[password_env(service)] == url.password, (
            f"{service}: the migration sets another password"
        )
    docs = load_k8s()
    job = k8s_object(docs, "Job", "hazard-init")["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in job["env"]}
    secret = k8s_object(docs, "Secret", "hazard-migrate")["stringData"]
    for service in SERVICES:
        container = k8s_object(docs, "Deployment", service)["spec"]["template"]["spec"]["containers"][0]
        url = make_url(k8s_container_env(docs, container)[f"{env_prefix(service)}DATABASE__URL"])
        assert url.username == service_role(service)
        ref = job_env[password_env(service)]
        assert ref["name"] == "hazard-migrate"
        assert ref.get("optional") is True, "roles a DBA made need no password from the Job"
        assert secret[ref["key"]] == url.password, f"{service}: placeholders of one password differ"
        assert "REPLACE" in secret[ref["key"]]


def test_compose_creates_a_non_superuser_owner_on_first_start(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    mount = next(v for v in postgres["volumes"] if "/docker-entrypoint-initdb.d/" in v)
    script = ROOT / mount.split(":")[0]
    text = script.read_text()
    owner = _compose_user(compose, "migrate", "HAZARD_DATABASE_URL")
    assert f'owner="${{HAZARD_OWNER:-{owner}}}"' in text
    assert "NOSUPERUSER CREATEROLE" in text
    assert 'OWNER TO :"owner"' in text
    assert (
        compose_env(postgres)["HAZARD_OWNER_PASSWORD"]
        == "${HAZARD_OWNER_PASSWORD:?set HAZARD_OWNER_PASSWORD}"
    )


def test_prometheus_lifecycle_api_is_published_on_loopback_only(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    if "--web.enable-lifecycle" in prometheus["command"]:
        assert [_host_ip(p) for p in prometheus["ports"]] == ["127.0.0.1"]
        assert interpolate(prometheus["ports"][0], {"MONITORING_BIND_ADDRESS": "10.1.2.3"}).startswith(
            "10.1.2.3:"
        )
