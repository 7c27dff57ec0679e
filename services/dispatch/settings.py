"""Settings of the dispatch service: environment variables prefixed ``DISPATCH__``, nested with ``__``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TimerSettings(BaseModel):
    """The loop that fires due receipt deadlines and escalation steps."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # Passes running at once in one process: while one waits on the database another builds events.
    # Safe because claims skip rows another pass (or replica) holds.
    concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    gauge_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0


class DispatchSettings(ServiceSettings):
    """Everything the dispatch service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    timers: TimerSettings = Field(default_factory=TimerSettings)
