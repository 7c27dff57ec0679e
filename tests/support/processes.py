"""The one way tests and benchmarks launch service processes, wait for them, and stop them.

A service process is ``python -m services.<name>`` configured by its environment
(``<NAME>__...``, pydantic-settings), its output in a log file. Tests that need several
services together (:func:`running_services`), one service many times
(:mod:`tests.support.replicas`), or the whole stack with faults (:class:`tests.support.system.System`)
all come through here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import httpx

from shared.devstack.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = ("intake", "dispatch", "tracking", "reporting", "notifications", "admin")


def clean_environment() -> dict[str, str]:
    """This process's environment without any service's settings (a test's settings come only from the test)."""
    prefixes = tuple(name.upper() + "__" for name in SERVICE_NAMES)
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def service_env(
    service: str,
    db_url: str,
    bootstrap: str,
    topics: dict[str, str],
    port: int,
    **extra: str,
) -> dict[str, str]:
    """The environment of a service process on the test's database, broker and topics (`extra`: more settings)."""
    prefix = service.upper() + "__"
    env = clean_environment()
    env.update(
        {
            f"{prefix}DATABASE__URL": db_url,
            f"{prefix}KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            f"{prefix}KAFKA__LIFECYCLE_TOPIC": topics["lifecycle"],
            f"{prefix}KAFKA__DEAD_LETTER_TOPIC": topics["dead_letter"],
            # The local broker has no idempotent producers (Apache Kafka in production does).
            f"{prefix}KAFKA__IDEMPOTENT_PRODUCER": "false",
            f"{prefix}HTTP__PORT": str(port),
        }
    )
    env.update({prefix + k: v for k, v in extra.items()})
    return env


def launch(
    service: str,
    env: dict[str, str],
    log_path: Path,
    *,
    cwd: Path = ROOT,
    new_session: bool = False,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python -m services.<service>`` with ``env``; its output goes to ``log_path``.

    ``new_session``: in its own process group (a fault test can stop the whole group).
    """
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file (empty when there is none yet)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    *,
    timeout_s: float = 90,
    path: str = "/readyz",
) -> httpx.Response:
    """Wait until ``url + path`` answers 200 (readiness by default); fails with the log's end if it exits or never does."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited with {proc.returncode}; log:\n{tail(log_path)}")
        try:
            response = httpx.get(url + path, timeout=3)
            if response.status_code == 200:
                return response
            last = response.text
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready after {timeout_s} s ({last}); log:\n{tail(log_path)}")


def stop(procs: Iterable[subprocess.Popen[bytes]], *, timeout_s: float = 40) -> None:
    """SIGTERM each process still running, wait for all (a drain takes a moment), kill what hangs."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_services(
    services: Sequence[str],
    env_for: Callable[[str, int], dict[str, str]],
    log_dir: Path,
    *,
    cwd: Path = ROOT,
    ready_path: str = "/readyz",
    timeout_s: float = 90,
    show_logs: bool = False,
) -> Iterator[dict[str, str]]:
    """Start the services together (``env_for(service, port)`` gives each one's environment), wait until each
    answers ``ready_path``, yield their base URLs, and stop them all at the end."""
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    urls: dict[str, str] = {}
    try:
        for service in services:
            port = free_port()
            log_path = log_dir / f"{service}.log"
            procs[service] = (launch(service, env_for(service, port), log_path, cwd=cwd), log_path)
            urls[service] = f"http://127.0.0.1:{port}"
        for service, (proc, log_path) in procs.items():
            wait_ready(urls[service], proc, log_path, timeout_s=timeout_s, path=ready_path)
        yield urls
    finally:
        stop(proc for proc, _ in procs.values())
        if show_logs or os.environ.get("HAZARD_E2E_SHOW_LOGS") == "1":
            for service, (_, log_path) in procs.items():
                print(f"--- {service}\n{tail(log_path, 5000)}")
