"""Settings of the reporting service: environment variables prefixed ``REPORTING__``, nested with ``__``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProjectionSettings(BaseModel):
    """How often the daily rollup and the Prometheus domain gauges are refreshed."""

    model_config = ConfigDict(extra="forbid")

    rollup_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # A summary or time series includes every event applied more than this many seconds ago: when
    # the oldest change not yet in the rollup is older, the request refreshes first (0: always).
    # Above rollup_refresh_s plus a refresh's duration, no request waits for a refresh.
    max_staleness_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    metrics_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    metrics_window_days: Annotated[int, Field(ge=1, le=366)] = 30


class ReportingSettings(ServiceSettings):
    """Everything the reporting service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="REPORTING__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    projection: ProjectionSettings = Field(default_factory=ProjectionSettings)
