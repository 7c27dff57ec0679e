"""Photo rules without a database: type by content, who may see a photo, our own photo URLs."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from PIL import Image

from services.intake.open311 import public_media_url
from services.intake.photos import (
    HazardScope,
    PhotoRecord,
    PhotoRefusedError,
    may_see,
    photo_id_for,
    photo_ids_in,
    process,
    sniff,
)
from shared.auth import Principal

FIRE = "Fire Safety Supervision (Fire and Safety Committee Office)"
PHOTO = PhotoRecord(uuid.uuid4(), "gm-1", "reporter", uuid.uuid4(), "image/jpeg")
SCOPE = HazardScope("liuyue-01", FIRE)


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "kind"), [("JPEG", "jpeg"), ("PNG", "png"), ("WEBP", "webp")])
def test_the_first_bytes_name_the_type(fmt: str, kind: str) -> None:
    assert sniff(encoded(fmt)[:16]) == kind


def test_heic_brands_are_heic_and_other_files_are_nothing() -> None:
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "heic"
    assert sniff(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00") == "heic"
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00") is None  # an MP4
    assert sniff(encoded("GIF")[:16]) is None
    assert sniff(b"%PDF-1.7") is None
    assert sniff(b"") is None


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        (Principal("gm-1", "reporter", grid_id="liuyue-02"), True),  # the uploader, wherever
        (Principal("gm-2", "reporter", grid_id="liuyue-01"), True),  # the hazard's grid
        (Principal("gm-3", "reporter", grid_id="liuyue-02"), False),
        (Principal("dept-fire", "department", department_id="fire"), True),
        (Principal("dept-gas", "department", department_id="gas"), False),
        (Principal("op", "operator"), True),
        (Principal("sup", "supervisor"), True),
    ],
)
def test_an_attached_photo_is_seen_by_whoever_sees_its_hazard(principal: Principal, visible: bool) -> None:
    agency = FIRE if principal.department_id == "fire" else ("Gas" if principal.department_id else None)
    assert may_see(principal, PHOTO, SCOPE, agency_of=agency) is visible


def test_a_photo_not_yet_attached_is_its_uploaders_alone() -> None:
    assert may_see(Principal("gm-1", "reporter", grid_id="x"), PHOTO, None, agency_of=None)
    assert not may_see(Principal("sup", "supervisor"), PHOTO, None, agency_of=None)
    assert not may_see(
        Principal("dept-fire", "department", department_id="fire"), PHOTO, None, agency_of=FIRE
    )
    # A hazard nobody is responsible for yet is no department's.
    assert not may_see(
        Principal("dept-fire", "department", department_id="fire"),
        PHOTO,
        HazardScope("liuyue-01", None),
        agency_of=FIRE,
    )


def test_own_photo_urls_are_found_on_any_host_and_others_are_ignored() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    urls = [
        f"http://intake:8101/api/v1/photos/{a}",
        f"https://hazards.example.org/api/v1/photos/{b}?x=1",
        "https://img.example.org/a.jpg",
        f"https://img.example.org/api/v1/photos/{a}/thumbnail",
        "https://img.example.org/api/v1/photos/not-a-uuid-but-thirty-six-characters",
    ]
    assert photo_ids_in(urls) == [a, b]
    assert public_media_url(urls[0]) == f"http://intake:8101/open311/v2/media/{a}"
    assert public_media_url(urls[2]) == urls[2]


def test_the_same_bytes_from_the_same_uploader_are_the_same_photo() -> None:
    assert photo_id_for("gm-1", "ab" * 32) == photo_id_for("gm-1", "ab" * 32)
    assert photo_id_for("gm-1", "ab" * 32) != photo_id_for("gm-2", "ab" * 32)


def test_too_many_pixels_are_refused_before_decoding(tmp_path: Path) -> None:
    source = tmp_path / "big.png"
    source.write_bytes(encoded("PNG", (400, 300)))
    with pytest.raises(PhotoRefusedError) as refused:
        process(source, "png", max_pixels=100_000, max_side=2000, thumbnail_side=320)
    assert (refused.value.status, refused.value.code) == (422, "photo_too_many_pixels")


def test_a_large_jpeg_is_stored_at_max_side_and_its_thumbnail_at_thumbnail_side(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    source.write_bytes(encoded("JPEG", (4000, 3000)))
    done = process(source, "jpeg", max_pixels=50_000_000, max_side=2000, thumbnail_side=320)
    assert Image.open(done.photo).size == (2000, 1500)
    assert Image.open(done.thumbnail).size == (320, 240)
    assert done.content_type == "image/jpeg"
