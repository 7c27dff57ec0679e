"""Settings of the reporting service: environment variables prefixed ``REPORTING__``, nested with ``__``."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ReportingSettings(ServiceSettings):
    """Everything the reporting service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="REPORTING__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
