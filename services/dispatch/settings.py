"""Settings of the dispatch service: environment variables prefixed ``DISPATCH__``, nested with ``__``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from services.dispatch.domain import ReturnPolicy
from shared.settings import ServiceSettings


class TimerSettings(BaseModel):
    """The loop that fires due receipt deadlines and escalation steps."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    # Idle, a pass sleeps until the next timer is due, at most this long (#20); this process's new
    # timers wake it, so only another replica's timer due sooner than this can fire that late.
    idle_poll_max_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # Passes running at once in one process: while one waits on the database another builds events.
    # Safe because claims skip rows another pass (or replica) holds.
    concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    gauge_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0


class ReturnSettings(BaseModel):
    """Returns after receipt (退单 after 签收): within a window of the acknowledgement, or by approval."""

    model_config = ConfigDict(extra="forbid")

    # window: the department returns by itself within window_minutes of acknowledging;
    # approval: its return is a request an operator approves or refuses.
    after_receipt: Literal["window", "approval"] = "window"
    window_minutes: Annotated[int, Field(ge=0, le=60 * 24 * 30)] = 24 * 60

    def policy(self) -> ReturnPolicy:
        """The domain's return policy."""
        return ReturnPolicy(after_receipt=self.after_receipt, window=timedelta(minutes=self.window_minutes))


class ExtensionSettings(BaseModel):
    """Receipt deadline extensions (延期申请): how far beyond the deadline in force one may reach."""

    model_config = ConfigDict(extra="forbid")

    max_days_beyond: Annotated[int, Field(ge=1, le=365)] = 30

    def limit(self) -> timedelta:
        """The longest extension granted in one request."""
        return timedelta(days=self.max_days_beyond)


class DispatchSettings(ServiceSettings):
    """Everything the dispatch service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    timers: TimerSettings = Field(default_factory=TimerSettings)
    returns: ReturnSettings = Field(default_factory=ReturnSettings)
    extensions: ExtensionSettings = Field(default_factory=ExtensionSettings)
