"""Settings of the intake service: environment variables prefixed ``INTAKE__``, nested with ``__``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
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


class ReconciliationSettings(_Section):
    """Accepted reports with no dispatch decision after ``undecided_after_s`` are listed and counted."""

    undecided_after_s: Annotated[float, Field(gt=0, le=30 * 86_400)] = 900.0
    check_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class S3Settings(_Section):
    """An S3-compatible object store for photos (AWS S3, MinIO, Ceph RGW)."""

    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    # None: AWS itself; a URL for MinIO and the like (e.g. http://minio:9000).
    endpoint_url: str | None = None
    region: str | None = None
    # None: botocore's usual chain (environment, instance role).
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    prefix: str = "photos/"


class PhotoSettings(_Section):
    """Uploaded photos: where they are kept and what is accepted."""

    store: Literal["directory", "s3"] = "directory"
    # The directory store's root; None: "hazard-intake-photos" in the system's temporary directory
    # (the local runner sets .run/photos). Replicas must share it, or use s3.
    directory: Path | None = None
    s3: S3Settings | None = None
    max_bytes: Annotated[int, Field(ge=1024, le=100 * 1024 * 1024)] = 10 * 1024 * 1024
    # Photos one Open311 request may carry (the JSON items hold up to 10 photo URLs).
    max_per_item: Annotated[int, Field(ge=1, le=50)] = 10
    # Larger images are refused (422) before decoding: the decoder's memory is bounded by this.
    max_pixels: Annotated[int, Field(ge=10_000, le=200_000_000)] = 50_000_000
    # The stored copy is scaled to this many pixels on its long side (2000: a 12 MP phone JPEG is
    # decoded at half scale, 4x less work and memory); the thumbnail to thumbnail_side.
    max_side: Annotated[int, Field(ge=256, le=16_384)] = 2000
    thumbnail_side: Annotated[int, Field(ge=32, le=1024)] = 320
    # Photos decoded at once per process (each takes up to ~40 MiB at the defaults); others wait.
    decoders: Annotated[int, Field(ge=1, le=64)] = 2


class IntakeSettings(ServiceSettings):
    """Everything the intake service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="INTAKE__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    limits: ReportLimits = Field(default_factory=ReportLimits)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    group_commit: GroupCommitSettings = Field(default_factory=GroupCommitSettings)
    open311: Open311Settings = Field(default_factory=Open311Settings)
    reconciliation: ReconciliationSettings = Field(default_factory=ReconciliationSettings)
    photos: PhotoSettings = Field(default_factory=PhotoSettings)
