"""Settings of the intake service: environment variables prefixed ``INTAKE__``, nested with ``__``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportLimits(_Section):
    """What intake accepts: clock skew, report age, batch size and body sizes."""

    # A phone's clock may run a little ahead of ours.
    future_skew_s: Annotated[float, Field(ge=0, le=3600)] = 300.0
    # Offline collection syncs later, but not absurdly later.
    max_age_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    batch_max_items: Annotated[int, Field(ge=1, le=5000)] = 500
    # The batch endpoint reads larger bodies than the rest of the app (http.max_body_bytes).
    batch_max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    # None: the reference data's duplicate_distance_m.
    duplicate_distance_m: Annotated[float, Field(gt=0, le=10_000)] | None = None
    # Open311 GET requests: at most this many in one answer, within this many days by default.
    open311_max_results: Annotated[int, Field(ge=1, le=10_000)] = 1000
    open311_default_days: Annotated[int, Field(ge=1, le=3650)] = 90


class RateLimitSettings(_Section):
    """Per-reporter token bucket (each replica keeps its own buckets: the limit is per replica)."""

    enabled: bool = True
    requests_per_s: Annotated[float, Field(gt=0, le=100_000)] = 20.0
    burst: Annotated[int, Field(ge=1, le=100_000)] = 60


class PublicRateLimit(_Section):
    """Per client address token bucket of the public Open311 GETs (kept in each replica)."""

    enabled: bool = True
    requests_per_s: Annotated[float, Field(gt=0, le=100_000)] = 2.0
    burst: Annotated[int, Field(ge=1, le=100_000)] = 30


class Open311Discovery(_Section):
    """What ``/open311/discovery.{json,xml}`` tells clients (the standard's Service Discovery)."""

    # The GeoReport v2 endpoint's public URL (ending in /open311/v2); None: this request's own base URL.
    public_url: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^https?://\S+$")] | None = None
    # "production": reports are acted upon; "test": a sandbox.
    endpoint_type: Literal["production", "test"] = "production"
    contact: Annotated[str, Field(min_length=1, max_length=500)] = (
        "Ask the city's hazard supervision office (the operators of this service)."
    )
    key_service: Annotated[str, Field(min_length=1, max_length=500)] = (
        "api_key is a grid member's (reporter's) bearer token, issued by the street office."
    )


class Open311Settings(_Section):
    """What Open311's public GETs (no authentication) show, and how often one address may ask."""

    # Off: GET requests.json and requests/{id}.json answer 403; services and POST still work.
    public_listing: bool = True
    # lat/long decimals shown: 3 is about 100 m here (0.001 degree: 111 m north-south, 103 m east-west).
    coordinate_decimals: Annotated[int, Field(ge=0, le=7)] = 3
    # Photo URLs may show faces and doors; hidden (media_url null) unless turned on.
    show_photos: bool = False
    # The address and building id would undo the rounding; hidden unless turned on.
    show_address: bool = False
    rate_limit: PublicRateLimit = Field(default_factory=PublicRateLimit)
    discovery: Open311Discovery = Field(default_factory=Open311Discovery)


class GroupCommitSettings(_Section):
    """Commit concurrent single reports together (one transaction and fsync for many requests)."""

    enabled: bool = True
    # Transactions in flight at once; keep below the database pool size.
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    max_items: Annotated[int, Field(ge=1, le=5000)] = 500


class IntakeSettings(ServiceSettings):
    """Everything the intake service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="INTAKE__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    limits: ReportLimits = Field(default_factory=ReportLimits)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    group_commit: GroupCommitSettings = Field(default_factory=GroupCommitSettings)
    open311: Open311Settings = Field(default_factory=Open311Settings)
