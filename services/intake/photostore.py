"""Where photo files live, behind one interface: a directory (the embedded default) or S3.

Both stream: ``put`` reads the file from disk, ``get`` yields chunks, so no photo is ever
held in memory whole. Keys are ``<photo_id>`` and ``<photo_id>.thumb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

CHUNK = 64 * 1024


class PhotoStore(Protocol):
    """Stores and streams photo files by key."""

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        """Store the file at ``source`` under ``key`` (replacing it: same key, same content)."""

    def get(self, key: str) -> AsyncIterator[bytes]:
        """The file's bytes in chunks; raises KeyError before the first chunk when missing."""
        ...


class DirectoryStore:
    """Files in one directory, written atomically (a temporary name, then a rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if "/" in key or key.startswith("."):
            raise KeyError(key)
        return self.root / key[:2] / key

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        """Copy ``source`` in under ``key``."""
        await asyncio.to_thread(self._put, key, source)

    def _put(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """Chunks of the stored file."""
        try:
            handle = await asyncio.to_thread(self._path(key).open, "rb")
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK):
                yield chunk
        finally:
            handle.close()


class S3Store:
    """An S3-compatible object store (AWS S3, MinIO, Ceph RGW, …) through aiobotocore."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        from aiobotocore.session import get_session  # botocore loads slowly; only S3 needs it

        async with get_session().create_client("s3", **self._client_args) as client:
            yield client

    async def put(self, key: str, source: Path, *, content_type: str) -> None:
        """Upload ``source`` as one object (photos are at most a few MB: no multipart upload)."""
        async with self._client() as client:
            with source.open("rb") as body:
                await client.put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=body, ContentType=content_type
                )

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """Chunks of the object; KeyError when there is none."""
        from botocore.exceptions import ClientError

        async with self._client() as client:
            try:
                answer = await client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise KeyError(key) from exc
                raise
            async with answer["Body"] as body:
                async for chunk in body.iter_chunks(CHUNK):
                    yield chunk
