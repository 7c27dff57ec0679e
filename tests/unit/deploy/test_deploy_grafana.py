"""Grafana: the provisioned datasource and dashboard load, and every panel asks a valid question."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_files import (
    DASHBOARD,
    GRAFANA_PROVISIONING,
    balanced,
    dashboard_targets,
    grafana_to_promql,
    load_compose,
    load_dashboard,
    load_yaml,
    promql_metric_names,
    promtool,
    run_promtool,
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def _datasource() -> dict[str, Any]:
    [datasource] = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return datasource


def _mounts(service: str) -> dict[str, str]:
    volumes = load_compose()["services"][service]["volumes"]
    return {v.split(":")[0]: v.split(":")[1] for v in volumes}


def test_datasource_points_at_the_compose_prometheus() -> None:
    datasource = _datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert (
        "${MONITORING_BIND_ADDRESS:-127.0.0.1}:9090:9090" in load_compose()["services"]["prometheus"]["ports"]
    )


def test_provisioning_and_dashboards_are_mounted_where_grafana_and_the_provider_look() -> None:
    mounts = _mounts("grafana")
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "hazard-dispatch.yml")["providers"]
    assert (
        mounts["./" + str(DASHBOARD.parent.relative_to(DASHBOARD.parents[3]))] == provider["options"]["path"]
    )


def test_every_panel_uses_the_provisioned_datasource_and_has_a_query(dashboard: dict[str, Any]) -> None:
    uid = _datasource()["uid"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]), "panel ids repeat"
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
            assert balanced(target["expr"]), f"{panel['title']}: unbalanced {target['expr']!r}"
            assert promql_metric_names(target["expr"]), f"{panel['title']}: selects no metric"


def test_dashboard_shows_lag_dead_letters_overdue_receipts_relapses_and_message_rates(
    dashboard: dict[str, Any],
) -> None:
    used = set().union(*(promql_metric_names(expr) for _, expr in dashboard_targets(dashboard)))
    assert "hazard_consumer_lag_messages" in used
    assert "hazard_dead_lettered_total" in used
    assert any("receipt_overdue" in name for name in used)
    assert any("relapse" in name for name in used)
    # Received: FastStream's counter. Published: the relays' own (they send on aiokafka directly).
    assert {"faststream_received_messages_total", "hazard_outbox_published_total"} <= used


def test_dashboard_shows_http_rate_errors_and_latency(dashboard: dict[str, Any]) -> None:
    exprs = [expr for _, expr in dashboard_targets(dashboard)]
    used = set().union(*(promql_metric_names(expr) for expr in exprs))
    assert {"hazard_http_requests_total", "hazard_http_request_duration_seconds_bucket"} <= used
    assert any('status_class="5xx"' in expr for expr in exprs), "no error-ratio panel"
    assert any("histogram_quantile" in expr and "hazard_http_request_duration" in expr for expr in exprs)
    # By route template, never by raw path or instance-specific labels.
    assert any("route" in expr and "hazard_http" in expr for expr in exprs)


@pytest.mark.skipif(promtool() is None, reason="promtool not installed (run scripts/ensure-promtool.sh)")
def test_promtool_parses_every_panel_expression(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool has no "check expression": each query becomes a recording rule, which it parses.
    rules = [
        {"record": f"grafana:panel_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_targets(dashboard))
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}, allow_unicode=True))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
