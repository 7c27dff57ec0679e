"""Photos: multipart upload (API and Open311 ``media``), content checks, metadata stripped,
thumbnails, and reads only by those who may see the hazard — against the real database."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from tests.integration.intake.intake_helpers import LAT, LON, AppFactory, auth, report, scalar

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
GPS_IFD = 0x8825
MAKE = 0x010F
ORIENTATION = 0x0112


def photo_bytes(fmt: str, *, size: tuple[int, int] = (640, 480), exif: bool = True) -> bytes:
    """An image in ``fmt`` carrying camera and GPS metadata (EXIF), turned by its orientation tag."""
    image = Image.new("RGB", size, (180, 40, 40))
    image.paste((20, 120, 220), (0, 0, size[0] // 2, size[1] // 4))
    options: dict[str, Any] = {}
    if exif:
        tags = Image.Exif()
        tags[MAKE] = "PhoneMaker"
        tags[ORIENTATION] = 6  # rotate 90° to display upright
        tags[GPS_IFD] = {1: "N", 2: (22.0, 37.0, 19.2), 3: "E", 4: (114.0, 10.0, 5.3)}
        options["exif"] = tags.tobytes()
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def without_metadata(content: bytes) -> Image.Image:
    """The served image, after checking no EXIF, GPS or maker name survived."""
    image = Image.open(io.BytesIO(content))
    assert dict(image.getexif()) == {}
    assert b"PhoneMaker" not in content
    assert not {"exif", "xmp", "XML:com.adobe.xmp"} & set(image.info)
    return image


def photos_dir(tmp_path: Path) -> dict[str, Any]:
    return {"photos": {"directory": str(tmp_path / "photos")}}


async def assign_to_fire(app: Any, hazard_id: str) -> None:
    """Make the fire department the hazard's agency, as its hazard.dispatched event would."""
    async with app.state.runtime.sessions() as session, session.begin():
        await session.execute(
            text("update intake.reports set agency_responsible = :a where hazard_id = :h"),
            {"a": "Fire Safety Supervision (Fire and Safety Committee Office)", "h": uuid.UUID(hazard_id)},
        )


async def upload(client: Any, token: str, content: bytes, *, name: str = "p.jpg", **fields: str) -> Any:
    return await client.post(
        "/api/v1/photos", headers=auth(token), files={"file": (name, content, "image/jpeg")}, data=fields
    )


def open311_form(**fields: str) -> dict[str, str]:
    base = {
        "api_key": "tok-gm1",
        "service_code": "blocked_fire_passage",
        "lat": str(LAT),
        "long": str(LON),
        "description": "Stairwell blocked with boxes",
    }
    base.update(fields)
    return base


async def test_open311_media_upload_is_stored_on_the_report_not_dropped(
    intake_app: AppFactory, tmp_path: Path
) -> None:
    shown = {"open311": {"show_photos": True, "rate_limit": {"enabled": False}}}
    async with intake_app(**OFF, **photos_dir(tmp_path), **shown) as (app, client):
        jpeg = photo_bytes("JPEG")
        posted = await client.post(
            "/open311/v2/requests.json",
            data=open311_form(),
            files={"media": ("stairs.jpg", jpeg, "image/jpeg")},
        )
        assert posted.status_code == 201, posted.text
        [created] = posted.json()
        hazard_id = created["service_request_id"]

        stored = await scalar(
            app, "select photos from intake.reports where hazard_id = :h", h=uuid.UUID(hazard_id)
        )
        assert len(stored) == 1
        [request] = (await client.get(f"/open311/v2/requests/{hazard_id}.json")).json()
        photo_id = stored[0].rsplit("/", 1)[1]
        assert request["media_url"] == f"http://intake/open311/v2/media/{photo_id}"
        attached = await scalar(
            app, "select hazard_id from intake.photos where photo_id = :p", p=uuid.UUID(photo_id)
        )
        assert str(attached) == hazard_id

        public = await client.get(request["media_url"])
        assert public.status_code == 200
        assert public.headers["content-type"] == "image/jpeg"
        assert without_metadata(public.content).size == (480, 640)  # turned upright
        thumb = await client.get(request["media_url"] + "/thumbnail")
        assert thumb.status_code == 200
        assert Image.open(io.BytesIO(thumb.content)).size == (240, 320)
        # The reporter's API route serves the same photo.
        mine = await client.get(stored[0], headers=auth("tok-gm1"))
        assert mine.status_code == 200
        assert mine.content == public.content

        # A retry with the same report_id and the same file is a replay, not a conflict.
        report_id = str(uuid.uuid4())
        first = await client.post(
            "/open311/v2/requests.json",
            data=open311_form(**{"attribute[report_id]": report_id}),
            files={"media": ("a.png", photo_bytes("PNG"), "image/png")},
        )
        again = await client.post(
            "/open311/v2/requests.json",
            data=open311_form(**{"attribute[report_id]": report_id}),
            files={"media": ("a.png", photo_bytes("PNG"), "image/png")},
        )
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()[0]["service_request_id"] == again.json()[0]["service_request_id"]


async def test_open311_media_refusals_keep_their_status_in_open311_shape(
    intake_app: AppFactory, tmp_path: Path
) -> None:
    small = {"photos": {"directory": str(tmp_path / "p"), "max_bytes": 50_000}}
    async with intake_app(**OFF, **small) as (app, client):
        gif = io.BytesIO()
        Image.new("RGB", (10, 10)).save(gif, "GIF")
        wrong = await client.post(
            "/open311/v2/requests.json",
            data=open311_form(),
            files={"media": ("a.jpg", gif.getvalue(), "image/jpeg")},
        )
        assert wrong.status_code == 415
        assert wrong.json()[0]["code"] == 415
        assert "JPEG, PNG, WebP or HEIC" in wrong.json()[0]["description"]

        big = photo_bytes("PNG", size=(400, 400), exif=False) + b"\0" * 60_000
        large = await client.post(
            "/open311/v2/requests.json", data=open311_form(), files={"media": ("a.png", big, "image/png")}
        )
        assert large.status_code == 413
        assert large.json()[0]["code"] == 413

        broken = await client.post(
            "/open311/v2/requests.json",
            data=open311_form(),
            files={"media": ("a.jpg", photo_bytes("JPEG")[:300], "image/jpeg")},
        )
        assert broken.status_code == 400
        assert broken.json()[0]["description"].startswith("media: ")

        eleven = [("media", (f"{i}.png", photo_bytes("PNG", exif=False), "image/png")) for i in range(11)]
        many = await client.post("/open311/v2/requests.json", data=open311_form(), files=eleven)
        assert many.status_code == 400
        assert await scalar(app, "select count(*) from intake.reports") == 0
        assert await scalar(app, "select count(*) from intake.photos") == 0


@pytest.mark.parametrize(
    ("fmt", "stored_type"),
    [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp"), ("HEIF", "image/jpeg")],
)
async def test_each_accepted_type_is_stored_without_metadata_with_a_thumbnail(
    intake_app: AppFactory, tmp_path: Path, fmt: str, stored_type: str
) -> None:
    async with intake_app(**OFF, **photos_dir(tmp_path)) as (_app, client):
        # The declared type is wrong on purpose: the content decides.
        answer = await upload(client, "tok-gm1", photo_bytes(fmt), name="x.bin")
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["content_type"] == stored_type
        assert (body["width"], body["height"]) == (480, 640)
        assert body["hazard_id"] is None
        assert body["url"] == f"http://intake/api/v1/photos/{body['photo_id']}"
        assert body["thumbnail_url"] == body["url"] + "/thumbnail"

        served = await client.get(body["url"], headers=auth("tok-gm1"))
        assert served.status_code == 200
        assert served.headers["content-type"] == stored_type
        assert served.headers["x-content-type-options"] == "nosniff"
        assert without_metadata(served.content).size == (480, 640)
        thumb = await client.get(body["thumbnail_url"], headers=auth("tok-gm1"))
        assert thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size == (240, 320)


async def test_upload_refusals_are_413_415_422_in_the_error_shape(
    intake_app: AppFactory, tmp_path: Path
) -> None:
    small = {"photos": {"directory": str(tmp_path / "p"), "max_bytes": 50_000}}
    async with intake_app(**OFF, **small) as (app, client):
        text = await upload(client, "tok-gm1", b"%PDF-1.7 not a photo at all", name="x.jpg")
        assert text.status_code == 415
        assert text.json()["error"]["code"] == "unsupported_media_type"

        # Over the file limit, inside the body limit: read, measured, refused.
        padded = photo_bytes("PNG", exif=False) + b"\0" * 50_000
        over = await upload(client, "tok-gm1", padded)
        assert over.status_code == 413
        assert over.json()["error"]["code"] == "photo_too_large"

        # Content-Length past the body limit: refused before anything is read.
        huge = await client.post(
            "/api/v1/photos",
            headers={**auth("tok-gm1"), "content-type": "multipart/form-data; boundary=x"},
            content=b"x" * 200_000,
        )
        assert huge.status_code == 413
        assert huge.json()["error"]["code"] == "payload_too_large"

        truncated = await upload(client, "tok-gm1", photo_bytes("JPEG")[:400])
        assert truncated.status_code == 422
        assert truncated.json()["error"]["code"] == "photo_unreadable"

        not_multipart = await client.post("/api/v1/photos", headers=auth("tok-gm1"), json={"file": "x"})
        assert not_multipart.status_code == 422
        assert not_multipart.json()["error"]["code"] == "malformed_upload"

        no_file = await client.post("/api/v1/photos", headers=auth("tok-gm1"), files={"other": ("a", b"a")})
        assert no_file.status_code == 422
        assert no_file.json()["error"]["code"] == "photo_missing"

        broken_body = await client.post(
            "/api/v1/photos",
            headers={**auth("tok-gm1"), "content-type": "multipart/form-data; boundary=abc"},
            content=b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nxx',
        )
        assert broken_body.status_code == 422
        assert broken_body.json()["error"]["code"] in ("malformed_upload", "photo_missing")

        bad_hazard = await upload(client, "tok-gm1", photo_bytes("PNG"), hazard_id="not-a-uuid")
        assert bad_hazard.status_code == 422
        assert bad_hazard.json()["error"]["code"] == "invalid"

        supervisor = await upload(client, "tok-supervisor", photo_bytes("PNG"))
        assert supervisor.status_code == 403
        assert await scalar(app, "select count(*) from intake.photos") == 0


async def test_photos_are_served_only_to_those_who_may_see_the_hazard(
    intake_app: AppFactory, tmp_path: Path
) -> None:
    async with intake_app(**OFF, **photos_dir(tmp_path)) as (app, client):
        mine = (await upload(client, "tok-gm1", photo_bytes("JPEG"))).json()
        url = mine["url"]

        async def status(token: str, path: str = url) -> int:
            answer = await client.get(path, headers=auth(token))
            return int(answer.status_code)

        # Not attached yet: its uploader's alone.
        assert [await status(t) for t in ("tok-gm1", "tok-gm2", "tok-fire", "tok-supervisor")] == [
            200,
            404,
            404,
            404,
        ]
        # Another reporter naming it in a report does not take it.
        taken = await client.post(
            "/api/v1/hazards",
            headers=auth("tok-gm2"),
            json=report(grid_id="liuyue-02", location={"lat": 22.6225, "lon": 114.1720}, photos=[url]),
        )
        assert taken.status_code in (201, 422), taken.text
        assert await status("tok-gm2") == 404

        created = await client.post("/api/v1/hazards", headers=auth("tok-gm1"), json=report(photos=[url]))
        assert created.status_code == 201, created.text
        hazard_id = created.json()["hazard_id"]
        assert str(await scalar(app, "select hazard_id from intake.photos")) == hazard_id

        # The hazard's grid and the supervisors see it; another grid and another department do not.
        thumb = url + "/thumbnail"
        assert [await status(t) for t in ("tok-gm1", "tok-gm2", "tok-fire", "tok-supervisor")] == [
            200,
            404,
            404,
            200,
        ]
        assert [await status(t, thumb) for t in ("tok-gm2", "tok-fire", "tok-supervisor")] == [404, 404, 200]
        # Once dispatched to the fire department (the Open311 view's agency), fire sees it too.
        await assign_to_fire(app, hazard_id)
        assert await status("tok-fire") == 200

        unknown = await client.get(f"/api/v1/photos/{uuid.uuid4()}", headers=auth("tok-gm1"))
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        assert (await client.get("/api/v1/photos/nonsense", headers=auth("tok-gm1"))).status_code == 404
        assert (await client.get(url)).status_code == 401
        # The public route serves nothing while photos are not shown (the default).
        assert (await client.get(f"/open311/v2/media/{mine['photo_id']}")).status_code == 404


async def test_evidence_uploaded_for_a_hazard_needs_the_hazard_to_be_visible(
    intake_app: AppFactory, tmp_path: Path
) -> None:
    async with intake_app(**OFF, **photos_dir(tmp_path)) as (app, client):
        created = await client.post("/api/v1/hazards", headers=auth("tok-gm1"), json=report(photos=[]))
        hazard_id = created.json()["hazard_id"]
        # Not the fire department's hazard (yet), and not grid 02's: 404, nothing stored.
        assert (await upload(client, "tok-fire", photo_bytes("PNG"), hazard_id=hazard_id)).status_code == 404
        assert (await upload(client, "tok-gm2", photo_bytes("PNG"), hazard_id=hazard_id)).status_code == 404
        unknown = await upload(client, "tok-gm1", photo_bytes("PNG"), hazard_id=str(uuid.uuid4()))
        assert unknown.status_code == 404
        assert await scalar(app, "select count(*) from intake.photos") == 0

        await assign_to_fire(app, hazard_id)
        evidence = await upload(client, "tok-fire", photo_bytes("WEBP"), hazard_id=hazard_id)
        assert evidence.status_code == 201
        assert evidence.json()["hazard_id"] == hazard_id
        # The grid member verifying the rectification sees the department's photo; grid 02 does not.
        assert (await client.get(evidence.json()["url"], headers=auth("tok-gm1"))).status_code == 200
        assert (await client.get(evidence.json()["url"], headers=auth("tok-gm2"))).status_code == 404
