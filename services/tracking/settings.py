"""Settings of the tracking service: environment variables prefixed ``TRACKING__``, nested with ``__``."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    """Everything the tracking service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="TRACKING__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
