"""Photos of hazards: type by content, metadata stripped, a thumbnail; who may see one.

An upload is spooled to disk by the multipart parser (never held in memory whole), then
checked here: its first bytes must be JPEG, PNG, WebP or HEIC (415 otherwise), and it must
decode (422 otherwise). The stored copy is re-encoded from the pixels alone, turned upright
by its EXIF orientation first, so no EXIF (GPS, camera, time), XMP or IPTC survives; only
the colour profile is kept. HEIC becomes JPEG, since browsers do not show HEIC. Large
photos are scaled to ``max_side`` on the long edge, and a JPEG is decoded at the reduced
scale directly, so decoding memory is bounded by the pixel cap, not by the file.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from shared.auth import Principal

Kind = Literal["jpeg", "png", "webp", "heic"]
ACCEPTED = "JPEG, PNG, WebP or HEIC"
# What the stored copy is encoded as, and its content type (HEIC becomes JPEG for browsers).
STORED: dict[Kind, tuple[str, str]] = {
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "heic": ("JPEG", "image/jpeg"),
}
THUMBNAIL_TYPE = "image/jpeg"
_DECODER: dict[Kind, str] = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "heic": "HEIF"}
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
# Photo ids derive from the uploader and the content: a retried upload is the same photo.
_NAMESPACE = uuid.UUID("6f1f0e52-4a3c-4f59-9d62-2f0b8a7c7e11")
PHOTO_PATH = re.compile(r"/api/v1/photos/([0-9a-fA-F-]{36})/?$")


class PhotoRefusedError(Exception):
    """An upload this service will not store: status (413, 415, 422), code and a readable message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Processed:
    """The cleaned photo and its thumbnail, written beside the upload."""

    photo: Path
    thumbnail: Path
    content_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class PhotoRecord:
    """A stored photo as its row says: who uploaded it and which hazard, if any, it belongs to."""

    photo_id: uuid.UUID
    owner_id: str
    owner_role: str
    hazard_id: uuid.UUID | None
    content_type: str


@dataclass(frozen=True, slots=True)
class HazardScope:
    """Who may see a hazard: its grid and the department responsible for it now (by name)."""

    grid_id: str
    agency: str | None


def sniff(head: bytes) -> Kind | None:
    """The image type named by a file's first bytes, or None when it is none of the four."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "heic"
    return None


def photo_id_for(owner_id: str, sha256_hex: str) -> uuid.UUID:
    """The id of a photo: the same uploader sending the same bytes again gets the same photo."""
    return uuid.uuid5(_NAMESPACE, f"{owner_id}\n{sha256_hex}")


def photo_ids_in(urls: tuple[str, ...] | list[str]) -> list[uuid.UUID]:
    """The ids of this service's own photos among a report's photo URLs (any host)."""
    ids = []
    for url in urls:
        match = PHOTO_PATH.search(url.split("?", 1)[0])
        if match is not None:
            try:
                ids.append(uuid.UUID(match.group(1)))
            except ValueError:
                continue
    return ids


def may_see(
    principal: Principal, photo: PhotoRecord, scope: HazardScope | None, *, agency_of: str | None
) -> bool:
    """Whether the caller may see this photo: its uploader, or whoever may see its hazard.

    ``agency_of`` is the name of the caller's department (None for other roles). A photo not
    yet attached to a hazard is its uploader's alone.
    """
    if principal.id == photo.owner_id:
        return True
    if scope is None:
        return False
    if principal.role in ("supervisor", "operator"):
        return True
    if principal.role == "reporter":
        return principal.grid_id == scope.grid_id
    return agency_of is not None and agency_of == scope.agency


@functools.cache
def _heif_opener() -> None:
    from pillow_heif import register_heif_opener  # registers itself with Pillow once

    register_heif_opener()


def _open(path: Path, kind: Kind) -> Image.Image:
    if kind == "heic":
        _heif_opener()
    try:
        # Only the decoder of the type the first bytes named: the content decides, once.
        image = Image.open(path, formats=[_DECODER[kind]])
    except Image.DecompressionBombError as exc:
        raise PhotoRefusedError(
            422, "photo_too_many_pixels", f"The photo has too many pixels: {exc}"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoRefusedError(
            422, "photo_unreadable", f"The file looks like {kind.upper()} but cannot be read."
        ) from exc
    return image


def process(source: Path, kind: Kind, *, max_pixels: int, max_side: int, thumbnail_side: int) -> Processed:
    """Decode, turn upright, strip metadata, scale, and write the photo and its thumbnail beside ``source``.

    Synchronous and CPU-bound: run it in a thread.
    """
    image = _open(source, kind)
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise PhotoRefusedError(
                422,
                "photo_too_many_pixels",
                f"The photo is {width}×{height} pixels; at most {max_pixels:,} pixels are accepted.",
            )
        if kind == "jpeg":
            # Decode at 1/2, 1/4 or 1/8 scale when the stored copy is smaller anyway (the box keeps
            # the aspect, since draft only scales down while both sides stay at least the box's).
            scale = min(1.0, max_side / max(width, height))
            image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))
        icc = image.info.get("icc_profile")
        try:
            upright = ImageOps.exif_transpose(image)
            upright.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise PhotoRefusedError(422, "photo_unreadable", f"The {kind.upper()} file is damaged.") from exc
    fmt, content_type = STORED[kind]
    clean = _pixels_only(upright, fmt)
    clean.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    options: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if fmt in ("JPEG", "WEBP"):
        options.update(quality=88)
    photo = source.with_name(source.name + ".clean")
    clean.save(photo, fmt, **options)
    thumb = clean.copy()
    thumb.thumbnail((thumbnail_side, thumbnail_side), Image.Resampling.LANCZOS)
    thumbnail = source.with_name(source.name + ".thumb")
    _pixels_only(thumb, "JPEG").save(thumbnail, "JPEG", quality=80)
    return Processed(photo, thumbnail, content_type, clean.width, clean.height)


def _pixels_only(image: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode ``fmt`` can store, with no metadata carried along."""
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    elif fmt != "JPEG" and image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    # Nothing from the file's own metadata is written: save takes EXIF/XMP only when passed.
    image.info = {}
    return image
