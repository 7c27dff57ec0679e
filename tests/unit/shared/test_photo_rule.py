"""One rule for photo references: intake's reports and tracking's evidence accept and refuse the same."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from services.intake.domain import ReportIn
from services.tracking.api import RectificationBody, VerificationBody
from shared.photos import MAX_PHOTO_URL_CHARS, MAX_PHOTOS

GOOD = "https://photos.example.cn/p/1.jpg"
BAD = [
    "ftp://photos.example.cn/1.jpg",  # not http(s)
    "https:///1.jpg",  # no host
    "photos.example.cn/1.jpg",  # not absolute
    "https://h/" + "x" * MAX_PHOTO_URL_CHARS,  # too long
]


def _evidence(model: type[BaseModel], photos: list[str]) -> Any:
    if model is RectificationBody:
        return RectificationBody(note="fixed", photos=photos)
    return VerificationBody(passed=True, photos=photos)


def _report(photos: list[str]) -> Any:
    return ReportIn.model_validate(
        {
            "report_id": str(uuid.uuid4()),
            "category": "locked_rooftop_door",
            "description": "door locked",
            "grid_id": "liuyue-01",
            "observed_at": "2026-12-01T08:00:00+08:00",
            "location": {"lat": 22.622, "lon": 114.16813, "address": "building 1"},
            "photos": photos,
        }
    )


def test_a_good_photo_is_taken_everywhere() -> None:
    assert _report([GOOD]).photos == (GOOD,)
    assert RectificationBody(note="fixed", photos=[GOOD]).photos == [GOOD]
    assert VerificationBody(passed=True, photos=[GOOD]).photos == [GOOD]


@pytest.mark.parametrize("model", [RectificationBody, VerificationBody])
@pytest.mark.parametrize("url", BAD)
def test_evidence_refuses_what_a_report_refuses(model: type[BaseModel], url: str) -> None:
    with pytest.raises(ValidationError, match="photos"):
        _evidence(model, [url])
    with pytest.raises(ValidationError, match="photos"):
        _report([url])


@pytest.mark.parametrize("model", [RectificationBody, VerificationBody])
def test_the_same_count_limit_everywhere(model: type[BaseModel]) -> None:
    assert len(_evidence(model, [GOOD] * MAX_PHOTOS).photos) == MAX_PHOTOS
    assert len(_report([GOOD] * MAX_PHOTOS).photos) == MAX_PHOTOS
    with pytest.raises(ValidationError, match="photos"):
        _evidence(model, [GOOD] * (MAX_PHOTOS + 1))
    with pytest.raises(ValidationError, match="photos"):
        _report([GOOD] * (MAX_PHOTOS + 1))
