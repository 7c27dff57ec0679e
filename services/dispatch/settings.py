"""Settings of the dispatch service: environment variables prefixed ``DISPATCH__``, nested with ``__``."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    """Everything the dispatch service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="DISPATCH__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )
