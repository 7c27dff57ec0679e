"""``python -m shared.devstack``: one command up, Ctrl-C down, nothing left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
import pytest
from aiokafka import AIOKafkaConsumer

from shared.devstack._process import pid_alive
from shared.devstack.ports import free_port, port_is_free
from shared.devstack.runner import READY_LINE, SERVICES, load_topic_partitions
from shared.devstack.tokens import hash_token
from shared.reference import load_reference_data
from tests.support.kafka_tools import produce, read_topic

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
DUMMY = "tests.integration.devstack.dummy_service"
START_TIMEOUT = 120.0


@dataclass
class Run:
    """One ``python -m shared.devstack`` process and the ports it was given."""

    state_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    output_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.output_path = self.state_dir.parent / f"{self.state_dir.name}-{time.monotonic_ns()}.out"

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace") if self.output_path.exists() else ""

    def port(self, name: str) -> int:
        return int(self.env[f"HAZARD_{name.upper()}_PORT"])

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "shared.devstack", "--state-dir", str(self.state_dir), *args]

    def start(self, *args: str, extra_env: dict[str, str] | None = None) -> None:
        with self.output_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command("run", "--no-seed", *args),
                cwd=REPO_ROOT,
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while READY_LINE not in self.output:
            if self.proc.poll() is not None:
                pytest.fail(f"runner exited with {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"runner not ready after {START_TIMEOUT}s:\n{self.output}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 90.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"runner did not exit within {timeout}s:\n{self.output}")

    def registry(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state_dir / "processes.json").read_text())
        return data

    def tool(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(command), cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )


def _pids_mentioning(text: str) -> list[int]:
    """Live pids whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


def _assert_nothing_left(run: Run, pids: list[int], with_services: bool) -> None:
    deadline = time.monotonic() + 10
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert _pids_mentioning(str(run.state_dir)) == []
    ports = [run.port("pg"), run.port("kafka")]
    if with_services:
        ports += [run.port(name) for name in (*SERVICES, "smtp", "webhook")]
    assert [port for port in ports if not port_is_free(port)] == []
    assert not (run.state_dir / "processes.json").exists()


@pytest.fixture
def run() -> Iterator[Run]:
    """A runner with its own state dir and free ports; force-cleaned if a test leaves it running."""
    base = Path(tempfile.mkdtemp(prefix="hazard-devstack-run-"))
    base.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HAZARD_")}
    env["HAZARD_PG_PORT"] = str(free_port())
    env["HAZARD_KAFKA_PORT"] = str(free_port())
    for name in (*SERVICES, "smtp", "webhook"):
        env[f"HAZARD_{name.upper()}_PORT"] = str(free_port())
    runner = Run(state_dir=base / "state", env=env)
    try:
        yield runner
    finally:
        if runner.proc is not None and runner.proc.poll() is None:
            runner.proc.kill()
            runner.proc.wait()
        runner.tool("stop")
        shutil.rmtree(base, ignore_errors=True)


async def _check_infrastructure(run: Run) -> None:
    conn = await asyncpg.connect(f"postgresql://hazard@127.0.0.1:{run.port('pg')}/hazard")
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{run.port('kafka')}")
    await consumer.start()
    try:
        await consumer.topics()
        expected = load_topic_partitions()
        assert {topic: len(consumer.partitions_for_topic(topic) or ()) for topic in expected} == expected
    finally:
        await consumer.stop()


async def test_no_services_run_starts_infrastructure_and_stops_cleanly_on_sigint(run: Run) -> None:
    run.start("--no-services")
    run.wait_for_ready()
    await _check_infrastructure(run)
    registry = run.registry()
    pids = [registry["runner"]["pid"], *(entry["pid"] for entry in registry["processes"].values())]
    assert set(registry["processes"]) == {"postgres", "tansu"}

    tokens = (run.state_dir / "tokens.yaml").read_text()
    plain = (run.state_dir / "demo-tokens.txt").read_text()
    plain_tokens = [line.split("\t")[-1] for line in plain.splitlines() if not line.startswith("#")]
    # Two grid members, every department of the reference data (7), an operator, a supervisor.
    assert len(plain_tokens) == 11
    assert {f"dept-{d.id}" for d in load_reference_data().departments} <= {
        line.split("\t")[0] for line in plain.splitlines() if not line.startswith("#")
    }
    assert all(hash_token(token) in tokens and token not in tokens for token in plain_tokens)
    assert (run.state_dir / "demo-tokens.txt").stat().st_mode & 0o777 == 0o600
    assert all(token in run.output for token in plain_tokens)  # the banner shows them

    status = run.tool("status")
    assert status.returncode == 0, status.stdout
    assert "tansu: running" in status.stdout

    assert run.proc is not None
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit() == 0, run.output
    _assert_nothing_left(run, pids, with_services=False)
    assert run.tool("status").returncode == 1

    # A second run reuses the cluster and the tokens.
    run.start("--no-services")
    run.wait_for_ready()
    assert "initialising PostgreSQL" not in run.output
    assert (run.state_dir / "demo-tokens.txt").read_text() == plain
    registry = run.registry()
    pids = [registry["runner"]["pid"], *(entry["pid"] for entry in registry["processes"].values())]
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.output
    _assert_nothing_left(run, pids, with_services=False)


def _get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read()


async def test_services_get_their_settings_and_are_stopped_on_sigterm(run: Run) -> None:
    run.start("--service-module", DUMMY)
    run.wait_for_ready()
    registry = run.registry()
    pids = [registry["runner"]["pid"], *(entry["pid"] for entry in registry["processes"].values())]
    assert set(registry["processes"]) == {"postgres", "tansu", "receivers", *SERVICES}
    key = (run.state_dir / "notifications-secret.key").read_text().strip()
    assert (run.state_dir / "notifications-secret.key").stat().st_mode & 0o777 == 0o600
    for name in SERVICES:
        status, body = _get(run.port(name), "/env")
        prefix = name.upper()
        assert status == 200
        expected = {
            f"{prefix}__DATABASE__URL": f"postgresql+asyncpg://hazard_{name}@127.0.0.1:{run.port('pg')}/hazard",
            f"{prefix}__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{run.port('kafka')}",
            f"{prefix}__HTTP__PORT": str(run.port(name)),
            f"{prefix}__AUTH__TOKENS_FILE": str(run.state_dir / "tokens.yaml"),
            f"{prefix}__KAFKA__IDEMPOTENT_PRODUCER": "false",
        }
        # The people's pages on reporting's origin call every service from the browser (CORS).
        pages = f"127.0.0.1:{run.port('reporting')}"
        expected[f"{prefix}__HTTP__CORS_ORIGINS"] = json.dumps(
            [f"http://{pages}", f"http://localhost:{run.port('reporting')}"]
        )
        if name == "reporting":
            for api in ("intake", "dispatch", "tracking"):
                expected[f"REPORTING__APP__{api.upper()}_URL"] = f"http://127.0.0.1:{run.port(api)}"
        if name == "notifications":
            expected |= {
                "NOTIFICATIONS__SECRET_KEY": key,
                "NOTIFICATIONS__SMTP__HOST": "127.0.0.1",
                "NOTIFICATIONS__SMTP__PORT": str(run.port("smtp")),
                "NOTIFICATIONS__DELIVERY__ALLOW_PRIVATE_TARGETS": "true",
            }
        if name == "intake":
            # Uploaded photos are kept with the run's other state.
            expected["INTAKE__PHOTOS__DIRECTORY"] = str(run.state_dir.absolute() / "photos")
        assert json.loads(body) == expected
        assert f"http://127.0.0.1:{run.port(name)}" in run.output
    # One column for every row's name, wide enough for the longest ("notifications").
    for name in SERVICES:
        assert f"   {name:<13} http://127.0.0.1:{run.port(name)} " in run.output
    assert f"   {'dashboard':<13} http://127.0.0.1:{run.port('reporting')}/" in run.output
    assert f"   {'people':<13} http://127.0.0.1:{run.port('reporting')}/app/" in run.output
    assert (
        f"SMTP 127.0.0.1:{run.port('smtp')}; each mail sent is a .eml file in {run.state_dir / 'mail'}/"
        in run.output
    )
    assert f"http://127.0.0.1:{run.port('webhook')}/; each call is a JSON line in" in run.output

    assert run.proc is not None
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait_exit() == 0, run.output
    _assert_nothing_left(run, pids, with_services=True)
    for name in SERVICES:
        assert f"dummy {name} stopped" in (run.state_dir / "logs" / f"{name}.log").read_text()


async def test_a_dying_service_stops_everything_with_a_failure(run: Run) -> None:
    run.start("--service-module", DUMMY, extra_env={"DUMMY_CRASH": "dispatch"})
    run.wait_for_ready()
    registry = run.registry()
    pids = [registry["runner"]["pid"], *(entry["pid"] for entry in registry["processes"].values())]
    assert run.wait_exit() == 1
    assert "dispatch exited with code 3" in run.output
    assert "dummy dispatch serving" in run.output  # the log tail is shown
    _assert_nothing_left(run, pids, with_services=True)


def test_a_taken_port_is_refused_with_a_clear_message(run: Run) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", run.port("kafka")))
        holder.listen()
        run.start("--no-services")
        assert run.wait_exit() == 2
    assert f"port {run.port('kafka')} (Kafka broker; set HAZARD_KAFKA_PORT to use another)" in run.output
    assert not (run.state_dir / "pg").exists()


def test_stop_cleans_up_after_a_crashed_runner(run: Run) -> None:
    run.start("--no-services")
    run.wait_for_ready()
    registry = run.registry()
    pids = [entry["pid"] for entry in registry["processes"].values()]
    assert run.proc is not None
    run.proc.kill()  # no chance to clean up
    run.proc.wait()
    assert all(pid_alive(pid) for pid in pids)

    again = Run(state_dir=run.state_dir, env=run.env)
    again.start("--no-services")
    assert again.wait_exit() == 2
    assert "still alive" in again.output

    stopped = run.tool("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    _assert_nothing_left(run, pids, with_services=False)


def _demo_token(run: Run, principal: str) -> str:
    for line in (run.state_dir / "demo-tokens.txt").read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == principal:
            return fields[-1]
    raise AssertionError(f"no demo token for {principal}")


# Five categories, so that no report is linked to another as its open duplicate.
CATEGORIES = (
    "locked_rooftop_door",
    "blocked_fire_passage",
    "ebike_indoor_charging",
    "fire_equipment_missing",
    "electrical_fire_hazard",
)


def _post_report(run: Run, token: str, category: str) -> str:
    body = {
        "report_id": str(uuid.uuid4()),
        "category": category,
        "description": "Rooftop escape door padlocked",
        "location": {"lat": 22.622, "lon": 114.16813, "address": "Liuyue, building 7", "building_id": None},
        "grid_id": "liuyue-01",
        "observed_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
        "photos": [],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{run.port('intake')}/api/v1/hazards",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        answer = json.loads(response.read())
        assert answer.get("duplicate_of") is None, answer
        hazard_id: str = answer["hazard_id"]
        return hazard_id


def _wait_gone(run: Run) -> None:
    deadline = time.monotonic() + 20
    while _pids_mentioning(str(run.state_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)


async def _wait_until(conn: Any, query: str, args: list[Any], wanted: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := await conn.fetchval(query, *args)) != wanted:
        assert time.monotonic() < deadline, f"{query}: {got}, wanted {wanted}"
        await asyncio.sleep(0.2)


async def test_reports_accepted_before_everything_is_killed_are_dispatched_after_the_empty_broker_restart(
    run: Run,
) -> None:
    """The local case of issue 14: dispatch frozen, 5 reports, kill -9 of everything, run again."""
    run.start()
    run.wait_for_ready()
    registry = run.registry()
    os.kill(registry["processes"]["dispatch"]["pid"], signal.SIGSTOP)
    token = _demo_token(run, "gm-liuyue-01")
    hazards = [_post_report(run, token, category) for category in CATEGORIES]
    dsn = f"postgresql://hazard@127.0.0.1:{run.port('pg')}/hazard"
    # On the broker (not taken by the frozen dispatch) before everything dies.
    records = await read_topic(f"127.0.0.1:{run.port('kafka')}", "hazard.lifecycle", expect=5)
    assert {r.key.decode() for r in records} >= set(hazards)

    pids = [registry["runner"]["pid"], *(entry["pid"] for entry in registry["processes"].values())]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert run.proc is not None
    run.proc.wait(timeout=10)
    _wait_gone(run)

    run.start(extra_env={"HAZARD_DRAIN_TIMEOUT_S": "20"})
    run.wait_for_ready()
    conn = await asyncpg.connect(dsn)
    try:
        await _wait_until(
            conn, "select count(*) from dispatch.hazards where hazard_id = any($1::uuid[])", [hazards], 5, 30
        )
    except AssertionError:
        logs = run.state_dir / "logs"
        print(
            run.output, (logs / "dispatch.log").read_text()[-6000:], (logs / "intake.log").read_text()[-3000:]
        )
        raise
    finally:
        await conn.close()

    assert "the broker is empty: relaying everything retained again" in run.output
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit() == 0, run.output
    assert "outboxes empty, every consumer group at lag 0" in run.output, run.output
    assert (run.state_dir / "broker-drained-at").read_text()


async def test_stopping_drains_first_and_names_what_was_left_after_the_bounded_wait(run: Run) -> None:
    run.start("--service-module", DUMMY, extra_env={"HAZARD_DRAIN_TIMEOUT_S": "2"})
    run.wait_for_ready()
    # One record no consumer group will take (the stand-ins consume nothing).
    await produce(f"127.0.0.1:{run.port('kafka')}", "hazard.lifecycle", [(b"k", b"{}")])
    assert run.proc is not None
    run.proc.send_signal(signal.SIGINT)
    assert run.wait_exit() == 0, run.output
    out = run.output
    assert "draining (at most 2s)" in out
    left = out[out.index("drain incomplete after 2s, left: ") :].splitlines()[0]
    for name in SERVICES:
        assert f"hazard-{name} 1 behind" in left, left
        assert f"dummy {name} draining" in (run.state_dir / "logs" / f"{name}.log").read_text()
    assert "unpublished" not in left, "the outboxes were empty"
    assert out.index("draining (at most") < out.index("drain incomplete") < out.index("stopping services")
    assert out.index("stopping services") < out.index("stopping the broker")
    assert not (run.state_dir / "broker-drained-at").exists(), "not drained: the next start relays everything"
