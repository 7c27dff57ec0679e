"""docker-compose.yml describes a production system the services' own code would accept."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.settings import KafkaSettings
from tests.unit.deploy.deploy_files import (
    COMPOSE,
    ROOT,
    SERVICES,
    TOPICS_SCRIPT,
    check_env,
    compose_env,
    env_prefix,
    interpolate,
    is_one_shot,
    load_compose,
    required_env,
    settings_class,
)

# Values for the ${VARS} compose asks of the operator, so the environment can be validated.
# Third-party containers configured with their own variables, not ours.
INFRASTRUCTURE = frozenset({"kafka", "postgres", "init-topics", "prometheus", "grafana"})
OPERATOR_VARIABLES = {
    "POSTGRES_PASSWORD": "s3cret",
    "HAZARD_OWNER_PASSWORD": "s3cret",
    "GRAFANA_ADMIN_PASSWORD": "s3cret",
    **{f"{service.upper()}_DB_PASSWORD": "s3cret" for service in SERVICES},
    "NOTIFICATIONS_SECRET_KEY": "Wg1aAWgxp0Y4Z3C0PnQhz5b9o2uOJQp4TeQ1RyVPZlU=",
    "PHOTO_S3_ENDPOINT_URL": "http://objects:9000",
    "PHOTO_S3_ACCESS_KEY_ID": "photo-key",
    "PHOTO_S3_SECRET_ACCESS_KEY": "s3cret",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _duration_s(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * units[unit]
    return float(value)


def test_the_four_services_and_the_infrastructure_are_described(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert set(SERVICES) <= services
    assert {"kafka", "postgres", "init-topics", "migrate", "prometheus", "grafana"} <= services


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    missing = [
        name
        for name, svc in compose["services"].items()
        if not is_one_shot(svc) and not (svc.get("healthcheck") or {}).get("test")
    ]
    assert missing == [], f"long-running services without a healthcheck: {missing}"


def test_start_order_follows_health_and_completion_never_sleep(compose: dict[str, Any]) -> None:
    services = compose["services"]
    problems = []
    for name, svc in services.items():
        depends = svc.get("depends_on", {})
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on is a list (no condition); use the long form")
            continue
        for target, spec in depends.items():
            condition = (spec or {}).get("condition")
            if target not in services:
                problems.append(f"{name}: depends on unknown service {target}")
            elif condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name}: waits for {target} to be healthy, but it has no healthcheck")
            elif condition == "service_completed_successfully" and not is_one_shot(services[target]):
                problems.append(f"{name}: waits for {target} to complete, but it restarts")
            elif condition not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"{name}: depends on {target} with condition {condition!r}")
        command = (
            " ".join(map(str, svc.get("command") or []))
            + " "
            + " ".join(map(str, svc.get("entrypoint") or []))
        )
        if "sleep" in command:
            problems.append(f"{name}: sleeps in its command")
    assert problems == []


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_starts_after_topics_and_migrations_and_healthy_infrastructure(
    compose: dict[str, Any], service: str
) -> None:
    depends = compose["services"][service]["depends_on"]
    assert depends["init-topics"]["condition"] == "service_completed_successfully"
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["kafka"]["condition"] == "service_healthy"


def test_every_settings_variable_in_compose_is_a_real_settings_field(compose: dict[str, Any]) -> None:
    problems = [
        problem
        for name, svc in compose["services"].items()
        for problem in check_env(f"compose {name}", compose_env(svc))
        if name not in INFRASTRUCTURE
    ]
    assert problems == []


@pytest.mark.parametrize("service", SERVICES)
def test_compose_environment_is_accepted_by_the_settings_class(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        k: interpolate(v, OPERATOR_VARIABLES) for k, v in compose_env(compose["services"][service]).items()
    }
    missing = required_env(service) - {k.upper() for k in env}
    assert missing == set(), f"compose {service} lacks required settings {sorted(missing)}"
    assert env["SERVICE"] == service
    prefix = env_prefix(service)
    assert all(k.upper().startswith(prefix) for k in env if k != "SERVICE"), "another service's prefix"
    for name in [n for n in os.environ if n.upper().startswith(prefix)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class(service)()
    assert settings.http.host == "0.0.0.0"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.idempotent_producer is True
    assert settings.kafka.acks == "all"
    # Its own role (shared.roles), never the owner the migrations run as.
    assert settings.database.url.get_secret_value().startswith(
        f"postgresql+asyncpg://hazard_{service}:s3cret@postgres:5432/"
    )
    assert settings.auth.tokens_file is not None
    assert str(settings.auth.tokens_file).startswith("/run/secrets/")


@pytest.mark.parametrize("service", SERVICES)
def test_compose_ports_and_health_check_agree_with_the_service_port(
    compose: dict[str, Any], service: str
) -> None:
    svc = compose["services"][service]
    port = int(compose_env(svc)[f"{env_prefix(service)}HTTP__PORT"])
    targets = []
    for entry in svc.get("ports", []):
        if isinstance(entry, dict):
            targets.append(int(entry["target"]))
        else:
            targets.append(int(str(entry).rsplit(":", 1)[-1].split("/")[0]))
    assert targets == [port]
    # The image's healthcheck.py reads <SERVICE>__HTTP__PORT, so the port cannot drift from the setting.
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/usr/local/bin/healthcheck.py"]


@pytest.mark.parametrize("service", ["dispatch", "tracking"])
def test_dispatch_and_tracking_run_two_replicas_without_fixed_host_ports(
    compose: dict[str, Any], service: str
) -> None:
    svc = compose["services"][service]
    assert svc["deploy"]["replicas"] == 2
    assert "container_name" not in svc, "a fixed container name prevents replicas"
    # "ADDRESS::PORT": an ephemeral host port on that address (long syntax: no "published").
    assert all(
        (isinstance(p, dict) and "published" not in p) or (isinstance(p, str) and "::" in p)
        for p in svc.get("ports", [])
    ), "two replicas cannot publish the same host port"


@pytest.mark.parametrize("service", SERVICES)
def test_services_get_longer_to_stop_than_the_broker_takes_to_drain(
    compose: dict[str, Any], service: str
) -> None:
    svc = compose["services"][service]
    env = compose_env(svc)
    graceful = float(
        env.get(
            f"{env_prefix(service)}KAFKA__GRACEFUL_TIMEOUT_S",
            KafkaSettings.model_fields["graceful_timeout_s"].default,
        )
    )
    # shared.runner gives uvicorn graceful_timeout_s + 5 seconds to finish.
    assert _duration_s(str(svc["stop_grace_period"])) > graceful + 5


def test_kafka_runs_kraft_without_topic_auto_creation(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = compose_env(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(str(v).endswith(":/var/lib/kafka/data") for v in kafka["volumes"])
    assert "9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_readiness(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    volume = next(v for v in postgres["volumes"] if str(v).endswith(":/var/lib/postgresql/data"))
    assert volume.split(":")[0] in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_init_jobs_create_the_topics_from_the_script_and_apply_migrations(compose: dict[str, Any]) -> None:
    init = compose["services"]["init-topics"]
    mount = next(v for v in init["volumes"] if "create-topics.sh" in v)
    assert mount.split(":")[0] == "./" + str(TOPICS_SCRIPT.relative_to(TOPICS_SCRIPT.parents[2]))
    assert init["entrypoint"][-1] == mount.split(":")[1]
    assert init["image"] == compose["services"]["kafka"]["image"]
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"]
    assert compose_env(migrate)["HAZARD_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_images_are_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        if name in SERVICES or name == "migrate":
            assert "build" in svc, f"{name} is built from the Dockerfile"
            continue
        assert ":" in image, f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"


def test_the_tokens_file_is_a_secret_not_committed(compose: dict[str, Any]) -> None:
    secret = compose["secrets"]["hazard_tokens"]["file"]
    assert "tokens.yaml" in secret
    assert "example" not in secret
    for service in SERVICES:
        assert compose["services"][service]["secrets"] == ["hazard_tokens"]
        tokens_file = compose_env(compose["services"][service])[f"{env_prefix(service)}AUTH__TOKENS_FILE"]
        assert tokens_file == "/run/secrets/hazard_tokens"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (Debian package `docker-compose`; run scripts/ensure-promtool.sh); "
    "the file is still parsed and checked by the other tests",
)
def test_compose_itself_accepts_the_file(compose: dict[str, Any], tmp_path: Path) -> None:
    # Debian's docker-compose (1.29) validates against the Compose schema without a Docker daemon.
    # Its schema predates the top-level `name`, the one newer key used here; drop it for the check.
    assert compose.get("name") == "hazard-dispatch"
    text = COMPOSE.read_text()
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(text.replace("\nname: hazard-dispatch\n", "\n", 1))
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME")},
        **OPERATOR_VARIABLES,
        "HAZARD_TOKENS_FILE": str(ROOT / "deploy" / "secrets" / "tokens.example.yaml"),
    }
    result = subprocess.run(
        ["docker-compose", "-f", str(copy), "--project-directory", str(ROOT), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
