"""The Kubernetes manifests: probes on the services' endpoints, safe shutdown, settings and ports the code accepts."""

from __future__ import annotations

import os
from typing import Any

import pytest

from shared.settings import KafkaSettings
from tests.unit.deploy.deploy_files import (
    SERVICES,
    check_env,
    compose_env,
    env_prefix,
    k8s_container_env,
    k8s_files,
    k8s_object,
    load_compose,
    load_k8s,
    required_env,
    settings_class,
)

NAMESPACE = "hazard-dispatch"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_k8s()


def _container(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    deployment = k8s_object(docs, "Deployment", service)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def test_every_document_is_a_named_object_in_the_namespace(docs: list[dict[str, Any]]) -> None:
    assert len(k8s_files()) >= 3
    for doc in docs:
        assert doc.get("apiVersion"), doc
        assert doc.get("kind"), doc
        assert doc["metadata"].get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    k8s_object(docs, "Namespace", NAMESPACE)


@pytest.mark.parametrize("service", SERVICES)
def test_probes_use_readyz_for_readiness_and_healthz_for_liveness(
    docs: list[dict[str, Any]], service: str
) -> None:
    container = _container(docs, service)
    assert k8s_container_env(docs, container)["SERVICE"] == service
    port = _container_port(container, "http")
    readiness = container["readinessProbe"]["httpGet"]
    liveness = container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz"
    assert liveness["path"] == "/healthz"
    assert _container_port(container, readiness["port"]) == port
    assert _container_port(container, liveness["port"]) == port


@pytest.mark.parametrize("service", SERVICES)
def test_termination_grace_outlasts_prestop_and_the_broker_graceful_timeout(
    docs: list[dict[str, Any]], service: str
) -> None:
    pod = k8s_object(docs, "Deployment", service)["spec"]["template"]["spec"]
    container = _container(docs, service)
    env = k8s_container_env(docs, container)
    graceful = float(
        env.get(
            f"{env_prefix(service)}KAFKA__GRACEFUL_TIMEOUT_S",
            KafkaSettings.model_fields["graceful_timeout_s"].default,
        )
    )
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_s = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    # shared.runner lets uvicorn take graceful_timeout_s + 5 s; the pod must not be killed before that.
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + graceful + 5


@pytest.mark.parametrize("service", SERVICES)
def test_deployment_environment_names_real_settings_and_is_accepted(
    docs: list[dict[str, Any]], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = k8s_container_env(docs, _container(docs, service))
    assert check_env(f"k8s {service}", env) == []
    missing = required_env(service) - {k.upper() for k in env}
    assert missing == set(), f"k8s {service} lacks required settings {sorted(missing)}"
    for name in [n for n in os.environ if n.upper().startswith(env_prefix(service))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings_class(service)()
    assert settings.kafka.idempotent_producer is True
    assert settings.kafka.acks == "all"
    assert settings.http.host == "0.0.0.0"
    assert len(settings.kafka.bootstrap_servers.split(",")) >= 3, "production bootstraps from several brokers"
    assert settings.auth.tokens_file is not None
    mounts = {m["mountPath"] for m in _container(docs, service)["volumeMounts"]}
    assert str(settings.auth.tokens_file.parent) in mounts


@pytest.mark.parametrize("service", SERVICES)
def test_ports_agree_between_settings_container_service_scrape_annotation_and_compose(
    docs: list[dict[str, Any]], service: str
) -> None:
    container = _container(docs, service)
    setting = int(k8s_container_env(docs, container)[f"{env_prefix(service)}HTTP__PORT"])
    assert _container_port(container, "http") == setting
    svc = k8s_object(docs, "Service", service)
    assert (
        svc["spec"]["selector"] == k8s_object(docs, "Deployment", service)["spec"]["selector"]["matchLabels"]
    )
    [port] = svc["spec"]["ports"]
    assert port["port"] == setting
    assert _container_port(container, port["targetPort"]) == setting
    annotations = k8s_object(docs, "Deployment", service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == setting
    assert annotations["prometheus.io/path"] == "/metrics"
    compose_port = compose_env(load_compose()["services"][service])[f"{env_prefix(service)}HTTP__PORT"]
    assert int(compose_port) == setting


@pytest.mark.parametrize(("service", "replicas"), [("dispatch", 2), ("tracking", 2)])
def test_dispatch_and_tracking_run_several_replicas_with_a_disruption_budget(
    docs: list[dict[str, Any]], service: str, replicas: int
) -> None:
    assert k8s_object(docs, "Deployment", service)["spec"]["replicas"] >= replicas
    assert k8s_object(docs, "PodDisruptionBudget", service)["spec"]["minAvailable"] >= 1


@pytest.mark.parametrize("service", SERVICES)
def test_pods_run_as_non_root_with_resources_and_a_pinned_image(
    docs: list[dict[str, Any]], service: str
) -> None:
    pod = k8s_object(docs, "Deployment", service)["spec"]["template"]["spec"]
    container = _container(docs, service)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    image = container["image"]
    assert ":" in image
    assert not image.endswith(":latest")
    assert container["args"] == [service]


def test_secrets_are_placeholders_only(docs: list[dict[str, Any]]) -> None:
    for secret in (d for d in docs if d["kind"] == "Secret"):
        assert "data" not in secret, f"{secret['metadata']['name']}: base64 data looks like a real secret"
        for key, value in secret["stringData"].items():
            if "URL" in key.upper() or "PASSWORD" in key.upper() or key.upper().endswith("SECRET_KEY"):
                assert "REPLACE" in value, f"{secret['metadata']['name']}.{key} holds a real-looking password"
            if key.endswith(".yaml"):
                assert "token_sha256:" not in value.replace("# ", "#"), (
                    "no real token hashes in the manifests"
                )


def test_init_job_creates_topics_then_migrates(docs: list[dict[str, Any]]) -> None:
    job = k8s_object(docs, "Job", "hazard-init")["spec"]["template"]["spec"]
    [topics_container] = job["initContainers"]
    [migrate] = job["containers"]
    assert topics_container["image"].startswith("apache/kafka:")
    volume = next(v for v in job["volumes"] if v["name"] == topics_container["volumeMounts"][0]["name"])
    assert volume["configMap"]["name"] == "hazard-kafka-init"
    env = {e["name"]: e.get("value") for e in topics_container["env"]}
    assert env["REPLICATION_FACTOR"] == "3"
    assert env["MIN_INSYNC_REPLICAS"] == "2"
    assert migrate["args"] == ["migrate"]
    assert check_env("k8s hazard-init", k8s_container_env(docs, migrate)) == []
    secret_ref = migrate["env"][0]["valueFrom"]["secretKeyRef"]
    assert secret_ref["key"] in k8s_object(docs, "Secret", secret_ref["name"])["stringData"]
    assert migrate["image"] == _container(docs, "dispatch")["image"]
