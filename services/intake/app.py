"""Wiring of the intake service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from services.intake import api, handlers, history_api, open311, photo_api, reconciliation, tables
from services.intake.domain import Policy
from services.intake.photo_service import Photos
from services.intake.photostore import DirectoryStore, PhotoStore, S3Store
from services.intake.ratelimit import RateLimiter
from services.intake.repository import IntakeRepository, WritePool
from services.intake.service import GroupCommitter, Intake
from services.intake.settings import IntakeSettings, PhotoSettings
from shared.events import HazardDuplicateLinked, HazardDuplicateUnlinked, HazardImported, HazardReported
from shared.http import BodySizeLimit
from shared.reference import PACKAGED_DATA_DIR, ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "intake"


OPEN311_POSTS = ("/open311/v2/requests.json", "/open311/v2/requests.xml")


class RouteBodyLimits:
    """The one body-size layer of intake (in place of the shared one): one limit per route.

    The batch endpoint reads up to ``batch_bytes``, a photo upload ``photo_bytes``, an Open311
    multipart POST ``media_bytes`` (its photos), a history import its file; every other route
    ``default_bytes`` (``INTAKE__HTTP__MAX_BODY_BYTES``). Only multipart bodies are spooled to
    disk, so only they get the larger limits of their routes.
    """

    def __init__(
        self, app: ASGIApp, *, default_bytes: int, batch_bytes: int, photo_bytes: int, media_bytes: int
    ) -> None:
        self.default = BodySizeLimit(app, max_bytes=default_bytes)
        self.batch = BodySizeLimit(app, max_bytes=batch_bytes)
        self.photo = BodySizeLimit(app, max_bytes=photo_bytes)
        self.media = BodySizeLimit(app, max_bytes=media_bytes)
        self.imports = BodySizeLimit(
            app, max_bytes=history_api.MAX_IMPORT_BYTES + photo_api.UPLOAD_OVERHEAD_BYTES
        )

    def _limit(self, scope: Scope) -> BodySizeLimit:
        path = scope.get("path")
        if path == api.BATCH_PATH:
            return self.batch
        if path == photo_api.UPLOAD_PATH and _multipart(scope):
            return self.photo
        if path in OPEN311_POSTS and _multipart(scope):
            return self.media
        if path == history_api.IMPORT_PATH and _multipart(scope):
            return self.imports
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limited = self._limit(scope) if scope["type"] == "http" else self.default
        await limited(scope, receive, send)


def _one_body_limit(app: FastAPI, **limits: int) -> None:
    """Put :class:`RouteBodyLimits` where the shared app factory put its one-size limit."""
    for index, entry in enumerate(app.user_middleware):
        if cast(Any, entry.cls) is BodySizeLimit:
            app.user_middleware[index] = Middleware(RouteBodyLimits, **limits)
            return
    raise RuntimeError("the shared app has no body-size layer to replace")


def _multipart(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bytes(value).lower().startswith(b"multipart/form-data")
    return False


def photo_store(settings: PhotoSettings) -> PhotoStore:
    """The configured photo store: a directory (default) or an S3-compatible bucket."""
    if settings.store == "s3":
        s3 = settings.s3
        if s3 is None:
            raise ValueError("INTAKE__PHOTOS__STORE=s3 needs INTAKE__PHOTOS__S3__BUCKET (and the endpoint)")
        return S3Store(
            bucket=s3.bucket,
            prefix=s3.prefix,
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=None if s3.access_key_id is None else s3.access_key_id.get_secret_value(),
            secret_access_key=None
            if s3.secret_access_key is None
            else s3.secret_access_key.get_secret_value(),
        )
    return DirectoryStore(settings.directory or Path(tempfile.gettempdir()) / "hazard-intake-photos")


def reference_changed_at(directory: Path | None) -> datetime:
    """When the reference data files (the Open311 service list's source) were last modified, in UTC."""
    root = PACKAGED_DATA_DIR if directory is None else Path(directory)
    times = [path.stat().st_mtime for path in root.glob("*.yaml")]
    return datetime.fromtimestamp(max(times, default=0.0), UTC).replace(microsecond=0)


def create_app(settings: IntakeSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The intake HTTP app; its lifespan runs the broker, the consumer and the outbox relay."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    default_bytes = settings.http.max_body_bytes
    batch_bytes = max(default_bytes, settings.limits.batch_max_body_bytes)
    photo_bytes = settings.photos.max_bytes + photo_api.UPLOAD_OVERHEAD_BYTES
    media_bytes = settings.photos.max_bytes * settings.photos.max_per_item + default_bytes
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.make_handler(reference),
        interested=handlers.INTERESTED,
        reference=reference,
        publishes=(HazardReported, HazardDuplicateLinked, HazardDuplicateUnlinked, HazardImported),
        repository=IntakeRepository,
    )
    # Reports are accepted into the outbox while the broker is away, so intake stays ready without it.
    runtime.ready_without_broker = True
    app = create_http_app(
        runtime,
        title="hazard-dispatch intake",
        description="Takes hazard reports (single, offline batches, Open311 GeoReport v2) and publishes them, losing nothing.",
    )
    _one_body_limit(
        app,
        default_bytes=default_bytes,
        batch_bytes=batch_bytes,
        photo_bytes=photo_bytes,
        media_bytes=media_bytes,
    )
    limits = settings.limits
    committer = (
        GroupCommitter(workers=settings.group_commit.workers, max_items=settings.group_commit.max_items)
        if settings.group_commit.enabled
        else None
    )
    photos = Photos(
        sessions=runtime.sessions,
        store=photo_store(settings.photos),
        settings=settings.photos,
        reference=reference,
    )
    pool = WritePool(
        settings.database.url.get_secret_value(),
        max_size=settings.database.pool_size,
        application_name=f"hazard-{NAME}-write",
    )
    runtime.add_background(pool.run)
    intake = Intake(
        pool=pool,
        outbox=runtime.outbox,
        reference=reference,
        policy=Policy(
            future_skew=timedelta(seconds=limits.future_skew_s),
            max_age=timedelta(days=limits.max_age_days),
            duplicate_distance_m=limits.duplicate_distance_m or reference.duplicate_distance_m,
        ),
        group_commit=committer,
        attach_photos=lambda owner, hazard, urls: photos.attach(owner_id=owner, hazard_id=hazard, urls=urls),
    )
    if committer is not None:
        committer.bind(intake.write)
        runtime.add_background(committer.run)
    app.state.intake = intake
    app.state.photos = photos
    app.state.photo_max_per_item = settings.photos.max_per_item
    rate = settings.rate_limit
    app.state.rate_limiter = RateLimiter(rate=rate.requests_per_s, burst=rate.burst) if rate.enabled else None
    app.state.batch_max_items = limits.batch_max_items
    public = settings.open311
    app.state.open311_view = open311.PublicView(
        listing=public.public_listing,
        coordinate_decimals=public.coordinate_decimals,
        show_photos=public.show_photos,
        show_address=public.show_address,
    )
    app.state.open311_limiter = (
        RateLimiter(rate=public.rate_limit.requests_per_s, burst=public.rate_limit.burst)
        if public.rate_limit.enabled
        else None
    )
    app.state.open311_discovery = open311.Discovery(
        changeset=reference_changed_at(settings.reference_data_dir),
        contact=public.discovery.contact,
        key_service=public.discovery.key_service,
        endpoint_type=public.discovery.endpoint_type,
        public_url=public.discovery.public_url,
    )
    app.state.open311_limits = {
        "max_results": limits.open311_max_results,
        "default_days": limits.open311_default_days,
    }
    app.state.reconciliation = settings.reconciliation
    reconciliation.install(runtime, settings.reconciliation)
    app.include_router(api.router)
    app.include_router(photo_api.router)
    app.include_router(history_api.router)
    app.include_router(open311.router)
    app.include_router(reconciliation.router)
    app.include_router(open311.discovery_router)
    return app
