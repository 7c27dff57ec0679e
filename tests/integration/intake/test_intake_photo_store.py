"""The photo stores behind one interface: the directory, and S3 over the real protocol (moto's server)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from services.intake.photostore import CHUNK, DirectoryStore, PhotoStore, S3Store
from shared.devstack.ports import free_port
from tests.integration.intake.intake_helpers import AppFactory, auth

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def _read(store: PhotoStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get(key)])


async def _round_trip(store: PhotoStore, tmp_path: Path) -> None:
    content = os.urandom(3 * CHUNK + 17)
    source = tmp_path / "photo"
    source.write_bytes(content)
    await store.put("0f1e2d3c-photo", source, content_type="image/jpeg")
    assert await _read(store, "0f1e2d3c-photo") == content
    # The same key again replaces the file (a retried upload).
    source.write_bytes(b"second")
    await store.put("0f1e2d3c-photo", source, content_type="image/jpeg")
    assert await _read(store, "0f1e2d3c-photo") == b"second"
    with pytest.raises(KeyError):
        await _read(store, "missing")


async def test_the_directory_store_keeps_and_streams_files(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    await _round_trip(store, tmp_path)
    assert [p.name for p in (tmp_path / "store").rglob("*") if p.is_file()] == ["0f1e2d3c-photo"]
    with pytest.raises(KeyError):
        await _read(store, "../escape")


async def test_the_s3_store_keeps_and_streams_objects(tmp_path: Path, s3_endpoint: str) -> None:
    from aiobotocore.session import get_session

    credentials = {"aws_access_key_id": "photo-key", "aws_secret_access_key": "photo-secret"}
    async with get_session().create_client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials
    ) as client:
        await client.create_bucket(Bucket="hazard-photos")
    store = S3Store(
        bucket="hazard-photos",
        prefix="photos/",
        endpoint_url=s3_endpoint,
        region="us-east-1",
        access_key_id=credentials["aws_access_key_id"],
        secret_access_key=credentials["aws_secret_access_key"],
    )
    await _round_trip(store, tmp_path)
    async with get_session().create_client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials
    ) as client:
        listed = await client.list_objects_v2(Bucket="hazard-photos")
        head = await client.head_object(Bucket="hazard-photos", Key="photos/0f1e2d3c-photo")
    assert [o["Key"] for o in listed["Contents"]] == ["photos/0f1e2d3c-photo"]
    assert head["ContentType"] == "image/jpeg"


async def test_intake_uploads_and_serves_photos_through_s3(intake_app: AppFactory, s3_endpoint: str) -> None:
    from aiobotocore.session import get_session

    keys = {"access_key_id": "photo-key", "secret_access_key": "photo-secret"}
    async with get_session().create_client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=keys["access_key_id"],
        aws_secret_access_key=keys["secret_access_key"],
    ) as client:
        await client.create_bucket(Bucket="intake-photos")
    s3 = {"bucket": "intake-photos", "endpoint_url": s3_endpoint, "region": "us-east-1", **keys}
    async with intake_app(outbox={"enabled": False}, broker=False, photos={"store": "s3", "s3": s3}) as (
        _app,
        client,
    ):
        image = io.BytesIO()
        Image.new("RGB", (300, 200), (10, 200, 30)).save(image, "PNG")
        answer = await client.post(
            "/api/v1/photos",
            headers=auth("tok-gm1"),
            files={"file": ("a.png", image.getvalue(), "image/png")},
        )
        assert answer.status_code == 201, answer.text
        served = await client.get(answer.json()["url"], headers=auth("tok-gm1"))
        assert served.status_code == 200
        assert Image.open(io.BytesIO(served.content)).size == (300, 200)
        thumb = await client.get(answer.json()["thumbnail_url"], headers=auth("tok-gm1"))
        assert Image.open(io.BytesIO(thumb.content)).size == (300, 200)
