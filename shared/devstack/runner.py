"""The one-command local system: PostgreSQL, the broker, topics, migrations, tokens and the four services."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from shared.devstack._process import (
    pid_alive,
    pid_cmdline,
    run_sync,
    signal_group,
    tail,
    terminate_group,
)
from shared.devstack.broker import BrokerError, LocalKafka
from shared.devstack.ports import port_is_free
from shared.devstack.postgres import LocalPostgres, PostgresError
from shared.devstack.tokens import TOKENS_FILE, DemoToken, ensure_demo_tokens
from shared.reference import load_reference_data
from shared.roles import role_url
from shared.topics import topic_partitions

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "dispatch", "tracking", "reporting", "notifications")
DEFAULT_PG_PORT = 55432
DEFAULT_KAFKA_PORT = 59092
DEFAULT_SERVICE_PORTS = {
    "intake": 8101,
    "dispatch": 8102,
    "tracking": 8103,
    "reporting": 8104,
    "notifications": 8105,
}
# The local receivers of notifications: a real SMTP server and a webhook endpoint.
DEFAULT_SMTP_PORT = 8025
DEFAULT_WEBHOOK_PORT = 8106
NOTIFICATIONS_KEY_FILE = "notifications-secret.key"
# Used only while shared.topics does not exist yet.
SERVICE_STOP_TIMEOUT = 20.0
READY_LINE = "devstack ready"
REGISTRY_FILE = "processes.json"
SEEDED_MARKER = "seeded"
# Database time of the last stop that drained: every event written before it had been published and
# consumed by every group, so an empty broker needs only what was written since (absent: everything
# retained).
DRAINED_MARKER = "broker-drained-at"
# That moment: now, or the start of the oldest transaction still open in this database (it may yet
# commit outbox rows dated then).
_DRAINED_FROM = (
    "select least(clock_timestamp(), (select min(xact_start) from pg_stat_activity "
    "where datname = current_database() and pid <> pg_backend_pid()))"
)
DRAIN_TIMEOUT_ENV = "HAZARD_DRAIN_TIMEOUT_S"
DEFAULT_DRAIN_TIMEOUT = 30.0
LIFECYCLE_TOPIC = "hazard.lifecycle"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PREFLIGHT = 2


class StopRequested(BaseException):
    """Raised by the SIGINT/SIGTERM/SIGHUP handler to unwind into an orderly shutdown."""


class StartupError(RuntimeError):
    """A step of bringing the stack up failed; the message is for a person."""


def say(message: str) -> None:
    """Print one runner message."""
    print(f"[devstack] {message}", flush=True)


@dataclass(frozen=True)
class StatePaths:
    """Where a run keeps its data, logs, tokens and process registry."""

    root: Path

    @property
    def pg_data(self) -> Path:
        """PostgreSQL data directory."""
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        """Directory of log files, one per process."""
        return self.root / "logs"

    @property
    def tokens(self) -> Path:
        """Hashed tokens file handed to the services."""
        return self.root / TOKENS_FILE

    @property
    def registry(self) -> Path:
        """JSON record of the processes a run started (for `stop` after a crash)."""
        return self.root / REGISTRY_FILE

    @property
    def mail(self) -> Path:
        """Where the local SMTP receiver writes each mail as an .eml file."""
        return self.root / "mail"

    @property
    def webhook_log(self) -> Path:
        """Where the local webhook receiver writes one JSON line per call."""
        return self.root / "webhooks.jsonl"

    def log(self, name: str) -> Path:
        """Log file of one process."""
        return self.logs / f"{name}.log"


@dataclass(frozen=True)
class StackPorts:
    """The ports the stack listens on (all on 127.0.0.1)."""

    postgres: int
    kafka: int
    services: Mapping[str, int]
    smtp: int = DEFAULT_SMTP_PORT
    webhook: int = DEFAULT_WEBHOOK_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackPorts:
        """Read ``HAZARD_PG_PORT``, ``HAZARD_KAFKA_PORT`` and ``HAZARD_<SERVICE>_PORT``, with defaults."""

        def read(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StartupError(f"{name}={raw!r} is not a TCP port (1-65535)")
            return int(raw)

        return cls(
            postgres=read("HAZARD_PG_PORT", DEFAULT_PG_PORT),
            kafka=read("HAZARD_KAFKA_PORT", DEFAULT_KAFKA_PORT),
            services={
                name: read(f"HAZARD_{name.upper()}_PORT", DEFAULT_SERVICE_PORTS[name]) for name in SERVICES
            },
            smtp=read("HAZARD_SMTP_PORT", DEFAULT_SMTP_PORT),
            webhook=read("HAZARD_WEBHOOK_PORT", DEFAULT_WEBHOOK_PORT),
        )

    def labelled(self, with_services: bool) -> list[tuple[str, int, str]]:
        """(what, port, env var) for every port the run will listen on."""
        ports = [
            ("PostgreSQL", self.postgres, "HAZARD_PG_PORT"),
            ("Kafka broker", self.kafka, "HAZARD_KAFKA_PORT"),
        ]
        if with_services:
            ports += [(name, self.services[name], f"HAZARD_{name.upper()}_PORT") for name in SERVICES]
            ports += [
                ("SMTP receiver", self.smtp, "HAZARD_SMTP_PORT"),
                ("webhook receiver", self.webhook, "HAZARD_WEBHOOK_PORT"),
            ]
        return ports


def service_env(
    name: str, *, database_url: str, bootstrap_servers: str, port: int, tokens_file: Path
) -> dict[str, str]:
    """The settings a service receives from the runner (env prefix ``<NAME>__``, nested with ``__``)."""
    prefix = name.upper()
    return {
        f"{prefix}__DATABASE__URL": database_url,
        f"{prefix}__KAFKA__BOOTSTRAP_SERVERS": bootstrap_servers,
        f"{prefix}__HTTP__PORT": str(port),
        f"{prefix}__AUTH__TOKENS_FILE": str(tokens_file),
        # Tansu has no InitProducerId support.
        f"{prefix}__KAFKA__IDEMPOTENT_PRODUCER": "false",
    }


def people_app_env(name: str, ports: Mapping[str, int]) -> dict[str, str]:
    """The people's pages (/app/ on reporting) and the APIs they call from the browser (CORS)."""
    page_origins = [f"http://127.0.0.1:{ports['reporting']}", f"http://localhost:{ports['reporting']}"]
    prefix = name.upper()
    env = {f"{prefix}__HTTP__CORS_ORIGINS": json.dumps(page_origins)}
    if name == "reporting":
        for api in ("intake", "dispatch", "tracking"):
            if api in ports:
                env[f"REPORTING__APP__{api.upper()}_URL"] = f"http://127.0.0.1:{ports[api]}"
    return env


def notifications_env(*, key_file: Path, smtp_port: int) -> dict[str, str]:
    """What the notifications service needs besides the common settings, for the local stack.

    A signing-secret encryption key made once per state dir (kept in ``key_file``, 0600), the local
    SMTP receiver, and webhook targets on loopback allowed (they are refused in production).
    """
    if not key_file.exists():
        from cryptography.fernet import Fernet

        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    return {
        "NOTIFICATIONS__SECRET_KEY": key_file.read_text().strip(),
        "NOTIFICATIONS__SMTP__HOST": "127.0.0.1",
        "NOTIFICATIONS__SMTP__PORT": str(smtp_port),
        "NOTIFICATIONS__DELIVERY__ALLOW_PRIVATE_TARGETS": "true",
    }


def demo_subscriptions(*, notifications_url: str, webhook_url: str, operator_token: str) -> int:
    """Subscribe the demo departments and escalation targets to the local receivers (once: skipped
    when any subscription exists); returns how many were created."""
    headers = {"Authorization": f"Bearer {operator_token}", "Content-Type": "application/json"}

    def call(method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(notifications_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"null")

    if call("GET", "/api/v1/subscriptions")["subscriptions"]:
        return 0
    wanted: list[dict[str, Any]] = []
    for department in (d.id for d in load_reference_data().departments):
        wanted.append(
            {
                "scope": "department",
                "scope_id": department,
                "channel": "webhook",
                "url": f"{webhook_url}/{department}",
                "secret": f"demo-secret-{department}-0000",
            }
        )
        wanted.append(
            {
                "scope": "department",
                "scope_id": department,
                "channel": "email",
                "address": f"duty@{department}.example.org",
            }
        )
    for target in ("supervisor", "district"):
        wanted.append(
            {
                "scope": "escalation",
                "scope_id": target,
                "channel": "email",
                "address": f"{target}@henggang.example.org",
                "language": "en",
            }
        )
    for body in wanted:
        call("POST", "/api/v1/subscriptions", body)
    return len(wanted)


def load_topic_partitions() -> dict[str, int]:
    """Topic name -> partition count, as the services declare them (``shared.topics``)."""
    return dict(topic_partitions())


def seed_demo(
    *, urls: Mapping[str, str], tokens: Sequence[DemoToken], log_path: Path, repo_root: Path
) -> bool:
    """Load demo data through the public APIs with ``bench.loadgen --demo``; return True if it ran.

    A few hundred realistic hazards from the demo reporters' grids, then the demo departments
    acknowledge (most on time, some in a later round, some never), return a few, rectify, the
    reporters verify (some verifications fail and go back to rectification), and a few closed
    hazards relapse at the same building. Runs once per state dir (the runner keeps a marker).
    """
    # The generator reads plain tokens from a private file, removed once it is done.
    tokens_path = log_path.parent / "seed-tokens.json"
    entries = [
        {
            "principal": t.who.principal,
            "role": t.who.role,
            "token": t.token,
            "grid_id": t.who.grid_id,
            "department_id": t.who.department_id,
        }
        for t in tokens
    ]
    fd = os.open(tokens_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(entries, handle)
    command = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--demo",
        "--count",
        "200",
        "--intake",
        urls["intake"],
        "--dispatch",
        urls["dispatch"],
        "--tracking",
        urls["tracking"],
        "--reporting",
        urls["reporting"],
        "--tokens",
        str(tokens_path),
    ]
    say(f"demo data: loading ~200 hazards with department behaviour (a minute or two; log {log_path}) ...")
    try:
        with log_path.open("ab") as log:
            result = subprocess.run(
                command,
                cwd=repo_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                # Its progress: a bar on this terminal, or lines every few seconds in the log.
                stderr=None if sys.stderr.isatty() else subprocess.STDOUT,
                check=False,
            )
    finally:
        tokens_path.unlink(missing_ok=True)
    if result.returncode != 0:
        say(f"demo data: bench.loadgen failed with code {result.returncode}; see {log_path}")
        return False
    say("demo data: loaded")
    return True


DEMO_HISTORY_RECORDS = 6000


def import_demo_history(*, intake_url: str, operator_token: str, records: int = DEMO_HISTORY_RECORDS) -> int:
    """Import a year of past records (#18 history import) so the year-on-year comparison shows:
    ``records`` hazards observed 200 to 540 days ago, through ``POST /api/v1/imports``. Returns
    how many were imported (0 when the import was refused or failed: the demo goes on without)."""
    import httpx

    # The benchmark's generator of template rows (the demo loader, bench.loadgen, lives there too).
    from bench.intake_history_import import build_csv

    grids = [g.id for g in load_reference_data().grids]
    data = build_csv(records, grids=grids, end=datetime.now(UTC) - timedelta(days=180))
    say(f"demo history: importing {records} past records (a year, ending 6 months ago) ...")
    try:
        response = httpx.post(
            f"{intake_url}/api/v1/imports",
            files={"file": ("demo-history.csv", data, "text/csv")},
            data={"on_error": "skip"},
            headers={"Authorization": f"Bearer {operator_token}"},
            timeout=600,
        )
    except httpx.HTTPError as exc:
        say(f"demo history: skipped ({exc})")
        return 0
    if response.status_code != 200:
        say(f"demo history: refused ({response.status_code}: {response.text[:300]})")
        return 0
    imported = int(response.json()["imported"])
    say(f"demo history: {imported} imported")
    return imported


# -- process registry ------------------------------------------------------------------------


def read_registry(paths: StatePaths) -> dict[str, Any]:
    """Read processes.json (empty when absent or unreadable)."""
    try:
        data = json.loads(paths.registry.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_alive(entry: Mapping[str, Any]) -> bool:
    """True when a recorded process still runs with the same command line (not a reused pid)."""
    pid = entry.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    return pid_cmdline(pid) == entry.get("argv")


def runner_alive(registry: Mapping[str, Any]) -> int | None:
    """The pid of a live runner recorded in the registry, else None."""
    runner = registry.get("runner")
    if isinstance(runner, dict) and runner.get("pid") != os.getpid() and recorded_alive(runner):
        pid = runner["pid"]
        return pid if isinstance(pid, int) else None
    return None


@dataclass
class Stack:
    """One run of the local system; ``shutdown`` undoes whatever was started."""

    paths: StatePaths
    ports: StackPorts
    with_services: bool = True
    service_module: str = "services.{name}"
    ready_timeout: float = 90.0
    seed: bool = True
    repo_root: Path = REPO_ROOT
    postgres: LocalPostgres = field(init=False)
    kafka: LocalKafka = field(init=False)
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    tokens: list[DemoToken] = field(default_factory=list, init=False)
    _registry: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        """Describe the servers; nothing starts yet."""
        self.postgres = LocalPostgres(
            data_dir=self.paths.pg_data, port=self.ports.postgres, log_path=self.paths.log("postgres")
        )
        self.kafka = LocalKafka(port=self.ports.kafka, log_path=self.paths.log("tansu"))

    # -- bookkeeping -------------------------------------------------------------------------

    def _record(self, name: str, pid: int, argv: list[str]) -> None:
        """Remember a started process in processes.json."""
        self._registry.setdefault("processes", {})[name] = {"pid": pid, "argv": argv}
        self._write_registry()

    def _write_registry(self) -> None:
        """Persist the registry."""
        self._registry["runner"] = {"pid": os.getpid(), "argv": pid_cmdline(os.getpid())}
        self._registry["ports"] = {
            "postgres": self.ports.postgres,
            "kafka": self.ports.kafka,
            **self.ports.services,
        }
        self.paths.registry.write_text(json.dumps(self._registry, indent=2))

    @contextlib.contextmanager
    def _step(self, what: str) -> Iterator[None]:
        """Print a step and how long it took."""
        started = time.monotonic()
        say(f"{what} ...")
        yield
        say(f"{what}: done in {time.monotonic() - started:.2f}s")

    # -- bring-up ----------------------------------------------------------------------------

    def preflight(self, reset: bool) -> None:
        """Refuse to start over a live or crashed run, or on ports someone else holds."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        registry = read_registry(self.paths)
        runner = runner_alive(registry)
        if runner is not None:
            raise StartupError(
                f"a devstack run (pid {runner}) already uses {self.paths.root}; "
                "stop it with Ctrl-C there or `python -m shared.devstack stop`"
            )
        left = [name for name, entry in registry.get("processes", {}).items() if recorded_alive(entry)]
        if self.postgres.is_running():
            left.append(f"postgres (pid {self.postgres.pid()})")
        if left:
            raise StartupError(
                f"processes from an earlier run are still alive ({', '.join(left)}); "
                "clean up with `python -m shared.devstack stop`"
            )
        taken = [
            f"port {port} ({what}; set {env} to use another)"
            for what, port, env in self.ports.labelled(self.with_services)
            if not port_is_free(port)
        ]
        if taken:
            raise StartupError("already in use by another process: " + "; ".join(taken))
        if reset:
            say(f"--reset: removing {self.paths.pg_data}")
            shutil.rmtree(self.paths.pg_data, ignore_errors=True)
            (self.paths.root / SEEDED_MARKER).unlink(missing_ok=True)
            (self.paths.root / DRAINED_MARKER).unlink(missing_ok=True)
        self._write_registry()

    def start_infrastructure(self) -> None:
        """Start PostgreSQL and the broker, create topics and run migrations."""
        if not self.postgres.is_initialized():
            with self._step(f"initialising PostgreSQL cluster in {self.paths.pg_data}"):
                self.postgres.init()
        with self._step(f"starting PostgreSQL on 127.0.0.1:{self.ports.postgres}"):
            self.postgres.start()
        pg_pid = self.postgres.pid()
        if pg_pid is not None:
            self._record("postgres", pg_pid, pid_cmdline(pg_pid) or [])
        with self._step(f"starting the Kafka-protocol broker (Tansu) on 127.0.0.1:{self.ports.kafka}"):
            self.kafka.start()
        if self.kafka.pid is not None:
            self._record("tansu", self.kafka.pid, pid_cmdline(self.kafka.pid) or self.kafka.command())
        topics = load_topic_partitions()
        with self._step("creating topics " + ", ".join(f"{n} ({c})" for n, c in topics.items())):
            run_sync(lambda: self.kafka.create_topics(topics))
        self.migrate()
        self.refill_broker()

    def refill_broker(self) -> None:
        """An empty lifecycle topic (Tansu keeps nothing across restarts) gets the retained events again.

        Sent before the services start, from the outboxes, each hazard's events in the order they
        were first published: everything written since the last stop that drained (or everything
        retained). The
        services' inboxes skip what they had applied; what they had not yet applied (the broker
        stopped or was killed first) is applied now.
        """
        from shared.outbox_replay import EVERYTHING, replay

        ends = run_sync(lambda: self.kafka.end_offsets(LIFECYCLE_TOPIC))
        if any(ends.values()):
            return
        marker = self.paths.root / DRAINED_MARKER
        since = EVERYTHING
        with contextlib.suppress(OSError, ValueError):
            since = datetime.fromisoformat(marker.read_text().strip())
        described = "everything retained" if since == EVERYTHING else f"everything written since {since}"
        with self._step(f"the broker is empty: relaying {described} again from the outboxes"):
            sent = run_sync(
                lambda: replay(
                    database_url=self.postgres.url(),
                    bootstrap_servers=self.kafka.bootstrap_servers,
                    since=since,
                    idempotent_producer=False,
                )
            )
            say(f"{sent} events sent again")

    def migrate(self) -> None:
        """Apply database migrations with ``python -m shared.migrate``."""
        log_path = self.paths.log("migrate")
        with self._step("applying migrations"), log_path.open("ab") as log:
            result = subprocess.run(
                [sys.executable, "-m", "shared.migrate", "--database-url", self.postgres.url()],
                cwd=self.repo_root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                check=False,
            )
        if result.returncode != 0:
            raise StartupError(f"migrations failed (code {result.returncode}); {log_path}:\n{tail(log_path)}")

    def start_services(self) -> None:
        """Start the services (and the local mail and webhook receivers); wait until each answers GET /readyz with 200."""
        modules = {name: self.service_module.format(name=name) for name in SERVICES}
        self._start_receivers()
        for name, module in modules.items():
            env = dict(os.environ)
            env.update(
                service_env(
                    name,
                    # Its own role, granted only its schema by the migrations (shared.roles).
                    database_url=role_url(self.postgres.url(), name),
                    bootstrap_servers=self.kafka.bootstrap_servers,
                    port=self.ports.services[name],
                    tokens_file=self.paths.tokens.absolute(),
                )
            )
            env.update(people_app_env(name, self.ports.services))
            if name == "notifications":
                env.update(
                    notifications_env(
                        key_file=self.paths.root / NOTIFICATIONS_KEY_FILE, smtp_port=self.ports.smtp
                    )
                )
            if name == "intake":
                # Uploaded photos: the directory store, kept with the run's other state.
                env["INTAKE__PHOTOS__DIRECTORY"] = str(self.paths.root.absolute() / "photos")
            env["PYTHONUNBUFFERED"] = "1"
            argv = [sys.executable, "-m", module]
            with self.paths.log(name).open("ab") as log:
                log.write(
                    f"==== devstack started {module} at {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n".encode()
                )
                log.flush()
                proc = subprocess.Popen(
                    argv,
                    cwd=self.repo_root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.services[name] = proc
            self._record(name, proc.pid, pid_cmdline(proc.pid) or argv)
        with self._step("waiting for the services' /readyz"):
            self._wait_services_ready()

    def _start_receivers(self) -> None:
        """Start the local SMTP server and webhook receiver that notifications are sent to."""
        argv = [
            sys.executable,
            "-m",
            "shared.devstack.receivers",
            "--smtp-port",
            str(self.ports.smtp),
            "--webhook-port",
            str(self.ports.webhook),
            "--mail-dir",
            str(self.paths.mail),
            "--webhook-log",
            str(self.paths.webhook_log),
        ]
        with self.paths.log("receivers").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=self.repo_root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.services["receivers"] = proc
        self._record("receivers", proc.pid, pid_cmdline(proc.pid) or argv)

    def subscribe_demo(self) -> None:
        """Point the demo departments' notifications at the local receivers (first run only)."""
        operator = next((t.token for t in self.tokens if t.who.role == "operator"), None)
        if not self.with_services or operator is None:
            return
        try:
            created = demo_subscriptions(
                notifications_url=f"http://127.0.0.1:{self.ports.services['notifications']}",
                webhook_url=f"http://127.0.0.1:{self.ports.webhook}",
                operator_token=operator,
            )
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
            say(f"demo subscriptions: skipped ({exc})")
            return
        if created:
            say(f"demo subscriptions: {created} (webhooks and mails to the local receivers)")

    def _wait_services_ready(self) -> None:
        """Poll every service's /readyz until all answer 200, one dies, or the timeout passes."""
        waiting = set(SERVICES)
        deadline = time.monotonic() + self.ready_timeout
        while waiting:
            for name in sorted(waiting):
                proc = self.services[name]
                if proc.poll() is not None:
                    raise StartupError(
                        f"{name} exited with code {proc.returncode} while starting; "
                        f"{self.paths.log(name)}:\n{tail(self.paths.log(name))}"
                    )
                if _ready(self.ports.services[name]):
                    say(f"{name} is ready on port {self.ports.services[name]}")
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                details = "\n".join(
                    f"--- {name}: no 200 from /readyz; {self.paths.log(name)}:\n{tail(self.paths.log(name))}"
                    for name in sorted(waiting)
                )
                raise StartupError(
                    f"not ready after {self.ready_timeout:.0f}s: {', '.join(sorted(waiting))}\n{details}"
                )
            if waiting:
                time.sleep(0.25)

    def seed_once(self) -> None:
        """Run the demo-data hook once per state dir."""
        marker = self.paths.root / SEEDED_MARKER
        if not self.seed or not self.with_services or marker.exists():
            return
        urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.services.items()}
        if seed_demo(
            urls=urls, tokens=self.tokens, log_path=self.paths.log("seed"), repo_root=self.repo_root
        ):
            operator = next((t.token for t in self.tokens if t.who.role == "operator"), None)
            if operator is not None:
                import_demo_history(intake_url=urls["intake"], operator_token=operator)
            marker.touch()

    def banner(self) -> str:
        """The text shown once everything is up."""
        rule = "=" * 78
        lines = [rule, " hazard-dispatch local stack is up - Ctrl-C stops everything", ""]
        if self.with_services:
            for name in SERVICES:
                base = f"http://127.0.0.1:{self.ports.services[name]}"
                lines.append(f"   {name:<13} {base:<24} OpenAPI {base}/docs   AsyncAPI {base}/asyncapi")
            lines.append(
                f"   {'people':<13} http://127.0.0.1:{self.ports.services['reporting']}/app/  "
                "<- sign in here with any token below: department desk, grid member, operator's queue"
            )
            lines.append(f"   {'dashboard':<13} http://127.0.0.1:{self.ports.services['reporting']}/")
            lines.append(
                f"   {'admin':<13} http://127.0.0.1:{self.ports.services['reporting']}/admin (an operator token)"
            )
            lines.append(
                f"   {'mail':<13} SMTP 127.0.0.1:{self.ports.smtp}; each mail sent is a .eml file in {self.paths.mail}/"
            )
            lines.append(
                f"   {'webhooks':<13} http://127.0.0.1:{self.ports.webhook}/; each call is a JSON line in {self.paths.webhook_log}"
            )
        else:
            lines.append(f"   {'services':<13} not started (--no-services)")
        lines += [
            f"   {'database':<13} {self.postgres.url()}",
            f"   {'broker':<13} {self.kafka.bootstrap_servers} (Tansu, in memory: refilled from the outboxes at every start)",
            f"   {'logs':<13} {self.paths.logs}/",
            "",
            f" demo tokens (Authorization: Bearer <token>; also in {self.paths.root / 'demo-tokens.txt'}):",
        ]
        for token in self.tokens:
            lines.append(
                f"   {token.who.role:<11} {token.who.principal:<24} {token.who.scope:<30} {token.token}"
            )
        lines.append(rule)
        return "\n".join(lines)

    # -- running -----------------------------------------------------------------------------

    def supervise(self) -> int:
        """Block until a signal arrives (StopRequested) or a child dies (returns a failure code)."""
        while True:
            for name, proc in self.services.items():
                if proc.poll() is not None:
                    say(f"{name} exited with code {proc.returncode}; {self.paths.log(name)}:")
                    print(tail(self.paths.log(name)), flush=True)
                    return EXIT_FAILED
            if not self.kafka.is_running():
                say(f"the broker exited; {self.kafka.log_path}:")
                print(tail(self.kafka.log_path), flush=True)
                return EXIT_FAILED
            if not self.postgres.is_running():
                say(f"PostgreSQL exited; {self.postgres.log_path}:")
                print(tail(self.postgres.log_path), flush=True)
                return EXIT_FAILED
            time.sleep(0.5)

    def drain(self, timeout: float) -> bool:
        """Stop HTTP (SIGUSR1: 503), then wait until no outbox row waits and every group has lag 0.

        Returns True when drained, and records the moment in the state dir; otherwise says what was
        left after ``timeout`` seconds (kept in PostgreSQL: the next run relays it again).
        """
        # The services only: the local mail and webhook receivers have no outbox and no SIGUSR1 handler.
        running = {
            name: proc for name, proc in self.services.items() if name in SERVICES and proc.poll() is None
        }
        if not running or not self.kafka.is_running() or not self.postgres.is_running():
            return False
        say(f"draining (at most {timeout:.0f}s): HTTP refuses new requests; relays and consumers finish ...")
        for proc in running.values():
            signal_group(proc.pid, signal.SIGUSR1)
        started = time.monotonic()
        outcome = run_sync(lambda: self._await_drained(list(running), timeout))
        drained_at, left = outcome
        if drained_at is None:
            say(
                f"drain incomplete after {timeout:.0f}s, left: {'; '.join(left)}. Nothing is lost: the "
                "outboxes keep every event and the next `make run` relays them again"
            )
            return False
        (self.paths.root / DRAINED_MARKER).write_text(drained_at.isoformat())
        say(f"drained in {time.monotonic() - started:.1f}s: outboxes empty, every consumer group at lag 0")
        return True

    async def _await_drained(self, names: list[str], wait_s: float) -> tuple[datetime | None, list[str]]:
        """(database time from which everything published was consumed, or None; what was left)."""
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        from shared.outbox import unpublished_count_query

        engine = create_async_engine(self.postgres.url())
        unions = " union all ".join(f"select '{name}', ({unpublished_count_query(name)})" for name in names)
        left: list[str] = []
        deadline = time.monotonic() + wait_s
        try:
            while True:
                left = []
                try:
                    # In this order: a row written before ``now`` is either still unpublished in the
                    # outbox read after it, or committed, hence on the broker before the lag is read.
                    # A replay goes by the time a row's transaction started (``created_at``), so
                    # ``now`` is no later than the start of any transaction still open: a row it
                    # commits after the drain is replayed.
                    async with engine.connect() as conn:
                        now = (await conn.execute(text(_DRAINED_FROM))).scalar_one()
                        waiting = (await conn.execute(text(unions))).all()
                    lag = await self.kafka.consumer_lag(LIFECYCLE_TOPIC, [f"hazard-{n}" for n in names])
                    left += [f"{n} outbox {c} unpublished" for n, c in waiting if c]
                    left += [f"{group} {behind} behind" for group, behind in lag.items() if behind]
                except Exception as exc:  # the drain is best effort; the message says why it stopped
                    left = [f"could not measure ({type(exc).__name__}: {exc})"]
                    return None, left
                if not left:
                    return now, []
                if time.monotonic() >= deadline:
                    return None, left
                await asyncio.sleep(0.5)
        finally:
            await engine.dispose()

    def shutdown(self) -> None:
        """Drain, then stop services (SIGTERM, SIGKILL after 20 s), then the broker, then PostgreSQL."""
        if self.services:
            self.drain(_drain_timeout(os.environ))
        if self.services:
            say("stopping services ...")
            for proc in self.services.values():
                if proc.poll() is None:
                    signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + SERVICE_STOP_TIMEOUT
            for name, proc in self.services.items():
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    say(f"{name} did not stop within {SERVICE_STOP_TIMEOUT:.0f}s: killing it")
                code = terminate_group(proc, timeout=0)
                if code not in (0, -signal.SIGTERM):
                    say(f"{name} exited with code {code}")
            self.services.clear()
        if self.kafka.is_running():
            say("stopping the broker ...")
        self.kafka.stop()
        if self.postgres.is_running():
            say("stopping PostgreSQL ...")
        try:
            self.postgres.stop(mode="fast")
        except PostgresError as exc:
            say(f"could not stop PostgreSQL: {exc}")
        self.paths.registry.unlink(missing_ok=True)
        say("stopped")


def _drain_timeout(env: Mapping[str, str]) -> float:
    """``HAZARD_DRAIN_TIMEOUT_S`` (seconds the stop waits for the stack to empty), default 30."""
    try:
        return max(0.0, float(env.get(DRAIN_TIMEOUT_ENV) or DEFAULT_DRAIN_TIMEOUT))
    except ValueError:
        return DEFAULT_DRAIN_TIMEOUT


def _ready(port: int) -> bool:
    """True when GET /readyz on the port answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    """Signal handler: unwind into the orderly shutdown."""
    raise StopRequested(signal.Signals(signum).name)


def run_command(args: argparse.Namespace) -> int:
    """``run``: bring the stack up, stay in the foreground, stop everything on Ctrl-C or SIGTERM."""
    try:
        ports = StackPorts.from_env(os.environ)
    except StartupError as exc:
        say(str(exc))
        return EXIT_PREFLIGHT
    stack = Stack(
        paths=StatePaths(args.state_dir.absolute()),
        ports=ports,
        with_services=not args.no_services,
        service_module=args.service_module,
        ready_timeout=args.ready_timeout,
        seed=not args.no_seed,
    )
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    try:
        stack.preflight(reset=args.reset)
    except StartupError as exc:
        # Nothing of ours runs yet; whatever preflight found belongs to someone else.
        say(str(exc))
        return EXIT_PREFLIGHT
    except StopRequested:
        return EXIT_OK
    code = EXIT_OK
    try:
        try:
            stack.start_infrastructure()
            stack.tokens = ensure_demo_tokens(stack.paths.root)
            if stack.with_services:
                stack.start_services()
                stack.subscribe_demo()
                stack.seed_once()
        except (StartupError, PostgresError, BrokerError) as exc:
            say(f"startup failed: {exc}")
            return EXIT_FAILED
        print(stack.banner(), flush=True)
        say(READY_LINE)
        code = stack.supervise()
    except StopRequested as stop:
        say(f"{stop.args[0] if stop.args else 'signal'} received")
        code = EXIT_OK
    finally:
        # A second Ctrl-C must not abort the cleanup half way.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.shutdown()
    return code


def stop_command(args: argparse.Namespace) -> int:
    """``stop``: end a run still alive or left behind by a crash, including its PostgreSQL."""
    paths = StatePaths(args.state_dir.absolute())
    registry = read_registry(paths)
    runner = runner_alive(registry)
    if runner is not None:
        say(f"asking the running devstack (pid {runner}) to stop ...")
        os.kill(runner, signal.SIGTERM)
        deadline = time.monotonic() + SERVICE_STOP_TIMEOUT + 60
        while pid_alive(runner) and time.monotonic() < deadline:
            time.sleep(0.2)
    for name, entry in registry.get("processes", {}).items():
        if name == "postgres" or not recorded_alive(entry):
            continue
        pid = entry["pid"]
        say(f"stopping {name} (pid {pid}) ...")
        signal_group(pid, signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)
        deadline = time.monotonic() + SERVICE_STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_group(pid, signal.SIGKILL)
    postgres = LocalPostgres(data_dir=paths.pg_data, port=_postmaster_port(paths.pg_data) or DEFAULT_PG_PORT)
    if postgres.is_running():
        say(f"stopping PostgreSQL (pid {postgres.pid()}) with pg_ctl stop -m fast ...")
        postgres.stop(mode="fast")
    paths.registry.unlink(missing_ok=True)
    say("nothing left running")
    return EXIT_OK


def status_command(args: argparse.Namespace) -> int:
    """``status``: show what of the stack runs; exit 0 only when a run is up."""
    paths = StatePaths(args.state_dir.absolute())
    registry = read_registry(paths)
    runner = runner_alive(registry)
    say(f"state dir {paths.root}")
    say(f"runner: {'running, pid ' + str(runner) if runner else 'not running'}")
    postgres = LocalPostgres(data_dir=paths.pg_data, port=_postmaster_port(paths.pg_data) or DEFAULT_PG_PORT)
    pg_pid = postgres.pid()
    pg_state = f"running, pid {pg_pid}, port {postgres.port}" if pg_pid else "not running"
    say(f"postgres: {pg_state}")
    ports = registry.get("ports", {})
    for name, entry in registry.get("processes", {}).items():
        if name == "postgres":
            continue
        state = f"running, pid {entry.get('pid')}" if recorded_alive(entry) else "not running"
        port = ports.get("kafka" if name == "tansu" else name)
        ready = ""
        if name in SERVICES and isinstance(port, int) and recorded_alive(entry):
            ready = ", /readyz 200" if _ready(port) else ", /readyz not 200"
        say(f"{name}: {state}, port {port}{ready}")
    return EXIT_OK if runner else EXIT_FAILED


def _postmaster_port(data_dir: Path) -> int | None:
    """The port recorded in postmaster.pid (line 4), if any."""
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, IndexError, ValueError):
        return None


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m shared.devstack``."""
    parser = argparse.ArgumentParser(prog="python -m shared.devstack", description=__doc__)
    parser.add_argument(
        "--state-dir", type=Path, default=REPO_ROOT / ".run", help="data, logs and tokens (default: .run/)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start everything and stay in the foreground")
    run.add_argument("--no-services", action="store_true", help="only PostgreSQL, broker, topics, migrations")
    run.add_argument("--no-seed", action="store_true", help="skip the demo-data hook")
    run.add_argument("--reset", action="store_true", help="delete the PostgreSQL data first")
    run.add_argument("--ready-timeout", type=float, default=90.0, help="seconds to wait for /readyz")
    run.add_argument(
        "--service-module", default="services.{name}", help="module run per service ({name} is replaced)"
    )
    commands.add_parser("stop", help="stop a running or crashed run, including its PostgreSQL")
    commands.add_parser("status", help="show what is running")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m shared.devstack``."""
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": run_command,
        "stop": stop_command,
        "status": status_command,
    }
    return handlers[args.command](args)
