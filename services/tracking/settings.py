"""Settings of the tracking service: environment variables prefixed ``TRACKING__``, nested with ``__``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RelapseSettings(BaseModel):
    """How near a new report must be to a closed case to count as its relapse (回潮)."""

    model_config = ConfigDict(extra="forbid")

    # None: the reference data's duplicate_distance_m (30 m in the packaged data).
    distance_m: Annotated[float, Field(gt=0, le=10_000)] | None = None


class TimerSettings(BaseModel):
    """The loop that fires overdue rectifications."""

    model_config = ConfigDict(extra="forbid")

    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Idle, the sweep sleeps until the next timer is due, at most this long (#20); this process's new
    # or moved timers wake it.
    idle_poll_max_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    gauge_interval_s: Annotated[float, Field(gt=0, le=3600)] = 15.0


class ExtensionSettings(BaseModel):
    """Rectification deadline extensions (延期申请): how far beyond the deadline in force one may reach."""

    model_config = ConfigDict(extra="forbid")

    max_days_beyond: Annotated[int, Field(ge=1, le=365)] = 30


class TrackingSettings(ServiceSettings):
    """Everything the tracking service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKING__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    relapse: RelapseSettings = Field(default_factory=RelapseSettings)
    timers: TimerSettings = Field(default_factory=TimerSettings)
    extensions: ExtensionSettings = Field(default_factory=ExtensionSettings)
