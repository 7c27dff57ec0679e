"""Settings of the intake service: environment variables prefixed ``INTAKE__``, nested with ``__``."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    """Everything the intake service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="INTAKE__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
