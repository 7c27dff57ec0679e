"""HTTP routes of photos: multipart upload, and the photo and its thumbnail for whoever may see the hazard.

Uploads are read by the multipart parser into a spooled temporary file (disk past 1 MiB),
under a body limit checked on Content-Length first (413), so a service's memory does not
grow with the file. Refusals: 413 too large, 415 not a JPEG/PNG/WebP/HEIC, 422 malformed or
undecodable; a photo or hazard the caller may not see is 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from services.intake import api
from services.intake.photo_service import PhotoNotFoundError, Photos, StoredPhoto
from services.intake.photos import PhotoRefusedError
from services.intake.ratelimit import RateLimiter
from shared.auth import Principal, require
from shared.errors import ApiError

router = APIRouter(prefix="/api/v1", tags=["photos"])
UPLOAD_PATH = "/api/v1/photos"
# Multipart framing and the few text fields around one photo.
UPLOAD_OVERHEAD_BYTES = 64 * 1024

_uploader = require("reporter", "department")
_viewer = require("reporter", "department", "operator", "supervisor")
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such photo or hazard, or not visible to you"},
    413: {"description": "The photo is larger than the limit"},
    415: {"description": "Not a JPEG, PNG, WebP or HEIC (checked by content)"},
    422: {"description": "Malformed upload, no file, or a file that does not decode"},
}


async def _photos(request: Request) -> Photos:
    service: Photos = request.app.state.photos
    return service


async def _rate_limiter(request: Request) -> RateLimiter | None:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    return limiter


PhotoService = Annotated[Photos, Depends(_photos)]
Limiter = Annotated[RateLimiter | None, Depends(_rate_limiter)]


class PhotoOut(BaseModel):
    """An uploaded photo: its id, where to fetch it and its thumbnail, and what was stored."""

    model_config = ConfigDict(extra="forbid")

    photo_id: uuid.UUID
    url: str
    thumbnail_url: str
    hazard_id: uuid.UUID | None
    content_type: str
    width: int
    height: int
    bytes: int


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_IMAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image (JPEG, PNG or WebP; a thumbnail is JPEG)",
        "content": dict.fromkeys(("image/jpeg", "image/png", "image/webp"), _BINARY),
    }
}


async def read_form(request: Request, *, max_files: int) -> FormData:
    """The multipart form; malformed bodies are 422 in the error shape."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise PhotoRefusedError(422, "malformed_upload", "Send the photo as multipart/form-data.")
    try:
        return await request.form(max_files=max_files, max_fields=20)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise PhotoRefusedError(
            422, "malformed_upload", f"The multipart body cannot be read: {exc.detail}"
        ) from exc


def photo_url(request: Request, photo_id: uuid.UUID) -> str:
    """The absolute URL of a photo on this service (what a report's ``photos`` may name)."""
    return str(request.url_for("get_photo", photo_id=str(photo_id)))


def photo_json(request: Request, photo: StoredPhoto) -> dict[str, Any]:
    """An upload's answer."""
    return {
        "photo_id": str(photo.photo_id),
        "url": photo_url(request, photo.photo_id),
        "thumbnail_url": str(request.url_for("get_photo_thumbnail", photo_id=str(photo.photo_id))),
        "hazard_id": None if photo.hazard_id is None else str(photo.hazard_id),
        "content_type": photo.content_type,
        "width": photo.width,
        "height": photo.height,
        "bytes": photo.bytes,
    }


def refusal(exc: PhotoRefusedError) -> ApiError:
    """A photo refusal in the API's error shape."""
    return ApiError(exc.status, exc.code, exc.message, [{"field": "file", "problem": exc.message}])


def _not_found(what: uuid.UUID | str) -> ApiError:
    return ApiError(404, "not_found", f"No photo or hazard {what} that you may see.")


@router.post(
    "/photos",
    status_code=201,
    response_model=PhotoOut,
    summary="Upload one photo (multipart field 'file'; optional 'hazard_id' to attach it to a hazard you see)",
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "hazard_id": {"type": "string", "format": "uuid"},
                        },
                    }
                }
            },
        }
    },
)
async def upload_photo(
    request: Request,
    principal: Annotated[Principal, Depends(_uploader)],
    photos: PhotoService,
    limiter: Limiter,
) -> JSONResponse:
    """Store a JPEG, PNG, WebP or HEIC photo without its metadata; answer its id, URL and thumbnail URL."""
    limited = api.over_limit(limiter, principal)
    if limited is not None:
        raise limited
    form: FormData | None = None
    try:
        form = await read_form(request, max_files=1)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise PhotoRefusedError(422, "photo_missing", "Send the photo in the multipart field 'file'.")
        hazard_id = _hazard_id(form.get("hazard_id"))
        photo = await photos.add(principal=principal, upload=upload.file, hazard_id=hazard_id)
    except PhotoRefusedError as exc:
        raise refusal(exc) from exc
    except PhotoNotFoundError as exc:
        raise _not_found(str(exc)) from exc
    finally:
        if form is not None:
            await form.close()
    return JSONResponse(photo_json(request, photo), status_code=201)


def _hazard_id(value: Any) -> uuid.UUID | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise PhotoRefusedError(422, "invalid", "hazard_id must be a text field holding a hazard id (UUID).")
    try:
        return uuid.UUID(value.strip())
    except ValueError as exc:
        raise PhotoRefusedError(422, "invalid", "hazard_id must be a hazard id (UUID).") from exc


async def _stream(
    photos: Photos, principal: Principal | None, photo_id: str, *, thumbnail: bool
) -> StreamingResponse:
    try:
        wanted = uuid.UUID(photo_id)
    except ValueError as exc:
        raise _not_found(photo_id) from exc
    try:
        content_type, chunks = await photos.read(principal=principal, photo_id=wanted, thumbnail=thumbnail)
    except PhotoNotFoundError as exc:
        raise _not_found(photo_id) from exc
    headers = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return StreamingResponse(chunks, media_type=content_type, headers=headers)


@router.get(
    "/photos/{photo_id}",
    summary="A photo (its uploader, or whoever may see its hazard)",
    response_class=StreamingResponse,
    responses={**_IMAGE, 404: _ERRORS[404]},
)
async def get_photo(
    photo_id: str, principal: Annotated[Principal, Depends(_viewer)], photos: PhotoService
) -> StreamingResponse:
    """The stored photo; 404 when unknown or not visible to the caller."""
    return await _stream(photos, principal, photo_id, thumbnail=False)


@router.get(
    "/photos/{photo_id}/thumbnail",
    summary="A photo's thumbnail (JPEG, 320 px on the long side by default)",
    response_class=StreamingResponse,
    responses={**_IMAGE, 404: _ERRORS[404]},
)
async def get_photo_thumbnail(
    photo_id: str, principal: Annotated[Principal, Depends(_viewer)], photos: PhotoService
) -> StreamingResponse:
    """The thumbnail, under the same rule as the photo."""
    return await _stream(photos, principal, photo_id, thumbnail=True)


async def stream_public(photos: Photos, photo_id: str, *, thumbnail: bool) -> StreamingResponse:
    """A reporter's report photo for the public Open311 listing (the caller checked the settings)."""
    return await _stream(photos, None, photo_id, thumbnail=thumbnail)
