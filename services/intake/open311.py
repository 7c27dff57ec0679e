"""Open311 GeoReport v2 under ``/open311/v2/``: services from the categories, requests in and out.

Choices where the standard leaves room (also in the README of the intake service):

* ``api_key`` is a reporter's bearer token; any other role, or an unknown key, is 403.
* The grid of a posted request is the reporter's own grid (a reporter may report only
  there). ``attribute[grid_id]`` may name it explicitly; naming another grid is 403. Taking
  the nearest grid centre instead would put reports in grids their reporter does not own.
* ``lat`` and ``long`` are required: intake does not geocode ``address_string``.
* ``attribute[report_id]`` (a UUID) makes a POST idempotent like the JSON API; without it
  every POST is a new report. ``email``, names, ``phone`` and ``device_id`` are not stored.
* GETs are public, as the standard intends, and show only the public fields: never who
  reported. What they show is intake's ``open311`` settings (:class:`PublicView`): the listing
  on or off, coordinates rounded (3 decimals, about 100 m, by default), photos and the address
  hidden by default; each client address is rate limited. Without dates, GET requests covers
  the last 90 days, newest first, at most 1,000; dates are refused outside 1900..2999 (UTC).
* Errors are a list of ``{code, description}`` in the format asked for (JSON or XML).
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from services.intake import metrics, photo_api
from services.intake import repository as repo
from services.intake.api import IntakeService
from services.intake.domain import ReportIn
from services.intake.photo_service import Photos
from services.intake.photos import PHOTO_PATH, PhotoRefusedError
from services.intake.ratelimit import RateLimiter
from services.intake.service import Intake
from shared.openapi import error_responses
from shared.reference import Category, ReferenceData

# Every Open311 route may refuse a malformed request (400) and limits each client address (429).
router = APIRouter(prefix="/open311/v2", tags=["open311"], responses=error_responses(400, 429))
discovery_router = APIRouter(prefix="/open311", tags=["open311"])

_REPORT = TypeAdapter(ReportIn)
FORMATS = ("json", "xml")
REQUEST_FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)
_ITEM_NAMES = {
    "services": "service",
    "service_requests": "request",
    "attributes": "attribute",
    "values": "value",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
}


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PublicView:
    """What the public GETs show (intake's ``open311`` settings)."""

    listing: bool = True
    coordinate_decimals: int = 3
    show_photos: bool = False
    show_address: bool = False


GEOREPORT_V2 = "http://wiki.open311.org/GeoReport_v2"
MEDIA_TYPES = ("text/xml", "application/json")


@dataclass(frozen=True, slots=True)
class Discovery:
    """The Service Discovery document's content (intake's ``open311.discovery`` settings)."""

    changeset: datetime
    contact: str
    key_service: str
    endpoint_type: str = "production"
    public_url: str | None = None


def discovery_document(discovery: Discovery, base_url: str) -> dict[str, Any]:
    """The standard's discovery document: one GeoReport v2 endpoint, in both formats.

    ``base_url`` is the request's (used when no public URL is configured). The changeset is when
    the reference data (categories, hence the service list and definitions) last changed.
    """
    changeset = _iso(discovery.changeset)
    url = discovery.public_url or base_url.rstrip("/") + router.prefix
    return {
        "changeset": changeset,
        "contact": discovery.contact,
        "key_service": discovery.key_service,
        "endpoints": [
            {
                "specification": GEOREPORT_V2,
                "url": url.rstrip("/"),
                "changeset": changeset,
                "type": discovery.endpoint_type,
                "formats": list(MEDIA_TYPES),
            }
        ],
    }


class Open311Error(Exception):
    """An error answered as the standard's list of {code, description}."""

    def __init__(self, status: int, description: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers


# ---------------------------------------------------------------- answers (the JSON format; XML has the same fields)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiscoveryEndpoint(_Answer):
    """One GeoReport v2 endpoint of the discovery document."""

    specification: str
    url: str
    changeset: datetime
    type: str
    formats: list[str]


class DiscoveryOut(_Answer):
    """The Service Discovery document."""

    changeset: datetime
    contact: str
    key_service: str
    endpoints: list[DiscoveryEndpoint]


class ServiceOut(_Answer):
    """One hazard category as an Open311 service."""

    service_code: str
    service_name: str
    description: str
    metadata: bool
    type: str
    keywords: str
    group: str


class AttributeValue(_Answer):
    """One choice of a ``singlevaluelist`` attribute."""

    key: str
    name: str


class ServiceAttribute(_Answer):
    """One attribute a request of a service may carry."""

    variable: bool
    code: str
    datatype: str
    required: bool
    datatype_description: str
    order: int
    description: str
    values: list[AttributeValue] = Field(
        default_factory=list, description="The choices; present only for singlevaluelist attributes"
    )


class ServiceDefinitionOut(_Answer):
    """A service definition: the attributes of one service."""

    service_code: str
    attributes: list[ServiceAttribute]


class PostedRequest(_Answer):
    """The answer to a POST: the new (or, for a retry, the earlier) request's id."""

    service_request_id: uuid.UUID
    service_notice: str | None
    account_id: None


class ServiceRequestOut(_Answer):
    """A stored report as an Open311 service request: the public fields only."""

    service_request_id: uuid.UUID
    status: str
    status_notes: str | None
    service_name: str
    service_code: str
    description: str
    agency_responsible: str | None
    service_notice: str | None
    requested_datetime: datetime
    updated_datetime: datetime
    expected_datetime: datetime | None
    address: str | None
    address_id: str | None
    zipcode: None
    lat: float
    long: float
    media_url: str | None


def _xml(root: str) -> dict[int | str, dict[str, Any]]:
    """The XML variant of a 200 answer (``.xml``): the same fields under ``<root>``."""
    return {
        200: {
            "content": {
                "text/xml": {
                    "schema": {
                        "type": "string",
                        "description": f"<{root}>…</{root}>: the JSON's fields as elements",
                    }
                }
            }
        }
    }


_BINARY = {"schema": {"type": "string", "format": "binary"}}
PHOTO_CONTENT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image (JPEG, PNG or WebP)",
        "content": dict.fromkeys(("image/jpeg", "image/png", "image/webp"), _BINARY),
    }
}


# ---------------------------------------------------------------- dependencies


async def _reference(request: Request) -> ReferenceData:
    reference: ReferenceData = request.app.state.reference
    return reference


async def _discovery(request: Request) -> Discovery:
    discovery: Discovery = request.app.state.open311_discovery
    return discovery


async def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.runtime.sessions
    return sessions


async def _limits(request: Request) -> dict[str, int]:
    limits: dict[str, int] = request.app.state.open311_limits
    return limits


Reference = Annotated[ReferenceData, Depends(_reference)]
DiscoverySettings = Annotated[Discovery, Depends(_discovery)]
Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
Limits = Annotated[dict[str, int], Depends(_limits)]


# ---------------------------------------------------------------- rendering


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _append(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for key, item in value.items():
            _append(element, key, item)
    elif isinstance(value, list):
        child = _ITEM_NAMES.get(name, "item")
        for item in value:
            _append(element, child, item)
    else:
        element.text = _text(value)


def to_xml(root: str, value: Any) -> bytes:
    """A document in the standard's XML shape: lists become repeated child elements."""
    element = ET.Element(root)
    if isinstance(value, list):
        child = _ITEM_NAMES.get(root, "item")
        for item in value:
            _append(element, child, item)
    else:
        for key, item in value.items():
            _append(element, key, item)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element, encoding="unicode").encode()


def render(
    fmt: str, root: str, value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """JSON as the value itself; XML under ``root``."""
    if fmt == "xml":
        return Response(to_xml(root, value), status, headers=headers, media_type="text/xml; charset=utf-8")
    return JSONResponse(value, status, headers=headers)


async def _answer(fmt: str, root: str, produce: Callable[[], Awaitable[tuple[int, Any]]]) -> Response:
    if fmt not in FORMATS:
        return render(
            "json",
            "errors",
            [{"code": 404, "description": f"Unknown format {fmt!r}; use json or xml."}],
            status=404,
        )
    try:
        status, value = await produce()
    except Open311Error as exc:
        return render(
            fmt,
            "errors",
            [{"code": exc.status, "description": exc.description}],
            status=exc.status,
            headers=exc.headers,
        )
    return render(fmt, root, value, status=status)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- services


def service_json(category: Category, reference: ReferenceData) -> dict[str, Any]:
    """One category as an Open311 service."""
    owner = (
        "the dispatch desk's operators"
        if category.department_id is None
        else reference.department(category.department_id).name_en
    )
    return {
        "service_code": category.code,
        "service_name": category.name_en,
        "description": f"{category.name_en} ({category.name_zh}); handled by {owner}.",
        "metadata": True,
        "type": "realtime",
        "keywords": ", ".join([category.group, *category.code.split("_"), category.name_zh]),
        "group": category.group,
    }


def service_definition(category: Category, reference: ReferenceData) -> dict[str, Any]:
    """The attributes a request of this service may carry."""
    return {
        "service_code": category.code,
        "attributes": [
            {
                "variable": True,
                "code": "grid_id",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "The grid of the report; it must be the reporter's own (the default).",
                "order": 1,
                "description": "Grid (网格)",
                "values": [{"key": g.id, "name": g.name_en} for g in reference.grids],
            },
            {
                "variable": True,
                "code": "building_id",
                "datatype": "string",
                "required": False,
                "datatype_description": "The building's id, used to link reports of the same place.",
                "order": 2,
                "description": "Building",
            },
            {
                "variable": True,
                "code": "report_id",
                "datatype": "string",
                "required": False,
                "datatype_description": "A client-generated UUID; posting again with it returns the same request.",
                "order": 3,
                "description": "Idempotency key",
            },
            {
                "variable": True,
                "code": "rectified_on_site",
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "Whether the hazard was fixed on the spot after persuasion.",
                "order": 4,
                "description": "Rectified on site",
                "values": [{"key": "false", "name": "No"}, {"key": "true", "name": "Yes"}],
            },
        ],
    }


@discovery_router.get(
    "/discovery.{fmt}",
    summary="Service discovery: the GeoReport v2 endpoint and its formats",
    response_model=DiscoveryOut,
    responses=_xml("discovery"),
)
async def get_discovery(request: Request, fmt: str, discovery: DiscoverySettings) -> Response:
    async def produce() -> tuple[int, Any]:
        return 200, discovery_document(discovery, str(request.base_url))

    return await _answer(fmt, "discovery", produce)


@router.get(
    "/services.{fmt}",
    summary="Service list: one service per hazard category",
    response_model=list[ServiceOut],
    responses=_xml("services"),
)
async def list_services(fmt: str, reference: Reference) -> Response:
    """Every category as a service."""

    async def produce() -> tuple[int, Any]:
        return 200, [service_json(c, reference) for c in reference.categories]

    return await _answer(fmt, "services", produce)


@router.get(
    "/services/{service_code}.{fmt}",
    summary="Service definition: the attributes of a service",
    response_model=ServiceDefinitionOut,
    responses=_xml("service_definition"),
)
async def get_service_definition(service_code: str, fmt: str, reference: Reference) -> Response:
    """The attributes of one service; 404 for an unknown code."""

    async def produce() -> tuple[int, Any]:
        return 200, service_definition(_category(reference, service_code, status=404), reference)

    return await _answer(fmt, "service_definition", produce)


def _category(reference: ReferenceData, code: str, *, status: int = 400) -> Category:
    for category in reference.categories:
        if category.code == code:
            return category
    known = ", ".join(c.code for c in reference.categories)
    raise Open311Error(status, f"Unknown service_code {code!r}; known codes: {known}.")


# ---------------------------------------------------------------- requests


def request_json(row: Any, reference: ReferenceData, view: PublicView) -> dict[str, Any]:
    """A stored report as an Open311 service request: public fields only, as ``view`` allows."""
    try:
        service_name = reference.category(row.category).name_en
    except LookupError:
        service_name = row.category
    notice = None
    if row.duplicate_of is not None:
        notice = f"Linked to open request {row.duplicate_of} as a duplicate."
    elif row.rectified_on_site:
        notice = "Rectified on site."
    return {
        "service_request_id": str(row.hazard_id),
        "status": row.status,
        "status_notes": row.status_notes,
        "service_name": service_name,
        "service_code": row.category,
        "description": row.description,
        "agency_responsible": row.agency_responsible,
        "service_notice": notice,
        "requested_datetime": _iso(row.requested_datetime),
        "updated_datetime": _iso(row.updated_datetime),
        "expected_datetime": _iso(row.expected_datetime),
        "address": (row.address or None) if view.show_address else None,
        "address_id": row.building_id if view.show_address else None,
        "zipcode": None,
        "lat": round(row.lat, view.coordinate_decimals),
        "long": round(row.lon, view.coordinate_decimals),
        "media_url": public_media_url(row.photos[0]) if row.photos and view.show_photos else None,
    }


def public_media_url(url: str) -> str:
    """A report's photo as the public may fetch it: this service's own photos through
    ``/open311/v2/media/{id}`` (the API's photo route needs a token); other URLs as given."""
    match = PHOTO_PATH.search(url)
    if match is None:
        return url
    return f"{url[: match.start()]}/open311/v2/media/{match.group(1)}"


def _form_value(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _field_problems(exc: ValidationError) -> str:
    names = {"location": "lat/long", "photos": "media_url", "observed_at": "observed_at"}
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ())]
        field = names.get(loc[0], loc[0]) if loc else "(request)"
        if loc[:2] == ["location", "address"]:
            field = "address_string"
        if loc[:2] == ["location", "building_id"]:
            field = "attribute[building_id]"
        parts.append(f"{field}: {err.get('msg')}")
    return "; ".join(parts)


@router.post(
    "/requests.{fmt}",
    summary="Create a service request (form-encoded; api_key = a reporter's token)",
    status_code=201,
    response_model=list[PostedRequest],
    responses={
        **_xml("service_requests"),
        200: {
            "model": list[PostedRequest],
            "description": "A retry: the request already created under this idempotency key",
        },
        **error_responses(
            403,
            409,
            413,
            415,
            s403="api_key is missing, unknown, or not a reporter's key",
            s409="This idempotency key was used before with a different request",
        ),
    },
)
async def post_request(request: Request, fmt: str, reference: Reference, intake: IntakeService) -> Response:
    """Accept one report the Open311 way."""

    async def produce() -> tuple[int, Any]:
        form = await _read_form(request)
        try:
            return await _post(request, form, reference, intake)
        finally:
            await form.close()

    return await _answer(fmt, "service_requests", produce)


async def _read_form(request: Request) -> FormData:
    """The posted form (url-encoded, or multipart with ``media`` files spooled to disk); 400 if malformed."""
    limit: int = request.app.state.photo_max_per_item
    try:
        return await request.form(max_files=limit, max_fields=100)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise Open311Error(413, str(exc.detail)) from exc
        raise Open311Error(400, f"The form cannot be read: {exc.detail}") from exc


async def _store_media(request: Request, form: FormData, principal: Any, report: ReportIn) -> ReportIn:
    """Store the request's ``media`` uploads and add them to the report's photos (413/415/400 refused)."""
    media = [value for value in form.getlist("media") if isinstance(value, UploadFile)]
    if not media:
        return report
    limit: int = request.app.state.photo_max_per_item
    if len(report.photos) + len(media) > limit:
        raise Open311Error(400, f"A request may carry at most {limit} photos (media and media_url together).")
    photos: Photos = request.app.state.photos
    urls = []
    for upload in media:
        try:
            stored = await photos.add(principal=principal, upload=upload.file)
        except PhotoRefusedError as exc:
            metrics.REJECTED.labels("invalid").inc()
            raise Open311Error(
                exc.status if exc.status in (413, 415) else 400, f"media: {exc.message}"
            ) from exc
        urls.append(photo_api.photo_url(request, stored.photo_id))
    return report.model_copy(update={"photos": (*report.photos, *urls)})


async def _post(
    request: Request, form: FormData, reference: ReferenceData, intake: Intake
) -> tuple[int, Any]:
    """The POST's work once its form is read."""
    api_key = _form_value(form, "api_key")
    principal = request.app.state.tokens.authenticate(api_key) if api_key else None
    if principal is None or principal.role != "reporter":
        raise Open311Error(403, "api_key is missing, unknown, or not a reporter's key.")
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        wait = limiter.take(principal.id, now=time.monotonic())
        if wait > 0:
            metrics.RATE_LIMITED.inc()
            metrics.REJECTED.labels("rate_limited").inc()
            retry = limiter.retry_after_header(wait)
            raise Open311Error(
                429, f"Too many requests; retry after {retry} s.", headers={"Retry-After": retry}
            )
    code = _form_value(form, "service_code")
    if code is None:
        raise Open311Error(400, "service_code is required.")
    category = _category(reference, code)
    lat, lon = _form_value(form, "lat"), _form_value(form, "long")
    if lat is None or lon is None:
        raise Open311Error(
            400, "lat and long are required; this server does not geocode address_string or address_id."
        )
    report_id = _form_value(form, "attribute[report_id]")
    raw: dict[str, Any] = {
        "report_id": report_id or str(uuid.uuid4()),
        "category": category.code,
        "description": _form_value(form, "description") or category.name_en,
        "location": {
            "lat": lat,
            "lon": lon,
            "address": _form_value(form, "address_string") or "",
            "building_id": _form_value(form, "attribute[building_id]") or _form_value(form, "address_id"),
        },
        "grid_id": _form_value(form, "attribute[grid_id]") or principal.grid_id,
        "observed_at": datetime.now(UTC),
        "photos": [url for url in [_form_value(form, "media_url")] if url],
        "rectified_on_site": (_form_value(form, "attribute[rectified_on_site]") or "false").lower() == "true",
    }
    try:
        report = _REPORT.validate_python(raw)
    except ValidationError as exc:
        metrics.REJECTED.labels("invalid").inc()
        raise Open311Error(400, f"Invalid request: {_field_problems(exc)}.") from exc
    report = await _store_media(request, form, principal, report)
    [result] = await intake.submit(principal=principal, items=[report], source="open311")
    if result.error is not None:
        status = 400 if result.error.status == 422 else result.error.status
        raise Open311Error(status, result.error.message)
    notice = None
    if result.duplicate_of is not None:
        notice = f"Linked to open request {result.duplicate_of} as a duplicate."
    return result.http_status, [
        {"service_request_id": str(result.hazard_id), "service_notice": notice, "account_id": None}
    ]


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _date(name: str, value: str | None) -> datetime | None:
    """A W3C date-time as UTC; 400 when malformed or outside 1900..2999 (the database's ends are
    nearer than Python's: year 1 at +08:00 or 9999-12-31 at -08:00 used to answer 500)."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Open311Error(
            400, f"{name} must be a W3C/ISO 8601 date-time, e.g. 2026-04-01T00:00:00Z."
        ) from exc
    try:
        moment = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except OverflowError:
        moment = EARLIEST - timedelta(days=1)  # beyond Python's calendar: out of range below
    if not EARLIEST <= moment <= LATEST:
        raise Open311Error(400, f"{name} must be between 1900-01-01 and 2999-12-31 (UTC).")
    return moment


def _uuids(values: Sequence[str]) -> list[uuid.UUID]:
    try:
        return [uuid.UUID(v) for v in values]
    except ValueError as exc:
        raise Open311Error(
            400, "service_request_id must be a comma-separated list of request ids (UUIDs)."
        ) from exc


def _public(request: Request) -> PublicView:
    """The public view, after the listing switch and the caller's address bucket (403, 429)."""
    view: PublicView = request.app.state.open311_view
    if not view.listing:
        raise Open311Error(
            403, "Service requests are not published by this server (its public listing is off)."
        )
    limiter: RateLimiter | None = request.app.state.open311_limiter
    if limiter is not None:
        address = request.client.host if request.client is not None else "unknown"
        wait = limiter.take(address, now=time.monotonic())
        if wait > 0:
            metrics.RATE_LIMITED.inc()
            retry = limiter.retry_after_header(wait)
            raise Open311Error(
                429,
                f"Too many requests from {address}; retry after {retry} s.",
                headers={"Retry-After": retry},
            )
    return view


@router.get(
    "/requests.{fmt}",
    summary="Query service requests (public fields only)",
    response_model=list[ServiceRequestOut],
    responses={
        **_xml("service_requests"),
        **error_responses(
            403, s403="This server does not publish service requests (its public listing is off)"
        ),
    },
)
async def get_requests(
    request: Request,
    fmt: str,
    reference: Reference,
    sessions: Sessions,
    limits: Limits,
    service_request_id: Annotated[
        str | None,
        Query(description="Comma-separated request ids; when given, the other filters are ignored"),
    ] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated service codes")] = None,
    start_date: Annotated[
        str | None,
        Query(
            description="Requested at or after this W3C date-time (1900..2999); default 90 days ago",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    end_date: Annotated[
        str | None,
        Query(
            description="Requested at or before this W3C date-time (1900..2999)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    status: Annotated[str | None, Query(description="open, closed, or both comma-separated")] = None,
) -> Response:
    """Filters: service_request_id (comma-separated; overrides the rest), service_code, start_date,
    end_date, status."""

    async def produce() -> tuple[int, Any]:
        view = _public(request)
        ids = _split(service_request_id)
        async with sessions() as session:
            if ids:
                rows = await repo.list_requests(session, hazard_ids=_uuids(ids), limit=limits["max_results"])
            else:
                statuses = _split(status)
                unknown = [s for s in statuses if s not in ("open", "closed")]
                if unknown:
                    raise Open311Error(
                        400, f"status must be open or closed (comma-separated), not {', '.join(unknown)}."
                    )
                codes = _split(service_code)
                for code in codes:
                    _category(reference, code)
                start = _date("start_date", start_date)
                end = _date("end_date", end_date)
                if start is None and end is None:
                    start = datetime.now(UTC) - timedelta(days=limits["default_days"])
                rows = await repo.list_requests(
                    session,
                    service_codes=codes,
                    start=start,
                    end=end,
                    statuses=statuses,
                    limit=limits["max_results"],
                )
        return 200, [request_json(row, reference, view) for row in rows]

    return await _answer(fmt, "service_requests", produce)


@router.get(
    "/requests/{service_request_id}.{fmt}",
    summary="One service request",
    response_model=list[ServiceRequestOut],
    responses={
        **_xml("service_requests"),
        **error_responses(
            403, s403="This server does not publish service requests (its public listing is off)"
        ),
    },
)
async def get_request(
    request: Request, service_request_id: str, fmt: str, reference: Reference, sessions: Sessions
) -> Response:
    """A list holding the one request, as the standard says; 404 when unknown."""

    async def produce() -> tuple[int, Any]:
        view = _public(request)
        [hazard_id] = _uuids([service_request_id])
        async with sessions() as session:
            rows = await repo.list_requests(session, hazard_ids=[hazard_id], limit=1)
        if not rows:
            raise Open311Error(404, f"No service request {service_request_id}.")
        return 200, [request_json(rows[0], reference, view)]

    return await _answer(fmt, "service_requests", produce)


async def _public_media(request: Request, photos: Photos, photo_id: str, *, thumbnail: bool) -> Response:
    try:
        view = _public(request)
    except Open311Error as exc:
        return render(
            "json",
            "errors",
            [{"code": exc.status, "description": exc.description}],
            status=exc.status,
            headers=exc.headers,
        )
    if not view.show_photos:
        return render(
            "json",
            "errors",
            [{"code": 404, "description": "Photos are not published by this server."}],
            status=404,
        )
    return await photo_api.stream_public(photos, photo_id, thumbnail=thumbnail)


@router.get(
    "/media/{photo_id}",
    summary="A report's photo, when the public listing shows photos",
    response_class=StreamingResponse,
    responses=PHOTO_CONTENT,
)
async def get_media(request: Request, photo_id: str, photos: photo_api.PhotoService) -> Response:
    """A photo a reporter attached to a report (metadata stripped); 404 unless photos are shown."""
    return await _public_media(request, photos, photo_id, thumbnail=False)


@router.get(
    "/media/{photo_id}/thumbnail",
    summary="A report photo's thumbnail, when photos are shown",
    response_class=StreamingResponse,
    responses=PHOTO_CONTENT,
)
async def get_media_thumbnail(request: Request, photo_id: str, photos: photo_api.PhotoService) -> Response:
    """The thumbnail of a photo a reporter attached to a report."""
    return await _public_media(request, photos, photo_id, thumbnail=True)
