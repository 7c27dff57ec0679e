"""Settings of the notifications service: environment variables prefixed ``NOTIFICATIONS__``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReminderSettings(_Section):
    """Urging reminders (催办) before a receipt or rectification deadline."""

    # Fractions of the window (dispatch -> receipt deadline, order -> rectification deadline) at which
    # the department is reminded, if it has not acted by then.
    fractions: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.5, 0.8)
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Idle, the sweep sleeps until the next reminder is due, at most this long (#20); this process's
    # new reminders wake it.
    idle_poll_max_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500


class DeliverySettings(_Section):
    """The sender: concurrency, timeouts and the retry schedule."""

    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.1
    # Idle, the poll doubles up to this (#20); new deliveries of this process wake the sender at once,
    # so only retries falling due (and another replica's deliveries) can wait this long.
    idle_poll_max_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 200
    # After a send finishes, wait this long for others before recording their results together
    # with the next claim, in one transaction (measured: bench/notifications_delivery.py).
    gather_s: Annotated[float, Field(ge=0, le=1)] = 0.01
    # At most this many deliveries to one webhook URL or mail server at once: a slow target only
    # holds its own share.
    per_target: Annotated[int, Field(ge=1, le=1000)] = 16
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # How long a claimed delivery is leased to this process; a process killed mid-send leaves it
    # to be retried once the lease runs out.
    lease_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Circuit breaker per target: after this many failed attempts in a row (no success between),
    # its deliveries are no longer attempted (they wait, due); one probe every `breaker_probe_s`
    # decides when it answers again, then its backlog drains with up to `drain_per_target` in flight.
    breaker_failures: Annotated[int, Field(ge=1, le=10_000)] = 5
    breaker_probe_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    drain_per_target: Annotated[int, Field(ge=1, le=1000)] = 64
    backoff_base_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    backoff_max_s: Annotated[float, Field(gt=0, le=86_400)] = 3600.0
    # Give up (status `failed`) once a delivery has been failing for this long.
    retry_for_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 86_400.0
    # Webhook URLs resolving to loopback, private, link-local or reserved addresses are refused
    # (no server-side request forgery) unless this is on (tests, the local stack).
    allow_private_targets: bool = False


class SmtpSettings(_Section):
    """The SMTP server e-mail notifications go through."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    username: str | None = None
    password: SecretStr | None = None
    start_tls: bool = False
    use_tls: bool = False
    sender: Annotated[str, Field(min_length=3, max_length=254)] = "hazard-dispatch@localhost"


class NotificationsSettings(ServiceSettings):
    """Everything the notifications service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="NOTIFICATIONS__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    # Fernet key (32 bytes, url-safe base64) encrypting the webhook signing secrets at rest.
    secret_key: SecretStr
    reminders: ReminderSettings = Field(default_factory=ReminderSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    # What this process runs (#16). Both by default; a deployment may run the sender in processes of
    # its own (``CONSUME=false``) beside ones that consume, fire reminders and serve (``SEND=false``):
    # the sender's sends and claims then no longer share an event loop and a core with the consumer.
    # Safe with any number of each (leases with SKIP LOCKED, the inbox, the relay's advisory lock).
    consume: bool = True
    send: bool = True

    @field_validator("secret_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr) -> SecretStr:
        import base64
        import binascii

        try:
            raw = base64.urlsafe_b64decode(value.get_secret_value().encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "secret_key must be 32 bytes in url-safe base64 (python -c "
                '"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())")'
            )
        return value
