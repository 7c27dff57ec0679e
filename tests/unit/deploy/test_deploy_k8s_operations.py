"""Kubernetes operations objects: scraping that gives the `job` the alerts and panels select on,
NetworkPolicies, autoscalers, the Ingress and Alertmanager (compose and k8s)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shared.topics import LIFECYCLE_PARTITIONS
from tests.unit.deploy.deploy_files import (
    PROMETHEUS_CONFIG,
    ROOT,
    SERVICES,
    alert_rules,
    dashboard_targets,
    k8s_object,
    load_compose,
    load_dashboard,
    load_k8s,
    load_yaml,
)

ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
K8S_SCRAPE = ROOT / "deploy" / "prometheus" / "kubernetes-scrape.yml"
PORTS = {"intake": 8101, "dispatch": 8102, "tracking": 8103, "reporting": 8104, "notifications": 8105}
CONSUMERS = ("dispatch", "tracking")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load_k8s()


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _selected_jobs() -> set[str]:
    """Every `job` value an alert rule or a dashboard panel selects on."""
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [expr for _, expr in dashboard_targets(load_dashboard())]
    jobs: set[str] = set()
    for expr in exprs:
        for match in re.finditer(r'job\s*(=~|=)\s*"([^"]+)"', expr):
            jobs.update(match.group(2).split("|") if match.group(1) == "=~" else [match.group(2)])
    return jobs


def _labels(pod_template: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = pod_template["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_alerts_and_panels_select_exactly_the_service_jobs() -> None:
    assert _selected_jobs() == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_service_monitors_give_each_service_its_own_job(docs: list[dict[str, Any]], service: str) -> None:
    monitor = k8s_object(docs, "ServiceMonitor", service)
    svc = k8s_object(docs, "Service", service)
    # The operator sets job to the value of the Service's label named by jobLabel.
    job = svc["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == service
    assert job in _selected_jobs()
    assert _selects(monitor["spec"]["selector"], svc["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_the_annotation_scrape_config_relabels_job_to_the_service_name(docs: list[dict[str, Any]]) -> None:
    [job] = load_yaml(K8S_SCRAPE)["scrape_configs"]
    relabels = job["relabel_configs"]
    [to_job] = [r for r in relabels if r.get("target_label") == "job"]
    assert to_job["source_labels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    assert to_job.get("action", "replace") == "replace"
    assert to_job.get("regex", "(.*)") == "(.*)"
    for service in SERVICES:
        pod = _labels(k8s_object(docs, "Deployment", service)["spec"]["template"])
        assert pod["app.kubernetes.io/name"] == service
    keep = [r for r in relabels if r.get("action") == "keep"]
    assert any(set(r["regex"].split("|")) == set(SERVICES) for r in keep)


PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16"}
RECEIVER_PORTS = {("TCP", 25), ("TCP", 80), ("TCP", 443), ("TCP", 465), ("TCP", 587)}


def test_network_policies_deny_by_default_and_let_services_reach_only_dns_postgres_and_kafka(
    docs: list[dict[str, Any]],
) -> None:
    policies = _of_kind(docs, "NetworkPolicy")
    [deny] = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]
    workloads = {s: _labels(k8s_object(docs, "Deployment", s)["spec"]["template"]) for s in SERVICES}
    workloads["init"] = _labels(k8s_object(docs, "Job", "hazard-init")["spec"]["template"])
    for name, labels in workloads.items():
        egress = [
            rule
            for p in policies
            if "Egress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("egress", [])
        ]
        public = [r for r in egress if any("ipBlock" in peer for peer in r.get("to", []))]
        if name == "notifications":
            # Its receivers are outside: webhooks and SMTP on public addresses, never private ranges.
            [receivers] = public
            [peer] = receivers["to"]
            assert set(peer["ipBlock"]["except"]) >= PRIVATE_RANGES, name
            assert {(p["protocol"], p["port"]) for p in receivers["ports"]} == RECEIVER_PORTS
            egress = [r for r in egress if r is not receivers]
        ports = {(port["protocol"], port["port"]) for rule in egress for port in rule["ports"]}
        assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 9092)}, name
        for rule in egress:
            assert rule.get("to"), f"{name}: an egress rule to anywhere"
            for peer in rule["to"]:
                assert "ipBlock" not in peer or peer["ipBlock"]["cidr"] != "0.0.0.0/0", name


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_takes_traffic_only_on_its_port_from_the_ingress_and_monitoring(
    docs: list[dict[str, Any]], service: str
) -> None:
    labels = _labels(k8s_object(docs, "Deployment", service)["spec"]["template"])
    ingress = [
        rule
        for p in _of_kind(docs, "NetworkPolicy")
        if "Ingress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
        for rule in p["spec"].get("ingress", [])
    ]
    assert ingress, f"{service}: nothing may reach it (not even Prometheus)"
    for rule in ingress:
        assert {port["port"] for port in rule["ports"]} == {PORTS[service]}
        namespaces = {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]
        }
        assert namespaces <= {"ingress-nginx", "monitoring"}


def test_autoscalers_scale_on_cpu_and_never_past_the_partitions(docs: list[dict[str, Any]]) -> None:
    hpas = {h["metadata"]["name"]: h for h in _of_kind(docs, "HorizontalPodAutoscaler")}
    assert {"intake", *CONSUMERS} <= set(hpas)
    assert "reporting" not in hpas  # one projection consumer: not scaled
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        deployment = k8s_object(docs, "Deployment", name)
        assert spec["minReplicas"] >= deployment["spec"]["replicas"], name
        assert spec["minReplicas"] < spec["maxReplicas"], name
        [metric] = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert 0 < metric["resource"]["target"]["averageUtilization"] <= 90
        # Utilization is a share of the request: the container must request CPU.
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["requests"]["cpu"]
        if name in CONSUMERS:
            assert spec["maxReplicas"] <= LIFECYCLE_PARTITIONS, name


def test_the_ingress_routes_public_routes_only(docs: list[dict[str, Any]]) -> None:
    [ingress] = _of_kind(docs, "Ingress")
    routed: dict[str, list[tuple[str, str]]] = {}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["port"] == {"name": "http"}
            k8s_object(docs, "Service", backend["name"])
            routed.setdefault(backend["name"], []).append((rule["host"], path["path"]))
    assert set(routed) == set(SERVICES)
    hosts = {service: {host for host, _ in paths} for service, paths in routed.items()}
    # One host per service: intake and tracking both serve /api/v1/hazards...
    assert all(len(h) == 1 for h in hosts.values())
    assert len(set().union(*hosts.values())) == len(SERVICES)
    paths = {p for entries in routed.values() for _, p in entries}
    for private in ("/metrics", "/healthz", "/readyz", "/docs", "/openapi.json", "/asyncapi.json"):
        assert all(not private.startswith(p) or p == "/" for p in paths), private
    assert [p for p in paths if p == "/"] == ["/"]  # the dashboard page, Exact
    intake_paths = {p for _, p in routed["intake"]}
    assert {"/open311", "/api/v1"} <= intake_paths
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert tls_hosts == set().union(*hosts.values())
    root = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"] if p["path"] == "/"]
    assert [p["pathType"] for p in root] == ["Exact"]


def test_alertmanager_runs_in_compose_and_prometheus_sends_to_it() -> None:
    compose = load_compose()["services"]
    am = compose["alertmanager"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in am["volumes"] if v.startswith("./")}
    assert mounts["./deploy/alertmanager/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert re.fullmatch(r"prom/alertmanager:v\d+\.\d+\.\d+", am["image"])
    assert am["healthcheck"]["test"]
    config = load_yaml(PROMETHEUS_CONFIG)
    targets = [
        t for a in config["alerting"]["alertmanagers"] for s in a["static_configs"] for t in s["targets"]
    ]
    assert targets == ["alertmanager:9093"]


def test_alertmanager_sends_every_alert_to_a_webhook_and_k8s_ships_the_same_config(
    docs: list[dict[str, Any]],
) -> None:
    config = load_yaml(ALERTMANAGER_CONFIG)
    receivers = {r["name"]: r for r in config["receivers"]}
    default = receivers[config["route"]["receiver"]]
    [webhook] = default["webhook_configs"]
    assert re.match(r"https?://", webhook["url"])
    for route in config["route"].get("routes", []):
        assert "webhook_configs" in receivers[route["receiver"]]
    assert k8s_object(docs, "ConfigMap", "alertmanager-config")["data"]["alertmanager.yml"] == (
        ALERTMANAGER_CONFIG.read_text(encoding="utf-8")
    )
    deployment = k8s_object(docs, "Deployment", "alertmanager")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == load_compose()["services"]["alertmanager"]["image"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in container["args"]
    svc = k8s_object(docs, "Service", "alertmanager")
    assert svc["spec"]["ports"][0]["port"] == 9093


@pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool not installed (Debian: prometheus-alertmanager)"
)
def test_amtool_accepts_the_alertmanager_config(tmp_path: Path) -> None:
    result = subprocess.run(
        ["amtool", "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
