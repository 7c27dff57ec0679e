"""The one rule for photo references in request bodies (reports, rectification, verification, notes).

A photo is referenced by an absolute http(s) URL with a host: one that ``POST /api/v1/photos``
returned, or an external one a client already holds. At most :data:`MAX_PHOTOS` per item.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

from shared.text import Text

MAX_PHOTOS = 10
MAX_PHOTO_URL_CHARS = 2048
PHOTO_SCHEMES = ("https", "http")


def _photo_url(value: str) -> str:
    """Photo URLs must be absolute http(s) URLs with a host."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in PHOTO_SCHEMES or not parts.netloc:
        raise ValueError(f"a photo must be an absolute URL with scheme {' or '.join(PHOTO_SCHEMES)}")
    return value


PhotoUrl = Annotated[
    str, Text(strip=True, min_length=1, max_length=MAX_PHOTO_URL_CHARS), AfterValidator(_photo_url)
]
