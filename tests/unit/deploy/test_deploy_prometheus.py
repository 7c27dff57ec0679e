"""Prometheus: every replica of every service is scraped on its real port; the alert rules are valid and fire when they should."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_files import (
    ALERTS,
    ALERTS_TEST,
    OPERATIONS_DOC,
    PROMETHEUS_CONFIG,
    SERVICES,
    alert_rules,
    balanced,
    compose_env,
    env_prefix,
    load_compose,
    load_yaml,
    promql_metric_names,
    promtool,
    run_promtool,
)

needs_promtool = pytest.mark.skipif(
    promtool() is None,
    reason="promtool not installed (Debian package `prometheus`; run scripts/ensure-promtool.sh); "
    "the rules are still parsed and their metrics checked by the other tests",
)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_CONFIG)


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_scraped_on_its_http_port_by_dns_so_every_replica_counts(
    config: dict[str, Any], service: str
) -> None:
    compose = load_compose()
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == service]
    [discovery] = job["dns_sd_configs"]
    assert discovery["names"] == [service]
    assert service in compose["services"], "the DNS name is the compose service name"
    assert discovery["type"] == "A"
    port = int(compose_env(compose["services"][service])[f"{env_prefix(service)}HTTP__PORT"])
    assert discovery["port"] == port
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_the_rules_file_is_loaded_and_mounted_where_the_config_expects_it(config: dict[str, Any]) -> None:
    prometheus = load_compose()["services"]["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    assert mounts["./deploy/prometheus/alerts.yml"] in config["rule_files"]
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"


def test_alerts_cover_service_down_dead_letters_consumer_lag_and_overdue_receipts() -> None:
    metrics_by_alert = {rule["alert"]: promql_metric_names(rule["expr"]) for rule in alert_rules()}
    used = set().union(*metrics_by_alert.values())
    assert "up" in used
    assert "hazard_dead_lettered_total" in used
    assert "hazard_consumer_lag_messages" in used
    assert any("overdue" in name and name.startswith("hazard_dispatch_") for name in used)
    # HTTP: an error ratio and a latency alert.
    assert "hazard_http_requests_total" in used
    assert "hazard_http_request_duration_seconds_bucket" in used


def test_every_alert_has_a_severity_a_summary_a_valid_expression_and_is_documented() -> None:
    doc = OPERATIONS_DOC.read_text(encoding="utf-8")
    names = []
    for rule in alert_rules():
        names.append(rule["alert"])
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert balanced(rule["expr"]), f"{rule['alert']}: unbalanced brackets in {rule['expr']!r}"
        assert promql_metric_names(rule["expr"]), f"{rule['alert']}: selects no metric"
        if "for" in rule:
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
        assert f"`{rule['alert']}`" in doc, f"docs/OPERATIONS.md does not explain {rule['alert']}"
    assert len(names) == len(set(names)), "alert names repeat"


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alerts_fire_in_the_situations_they_describe_and_not_otherwise() -> None:
    result = run_promtool("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_config_with_its_rules(config: dict[str, Any], tmp_path: Path) -> None:
    # The config names the rules file by its path inside the container; point it at the repository's.
    config = {**config, "rule_files": [str(ALERTS)]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run_promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
