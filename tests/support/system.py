"""The whole system as real processes on loopback, for the fault suite, the abuse suite and the benchmark.

``System`` starts a real PostgreSQL and a Tansu broker (``shared.devstack``) on free ports
in a temp dir, creates the topics, applies every migration, writes a tokens file with many
principals (a reporter per grid, every department, an operator, a supervisor) and starts the
five services as subprocesses (``python -m services.<name>``), waiting for each ``/readyz``.
With notifications, it also starts the local receivers (``python -m shared.devstack.receivers``):
a real SMTP server writing each mail as an ``.eml`` file under ``mail_dir`` and a webhook
receiver on loopback writing one JSON line per call to ``webhook_log`` (``mails()``,
``webhook_calls()`` read them back).

All broker traffic goes through a :class:`~tests.support.tcp_proxy.TcpProxy`: Tansu listens on
a private port and *advertises the proxy's*, so clients reach it only through the proxy (a
client connects to the bootstrap address and then to the advertised one). The proxy sorts
connections by the service whose process owns the client socket, so a test can pause or cut
one service's broker traffic (``broker_link(name)``) or everyone's.

Faults: ``kill(name)`` (SIGKILL) / ``start_service(name)``, ``restart_postgres()``,
``pause_broker()`` / ``resume_broker()`` (SIGSTOP/SIGCONT of Tansu) and the proxy. Tansu keeps
everything in memory, so the broker is never restarted: "broker down" is a pause or a cut.
"""

from __future__ import annotations

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from bench.loadgen import Principal, make_principals, write_token_files
from shared.devstack._process import run_sync, tail
from shared.devstack.broker import LocalKafka
from shared.devstack.ports import free_port
from shared.devstack.postgres import LocalPostgres
from shared.devstack.runner import people_app_env
from shared.reference import ReferenceData, load_reference_data
from shared.roles import role_url
from shared.topics import DEAD_LETTER, LIFECYCLE, topic_partitions
from tests.support import processes
from tests.support.tcp_proxy import ALL, OTHER, TcpProxy

ROOT = Path(__file__).resolve().parents[2]
# The four services of the hazard's life; notifications tells people about it (#16).
SERVICES: tuple[str, ...] = ("intake", "dispatch", "tracking", "reporting")
ALL_SERVICES: tuple[str, ...] = (*SERVICES, "notifications")


@dataclass
class ServiceProcess:
    """One running service."""

    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of its HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


def _socket_inode_of_port(port: int) -> str | None:
    """The inode of the local TCP socket bound to 127.0.0.1:``port`` (from /proc/net/tcp)."""
    wanted = f":{port:04X}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(wanted):
                return fields[9]
    return None


def _pid_has_socket(pid: int, inode: str) -> bool:
    """Whether process ``pid`` holds the socket with this inode."""
    target = f"socket:[{inode}]"
    with contextlib.suppress(OSError):
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(fd.path) == target:
                    return True
    return False


class System:
    """PostgreSQL + Tansu (behind a controllable proxy) + the services (and receivers), as real processes."""

    def __init__(
        self,
        *,
        services: Sequence[str] = ALL_SERVICES,
        base_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        reference_dir: Path | None = None,
        lifecycle_partitions: int | None = None,
        ready_timeout_s: float = 120.0,
        pg_fast: bool = False,
        root: Path | None = None,
        proxy: bool = True,
        pg_settings: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the system; nothing starts until ``start``.

        ``root`` is the checkout the services run from (default: this one, or
        ``$HAZARD_SYSTEM_ROOT``, e.g. an exported commit while the working tree is mid-edit).
        ``proxy=False`` connects everyone to the broker directly (the benchmark: a Python proxy
        would be the bottleneck); the link faults then are unavailable.
        """
        self.use_proxy = proxy
        self.root = Path(root or os.environ.get("HAZARD_SYSTEM_ROOT") or ROOT)
        self.service_names = tuple(services)
        self._own_dir = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="hazard-system-"))
        # The unprivileged postgres OS user must be able to enter the directory.
        self.base.chmod(0o755)
        self.extra_env = dict(env or {})
        self.per_service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.reference_dir = reference_dir
        self.reference: ReferenceData = load_reference_data(reference_dir)
        self.lifecycle_partitions = lifecycle_partitions
        self.ready_timeout_s = ready_timeout_s
        self.postgres = LocalPostgres(
            data_dir=self.base / "pg",
            port=free_port(),
            log_path=self.base / "postgres.log",
            fast=pg_fast,
            extra_settings=pg_settings,
        )
        self.broker_port = free_port()
        self.proxy = TcpProxy(upstream_port=self.broker_port, classify=self._classify)
        self.kafka: LocalKafka | None = None
        self.services: dict[str, ServiceProcess] = {
            name: ServiceProcess(name=name, port=free_port(), log_path=self.base / f"{name}.log")
            for name in self.service_names
        }
        self.principals: list[Principal] = []
        self.tokens_yaml = self.base / "tokens.yaml"
        self.tokens_json = self.base / "tokens.json"
        self.lifecycle_topic = LIFECYCLE
        self.dead_letter_topic = DEAD_LETTER
        # The notifications service's receivers: a real SMTP server and a webhook endpoint.
        self.smtp_port = free_port()
        self.webhook_port = free_port()
        self.mail_dir = self.base / "mail"
        self.webhook_log = self.base / "webhooks.jsonl"
        self.receivers: subprocess.Popen[bytes] | None = None
        self.notifications_key = Fernet.generate_key().decode()

    # ------------------------------------------------------------------ addresses

    @property
    def bootstrap_servers(self) -> str:
        """The broker address clients use: the proxy (or the broker itself without one)."""
        return self.proxy.address if self.use_proxy else f"127.0.0.1:{self.broker_port}"

    @property
    def database_url(self) -> str:
        """SQLAlchemy asyncpg URL of the system's database."""
        return self.postgres.url()

    @property
    def urls(self) -> dict[str, str]:
        """Service name -> base URL."""
        return {name: svc.url for name, svc in self.services.items()}

    def url(self, name: str) -> str:
        """Base URL of one service."""
        return self.services[name].url

    # ------------------------------------------------------------------ principals

    def principal(
        self, role: str, *, grid_id: str | None = None, department_id: str | None = None
    ) -> Principal:
        """The first principal of a role (bound to the grid / department when given)."""
        for p in self.principals:
            if p.role != role:
                continue
            if grid_id and p.grid_id != grid_id:
                continue
            if department_id and p.department_id != department_id:
                continue
            return p
        raise LookupError(f"no {role} principal for grid={grid_id} department={department_id}")

    def headers(self, role: str, **scope: str) -> dict[str, str]:
        """Authorization header of a principal (see ``principal``)."""
        return self.principal(role, **scope).headers

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> System:
        """Start everything and wait until every service is ready."""
        try:
            self.postgres.start()
            if self.use_proxy:
                self.proxy.start()
            self.kafka = LocalKafka(
                port=self.broker_port,
                log_path=self.base / "tansu.log",
                advertised_port=self.proxy.port if self.use_proxy else None,
            )
            self.kafka.start()
            topics = topic_partitions(lifecycle_partitions=self.lifecycle_partitions)
            kafka = self.kafka
            run_sync(lambda: kafka.create_topics(topics))
            self._migrate()
            self.principals = make_principals(self.reference, reporters_per_grid=3)
            write_token_files(self.principals, self.base)
            if "notifications" in self.service_names:
                self.start_receivers()
            for name in self.service_names:
                self.start_service(name, wait=False)
            for name in self.service_names:
                self.wait_ready(name)
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "shared.migrate", "--database-url", self.database_url],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"migrations failed: {result.stdout}\n{result.stderr}")

    def service_environment(self, name: str) -> dict[str, str]:
        """The environment a service process gets."""
        prefix = name.upper() + "__"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(tuple(s.upper() + "__" for s in ALL_SERVICES))
        }
        env.update(
            {
                # Its own least-privileged role, as in production (shared.roles, made by the migrations).
                f"{prefix}DATABASE__URL": role_url(self.database_url, name),
                f"{prefix}KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
                f"{prefix}KAFKA__IDEMPOTENT_PRODUCER": "false",
                f"{prefix}KAFKA__LIFECYCLE_TOPIC": self.lifecycle_topic,
                f"{prefix}KAFKA__DEAD_LETTER_TOPIC": self.dead_letter_topic,
                f"{prefix}HTTP__PORT": str(self.services[name].port),
                f"{prefix}AUTH__TOKENS_FILE": str(self.tokens_yaml),
                f"{prefix}LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if "reporting" in self.services:
            # The people's pages on reporting call the other services from the browser (CORS).
            env.update(people_app_env(name, {n: s.port for n, s in self.services.items()}))
        if self.reference_dir is not None:
            env[f"{prefix}REFERENCE_DATA_DIR"] = str(self.reference_dir)
        if name == "notifications":
            env.update(
                {
                    f"{prefix}SECRET_KEY": self.notifications_key,
                    f"{prefix}SMTP__HOST": "127.0.0.1",
                    f"{prefix}SMTP__PORT": str(self.smtp_port),
                    # The receivers are on loopback.
                    f"{prefix}DELIVERY__ALLOW_PRIVATE_TARGETS": "true",
                }
            )
        env.update({prefix + k: v for k, v in self.extra_env.items()})
        env.update({prefix + k: v for k, v in self.per_service_env.get(name, {}).items()})
        return env

    def start_service(self, name: str, *, wait: bool = True) -> None:
        """Start (or start again) one service."""
        svc = self.services[name]
        if svc.pid is not None:
            return
        with svc.log_path.open("ab") as log:
            log.write(f"==== started at {time.strftime('%H:%M:%S')} ====\n".encode())
        svc.proc = processes.launch(
            name, self.service_environment(name), svc.log_path, cwd=self.root, new_session=True, append=True
        )
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str, *, timeout_s: float | None = None) -> None:
        """Wait until a service's /readyz answers 200."""
        svc = self.services[name]
        if svc.proc is None:
            raise AssertionError(f"{name} was never started")
        processes.wait_ready(svc.url, svc.proc, svc.log_path, timeout_s=timeout_s or self.ready_timeout_s)

    # ------------------------------------------------------------------ the receivers (notifications)

    def start_receivers(self) -> None:
        """Start the SMTP server and webhook receiver (a process of their own) and wait for both ports.

        Their ports are chosen now, not when the system was described (another process may have
        taken a free port since), and chosen again if one was taken meanwhile.
        """
        if self.receivers is not None and self.receivers.poll() is None:
            return
        log_path = self.base / "receivers.log"
        for _ in range(5):
            self.smtp_port, self.webhook_port = free_port(), free_port()
            with log_path.open("ab") as log:
                self.receivers = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "shared.devstack.receivers",
                        "--smtp-port",
                        str(self.smtp_port),
                        "--webhook-port",
                        str(self.webhook_port),
                        "--mail-dir",
                        str(self.mail_dir),
                        "--webhook-log",
                        str(self.webhook_log),
                    ],
                    cwd=self.root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._receivers_listening():
                return
        raise RuntimeError(f"the receivers did not start; log:\n{tail(log_path)}")

    def _receivers_listening(self) -> bool:
        assert self.receivers is not None
        deadline = time.monotonic() + self.ready_timeout_s
        for port in (self.smtp_port, self.webhook_port):
            while True:
                if self.receivers.poll() is not None:
                    return False  # a port was taken meanwhile: the caller tries others
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop_receivers()
                        return False
                    time.sleep(0.1)
        return True

    def stop_receivers(self) -> None:
        """Stop the receivers (what they wrote stays)."""
        if self.receivers is not None and self.receivers.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.receivers.pid, signal.SIGTERM)
            try:
                self.receivers.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.receivers.pid, signal.SIGKILL)
                self.receivers.wait(timeout=30)
        self.receivers = None

    def webhook_url(self, path: str = "/hook") -> str:
        """A URL on the webhook receiver (``/status/<code>/...`` answers that code)."""
        return f"http://127.0.0.1:{self.webhook_port}{path}"

    def webhook_calls(self) -> list[dict[str, Any]]:
        """Every call the webhook receiver logged: at, path, status, headers, body."""
        if not self.webhook_log.exists():
            return []
        calls = []
        for line in self.webhook_log.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                calls.append(json.loads(line))  # a line being written is read next time
        return calls

    def mails(self) -> list[EmailMessage]:
        """Every mail the SMTP server received (its .eml files, oldest first)."""
        if not self.mail_dir.exists():
            return []
        found = []
        for path in sorted(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    def kill(self, name: str) -> None:
        """SIGKILL a service (no graceful shutdown) and reap it."""
        svc = self.services[name]
        if svc.proc is not None and svc.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(timeout=30)
        svc.proc = None

    def terminate(self, name: str, timeout_s: float = 40.0) -> int | None:
        """SIGTERM a service and wait for its graceful shutdown (SIGKILL after ``timeout_s``)."""
        svc = self.services[name]
        code = None
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
            try:
                code = svc.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(name)
        svc.proc = None
        return code

    def restart_service(self, name: str) -> None:
        """SIGKILL then start again and wait until ready."""
        self.kill(name)
        self.start_service(name)

    def restart_postgres(self, *, down_s: float = 0.0) -> None:
        """Stop PostgreSQL (fast: sessions are cut), stay down ``down_s`` seconds, start it again."""
        self.postgres.stop(mode="fast")
        if down_s:
            time.sleep(down_s)
        self.postgres.start()

    def pause_broker(self) -> None:
        """Freeze Tansu (SIGSTOP): every connection goes silent."""
        assert self.kafka is not None
        self.kafka.pause()

    def resume_broker(self) -> None:
        """Continue Tansu."""
        assert self.kafka is not None
        self.kafka.resume()

    @contextlib.contextmanager
    def broker_paused(self) -> Iterator[None]:
        """Tansu frozen for the duration of the block."""
        self.pause_broker()
        try:
            yield
        finally:
            self.resume_broker()

    def rss_kib(self, name: str) -> int | None:
        """Resident memory of a service process (VmRSS, KiB)."""
        pid = self.services[name].pid
        if pid is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    def stop(self) -> None:
        """Stop the services (SIGTERM, then SIGKILL), the broker, the proxy and PostgreSQL."""
        for svc in self.services.values():
            if svc.proc is not None and svc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(svc.proc.pid, signal.SIGTERM)
        for name, svc in self.services.items():
            if svc.proc is not None:
                try:
                    svc.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.kill(name)
                svc.proc = None
        self.stop_receivers()
        if self.kafka is not None:
            self.kafka.stop()
        self.proxy.stop()
        with contextlib.suppress(Exception):
            self.postgres.stop(mode="immediate")
        if self._own_dir and os.environ.get("HAZARD_KEEP_STACK_DIR") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self, name: str, lines: int = 60) -> str:
        """The end of a service's log."""
        return tail(self.services[name].log_path, lines)

    # ------------------------------------------------------------------ broker links (the proxy)

    def _classify(self, client_port: int) -> str:
        """The service owning the client socket with this source port (else ``other``)."""
        inode = _socket_inode_of_port(client_port)
        if inode is None:
            return OTHER
        for name, svc in self.services.items():
            pid = svc.pid
            if pid is not None and _pid_has_socket(pid, inode):
                return name
        return OTHER

    def pause_link(self, name: str = ALL) -> None:
        """Hold the bytes between a service (or everyone) and the broker."""
        self.proxy.pause(name)

    def resume_link(self, name: str = ALL) -> None:
        """Let them flow again."""
        self.proxy.resume(name)

    def cut_link(self, name: str = ALL) -> None:
        """Close a service's (or everyone's) broker connections and refuse new ones."""
        self.proxy.cut(name)

    def restore_link(self, name: str = ALL) -> None:
        """Accept connections again."""
        self.proxy.restore(name)
