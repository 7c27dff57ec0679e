"""Settings pieces every service shares; each service composes its own class from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import topics


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    """Where the service's PostgreSQL is; the URL may carry a password, so it is secret."""

    url: SecretStr
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    max_overflow: Annotated[int, Field(ge=0, le=200)] = 10
    echo: bool = False
    # PostgreSQL JIT-compiles any statement its planner estimates as costly, which for these short
    # statements over arrays is mostly compile time (measured: a 500-probe duplicate lookup whose
    # estimate crossed jit_above_cost took 96 ms with JIT, 7 ms without), so sessions turn it off.
    jit: bool = False

    @field_validator("url")
    @classmethod
    def _asyncpg_url(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.startswith("postgresql://") or raw.startswith("postgres://"):
            raw = "postgresql+asyncpg://" + raw.split("://", 1)[1]
        if not raw.startswith("postgresql+asyncpg://"):
            raise ValueError("database url must be postgresql+asyncpg://user[:password]@host:port/database")
        return SecretStr(raw)


class KafkaSettings(_Section):
    """The Kafka-protocol broker, the topics and the consumer's batching and retry."""

    bootstrap_servers: str
    lifecycle_topic: str = topics.LIFECYCLE
    dead_letter_topic: str = topics.DEAD_LETTER
    group_id: str | None = None
    client_id: str | None = None
    # Apache Kafka: on; the local Tansu broker lacks idempotent producers, so the runner turns it off.
    idempotent_producer: bool = True
    acks: Literal["all", "1"] = "all"
    # Events per consumed batch, at most: one transaction, one inbox statement and one commit for them all.
    max_batch: Annotated[int, Field(ge=1, le=10_000)] = 2000
    batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 100
    # How long the broker may hold a fetch that finds no new record. Tansu holds it for the whole
    # wait even when a record arrives meanwhile (measured: 500 ms gave p50 137 ms produce-to-consume
    # at 10 msgs/s, 50 ms gave 16 ms), so every hop of a hazard would wait for it. Apache Kafka
    # answers as soon as data arrives; there 500 (its default) saves idle fetches.
    fetch_max_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    # Idle, that short wait is a fetch round trip 20 times a second per consumer (#20: most of an idle
    # stack's cost, broker included). After idle_after_s without a record the wait becomes
    # idle_fetch_max_wait_ms, and the next batch brings it back: only the first record after a quiet
    # spell waits longer. Equal to fetch_max_wait_ms: never changes.
    idle_fetch_max_wait_ms: Annotated[int, Field(ge=1, le=10_000)] = 2000
    idle_after_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # Likewise the subscriber's own loop: it waits batch_timeout_ms for records and as long again
    # after finding none (FastStream); idle, it turns round every 2 x this instead.
    idle_batch_timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 500
    # After a batch smaller than max_batch, wait as long as that batch took, at most this long, before
    # taking the next, so that records gather into fewer, larger batches (fewer fetches, transactions
    # and commits for the same events). A consumer that keeps up otherwise takes whatever one fetch
    # returned, a few dozen records, and pays every per-batch cost again: see bench/results/report.md.
    batch_linger_ms: Annotated[int, Field(ge=0, le=1_000)] = 100
    retry_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    retry_backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.2
    # A batch held back by the environment (database or broker fault, missing table, revoked grant)
    # is retried without limit, the pause doubling from 1 s up to this; keep it under the graceful
    # timeout, since a pause in progress delays shutdown.
    blocked_backoff_max_s: Annotated[float, Field(ge=1, le=60)] = 10.0
    # Largest dead letter sent: a bigger one is sent bounded (value cut, headers saying the original's
    # size, SHA-256 and origin). Keep it under the producer's max_request_size (aiokafka: 1 MiB) and
    # the dead-letter topic's max.message.bytes.
    dead_letter_max_bytes: Annotated[int, Field(ge=16_384, le=100_000_000)] = 1_000_000
    graceful_timeout_s: Annotated[float, Field(ge=0, le=300)] = 15.0
    # Tansu answers JoinGroup slowly; below ~30 s aiokafka times the join out and never joins.
    request_timeout_ms: Annotated[int, Field(ge=30_000)] = 40_000
    reconnect_backoff_s: Annotated[float, Field(gt=0, le=60)] = 2.0


class HttpSettings(_Section):
    """Where the HTTP app listens and how large a body it reads."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    # Browser origins allowed to call this API (CORS): the people's pages under /app/ are served by
    # reporting and call intake, dispatch and tracking directly with a bearer token. Default: the
    # local stack's reporting origin; production sets the pages' host (deploy/k8s/10-config.yaml).
    cors_origins: Annotated[
        list[Annotated[str, Field(pattern=r"^https?://[^/\s]+$")]], Field(max_length=20)
    ] = [
        "http://127.0.0.1:8104",
        "http://localhost:8104",
    ]


class TokenEntry(_Section):
    """One bearer token, stored only as the SHA-256 hex of the token."""

    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    principal: Annotated[str, Field(min_length=1, max_length=100)]
    role: Literal["reporter", "department", "operator", "supervisor"]
    grid_id: str | None = None
    department_id: str | None = None
    # A reporter's kind (#18): grid_member (default), building_manager, cadre_visit, hotline, resident.
    reporter_type: Literal["grid_member", "building_manager", "cadre_visit", "hotline", "resident"] | None = (
        None
    )


class AuthSettings(_Section):
    """Bearer tokens: a YAML file of hashes, and/or entries given inline (env as JSON)."""

    tokens_file: Path | None = None
    tokens: list[TokenEntry] = Field(default_factory=list)


class OutboxSettings(_Section):
    """The relay that publishes committed outbox rows."""

    enabled: bool = True
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # Commits of this process wake its relay at once; the poll finds rows nobody woke it for
    # (committed by a replica that crashed before relaying them).
    poll_interval_s: Annotated[float, Field(gt=0, le=10)] = 0.25
    # An idle relay's poll doubles from poll_interval_s up to this (#20: an idle stack costs almost
    # nothing); this process's commits still wake it at once, so only another process's rows wait.
    idle_poll_max_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    error_backoff_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Published rows stay this long (a broker that lost its data is refilled from them:
    # ``python -m shared.outbox_replay``), then are pruned in batches of ``prune_batch_size``.
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 7.0
    prune_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    prune_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0


class AdminSyncSettings(_Section):
    """Runtime administration: how often every replica looks for changes in the admin schema."""

    enabled: bool = True
    # While it cannot listen for changes (LISTEN hazard_admin), every replica polls this often.
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Listening, it is told of each change at once, and also polls this often for one made without
    # notifying (#20); 0 turns listening off (poll_interval_s polling only).
    listen_poll_s: Annotated[float, Field(ge=0, le=3600)] = 30.0


class TracingSettings(_Section):
    """OpenTelemetry tracing: off unless ``otlp_endpoint`` names an OTLP/HTTP collector."""

    # e.g. http://otel-collector:4318/v1/traces; unset, no span is recorded and no header added.
    otlp_endpoint: str | None = None
    # The share of new traces recorded (a request without a sampled traceparent); children follow.
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0


class ServiceSettings(BaseSettings):
    """What every service needs; subclasses set the env prefix and add their own sections."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="forbid", case_sensitive=False)

    database: DatabaseSettings
    kafka: KafkaSettings
    http: HttpSettings
    auth: AuthSettings = Field(default_factory=AuthSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    admin_sync: AdminSyncSettings = Field(default_factory=AdminSyncSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    reference_data_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
