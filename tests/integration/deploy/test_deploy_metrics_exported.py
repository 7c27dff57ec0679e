"""Every metric an alert rule or a Grafana panel uses is one the running services really export."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from shared.devstack.ports import free_port
from tests.support import processes
from tests.unit.deploy.deploy_files import (
    PROMETHEUS_OWN_METRICS,
    SERVICES,
    env_prefix,
    exported_series_names,
    image_tree,
    used_metrics,
)

pytestmark = pytest.mark.integration


def _service_env(
    service: str, *, db_url: str, bootstrap: str, topics: dict[str, str], port: int
) -> dict[str, str]:
    prefixes = tuple(env_prefix(s) for s in SERVICES)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(prefixes)}
    prefix = env_prefix(service)
    env.update(
        {
            f"{prefix}DATABASE__URL": db_url,
            f"{prefix}KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            f"{prefix}KAFKA__LIFECYCLE_TOPIC": topics["lifecycle"],
            f"{prefix}KAFKA__DEAD_LETTER_TOPIC": topics["dead_letter"],
            # The local Tansu broker has no idempotent producers (Apache Kafka in production does).
            f"{prefix}KAFKA__IDEMPOTENT_PRODUCER": "false",
            f"{prefix}HTTP__PORT": str(port),
            # Nothing is in flight here: stop quickly.
            f"{prefix}KAFKA__GRACEFUL_TIMEOUT_S": "1",
        }
    )
    if service == "notifications":
        env["NOTIFICATIONS__SECRET_KEY"] = "Wg1aAWgxp0Y4Z3C0PnQhz5b9o2uOJQp4TeQ1RyVPZlU="
    return env


def _scrape_when_alive(base: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> str:
    # Alive is enough: every metric is registered when the app is built, before HTTP serves;
    # waiting for the consumer groups to join (/readyz) would only add time.
    processes.wait_ready(base, proc, log, timeout_s=timeout_s, path="/healthz")
    return httpx.get(base + "/metrics", timeout=10).text


def test_alerts_and_dashboard_use_only_metrics_the_services_export(
    db_url: str, kafka, topics: dict[str, str], tmp_path: Path
) -> None:
    procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    exported: dict[str, set[str]] = {}
    try:
        # Run from the image's layout (only what the Dockerfile copies), so a file the services need
        # but the image lacks fails here. All four at once: start-up is the slow part.
        app = image_tree(tmp_path)
        for service in SERVICES:
            port = free_port()
            log = tmp_path / f"{service}.log"
            env = _service_env(
                service, db_url=db_url, bootstrap=kafka.bootstrap_servers, topics=topics, port=port
            )
            procs[service] = (processes.launch(service, env, log, cwd=app), port, log)
        for service, (proc, port, log) in procs.items():
            exported[service] = exported_series_names(
                _scrape_when_alive(f"http://127.0.0.1:{port}", proc, log)
            )
    finally:
        processes.stop((proc for proc, _, _ in procs.values()), timeout_s=30)

    every = set().union(*exported.values())
    # Sanity: the scrape really read the services' pages (shared and FastStream metrics of each).
    for service, names in exported.items():
        assert "hazard_outbox_pending" in names, service
        assert "faststream_received_messages_total" in names, service
    used = used_metrics()
    assert used, "no metric found in the alert rules or the dashboard"
    missing = {
        name: places
        for name, places in sorted(used.items())
        if name not in every and name not in PROMETHEUS_OWN_METRICS
    }
    assert missing == {}, "used but exported by no service: " + "; ".join(
        f"{name} (in {', '.join(places)})" for name, places in missing.items()
    )
