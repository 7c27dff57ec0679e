"""Each service starts as a process of its own, answers its operational endpoints, and refuses bad config."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.devstack.ports import free_port
from shared.reference import PACKAGED_DATA_DIR
from tests.support import processes
from tests.support.processes import ROOT, service_env

pytestmark = pytest.mark.integration
SERVICES = ("intake", "dispatch", "tracking", "reporting", "notifications")
# Settings a service cannot start without beyond the common ones.
REQUIRED_EXTRA = {"notifications": {"SECRET_KEY": "Wg1aAWgxp0Y4Z3C0PnQhz5b9o2uOJQp4TeQ1RyVPZlU="}}


def _env(
    service: str, db_url: str, bootstrap: str, topics: dict[str, str], port: int, **extra: str
) -> dict[str, str]:
    return service_env(service, db_url, bootstrap, topics, port, LOG_JSON="true", **extra)


@pytest.mark.parametrize("service", SERVICES)
def test_service_process_becomes_ready_and_serves_operational_endpoints(
    service: str, db_url: str, kafka, topics: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / f"{service}.log"
    env = _env(service, db_url, kafka.bootstrap_servers, topics, port, **REQUIRED_EXTRA.get(service, {}))
    proc = processes.launch(service, env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = processes.wait_ready(base, proc, log, timeout_s=60)
        checks = ready.json()["checks"]
        # The calendar's coverage is advisory: "ok", or a warning that leaves the service ready.
        assert checks.pop("calendar") == "ok" or ready.json()["checks"]["calendar"].startswith("warning: ")
        assert checks == {"database": "ok", "broker": "ok", "consumers": "ok"}
        assert httpx.get(base + "/healthz").json() == {"status": "ok", "service": service}
        metrics = httpx.get(base + "/metrics").text
        assert "hazard_outbox_pending" in metrics
        assert "faststream_" in metrics or "hazard_events_consumed_total" in metrics
        spec = httpx.get(base + "/asyncapi.json").json()
        assert spec["asyncapi"].startswith("3.")
        assert any(topics["lifecycle"] in str(ch) for ch in spec["channels"].values())
    finally:
        proc.terminate()
        # uvicorn re-raises the signal once shutdown is complete, so a clean stop ends "by SIGTERM".
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), processes.tail(log)
    lines = (tmp_path / f"{service}.log").read_text().splitlines()
    assert lines, "the service logged nothing"
    assert all(line.startswith("{") for line in lines if line.strip()), "every log line is JSON"


def test_bad_reference_data_stops_start_up_naming_file_entry_and_problem(
    db_url: str, kafka, topics: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "ref"
    shutil.copytree(PACKAGED_DATA_DIR, data)
    routing = data / "routing.yaml"
    routing.write_text(routing.read_text().replace("department_id: police", "department_id: polise", 1))
    result = subprocess.run(
        [sys.executable, "-m", "services.dispatch"],
        cwd=ROOT,
        env=_env(
            "dispatch", db_url, kafka.bootstrap_servers, topics, free_port(), REFERENCE_DATA_DIR=str(data)
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "reference data is invalid" in result.stderr
    assert "routing.yaml" in result.stderr
    assert "'polise'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_settings_are_named_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKING__")}
    result = subprocess.run(
        [sys.executable, "-m", "services.tracking"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TRACKING__DATABASE" in result.stderr
    assert "Traceback" not in result.stderr


def test_intake_stays_ready_while_broker_is_away(db_url: str, topics: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    dead_broker = f"127.0.0.1:{free_port()}"
    log = tmp_path / "intake.log"
    proc = processes.launch("intake", _env("intake", db_url, dead_broker, topics, port), log)
    try:
        ready = processes.wait_ready(f"http://127.0.0.1:{port}", proc, log, timeout_s=60)
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["broker"] != "ok"
    finally:
        processes.stop([proc], timeout_s=30)
