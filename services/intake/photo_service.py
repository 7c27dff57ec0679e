"""The photo use cases: store an upload, attach photos to a hazard, stream one to who may see it."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import photos
from services.intake import repository as repo
from services.intake.photos import HazardScope, PhotoRecord, PhotoRefusedError
from services.intake.photostore import CHUNK, PhotoStore
from services.intake.settings import PhotoSettings
from shared.auth import Principal
from shared.reference import ReferenceData


class PhotoNotFoundError(Exception):
    """No such photo or hazard, or the caller may not see it (the same answer: 404)."""


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    """What an upload became."""

    photo_id: uuid.UUID
    hazard_id: uuid.UUID | None
    content_type: str
    width: int
    height: int
    bytes: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _copy_and_hash(source: BinaryIO, target: Path, limit: int) -> tuple[str, int]:
    """Copy the spooled upload to ``target`` while hashing it; 413 past ``limit`` bytes."""
    digest = hashlib.sha256()
    size = 0
    source.seek(0)
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise PhotoRefusedError(413, "photo_too_large", f"A photo may be at most {limit:,} bytes.")
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest(), size


class Photos:
    """Photo uploads and reads for one service process."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        store: PhotoStore,
        settings: PhotoSettings,
        reference: ReferenceData,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.settings = settings
        self.reference = reference
        self.clock = clock
        self._decoding = asyncio.Semaphore(settings.decoders)

    def agency_of(self, principal: Principal) -> str | None:
        """The name under which the caller's department appears as a hazard's agency."""
        if principal.role != "department" or principal.department_id is None:
            return None
        try:
            return self.reference.department(principal.department_id).name_en
        except LookupError:
            return None

    async def add(
        self, *, principal: Principal, upload: BinaryIO, hazard_id: uuid.UUID | None = None
    ) -> StoredPhoto:
        """Check, clean and store one upload; with ``hazard_id``, attach it to that hazard (404 unless visible)."""
        head = await asyncio.to_thread(_head, upload)
        kind = photos.sniff(head)
        if kind is None:
            raise PhotoRefusedError(
                415,
                "unsupported_media_type",
                f"The file is not a photo this service accepts ({photos.ACCEPTED}).",
            )
        if hazard_id is not None:
            async with self.sessions() as session:
                row = await repo.get_hazard_scope(session, hazard_id)
            scope = None if row is None else HazardScope(row.grid_id, row.agency_responsible)
            # The photo would become visible to whoever sees the hazard: the uploader must see it too.
            probe = PhotoRecord(uuid.UUID(int=0), "", "", hazard_id, "")
            if scope is None or not photos.may_see(
                principal, probe, scope, agency_of=self.agency_of(principal)
            ):
                raise PhotoNotFoundError(hazard_id)
        with tempfile.TemporaryDirectory(prefix="hazard-photo-") as work:
            source = Path(work) / "upload"
            sha256, size = await asyncio.to_thread(_copy_and_hash, upload, source, self.settings.max_bytes)
            # Decoding is what takes memory: a few at a time, however many uploads arrive at once.
            async with self._decoding:
                processed = await asyncio.to_thread(
                    photos.process,
                    source,
                    kind,
                    max_pixels=self.settings.max_pixels,
                    max_side=self.settings.max_side,
                    thumbnail_side=self.settings.thumbnail_side,
                )
            photo_id = photos.photo_id_for(principal.id, sha256)
            await self.store.put(str(photo_id), processed.photo, content_type=processed.content_type)
            await self.store.put(f"{photo_id}.thumb", processed.thumbnail, content_type=photos.THUMBNAIL_TYPE)
            stored_bytes = processed.photo.stat().st_size
        async with self.sessions() as session, session.begin():
            await repo.add_photo(
                session,
                {
                    "photo_id": photo_id,
                    "owner_id": principal.id,
                    "owner_role": principal.role,
                    "hazard_id": hazard_id,
                    "content_type": processed.content_type,
                    "bytes": stored_bytes,
                    "width": processed.width,
                    "height": processed.height,
                    "uploaded_bytes": size,
                    "sha256": sha256,
                    "created_at": self.clock(),
                },
            )
        return StoredPhoto(
            photo_id, hazard_id, processed.content_type, processed.width, processed.height, stored_bytes
        )

    async def attach(self, *, owner_id: str, hazard_id: uuid.UUID, urls: Sequence[str]) -> None:
        """Attach the owner's photos named among a report's photo URLs to its hazard."""
        ids = photos.photo_ids_in(list(urls))
        if not ids:
            return
        async with self.sessions() as session, session.begin():
            await repo.attach_photos(session, hazard_id=hazard_id, owner_id=owner_id, photo_ids=ids)

    async def _record(self, photo_id: uuid.UUID) -> tuple[PhotoRecord, HazardScope | None]:
        async with self.sessions() as session:
            row = await repo.get_photo(session, photo_id)
        if row is None:
            raise PhotoNotFoundError(photo_id)
        record = PhotoRecord(row.photo_id, row.owner_id, row.owner_role, row.hazard_id, row.content_type)
        scope = None if row.grid_id is None else HazardScope(row.grid_id, row.agency_responsible)
        return record, scope

    async def read(
        self, *, principal: Principal | None, photo_id: uuid.UUID, thumbnail: bool
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The content type and chunks of a photo (or its thumbnail) the caller may see.

        ``principal`` None is the public (Open311 with photos shown): only photos a reporter
        attached to their report, never a department's or a verifier's evidence.
        """
        record, scope = await self._record(photo_id)
        if principal is None:
            visible = scope is not None and record.owner_role == "reporter"
        else:
            visible = photos.may_see(principal, record, scope, agency_of=self.agency_of(principal))
        if not visible:
            raise PhotoNotFoundError(photo_id)
        key = f"{photo_id}.thumb" if thumbnail else str(photo_id)
        chunks = self.store.get(key)
        try:
            first = await anext(chunks)
        except (KeyError, StopAsyncIteration) as exc:
            raise PhotoNotFoundError(photo_id) from exc
        return (photos.THUMBNAIL_TYPE if thumbnail else record.content_type), _prepend(first, chunks)


def _head(upload: BinaryIO) -> bytes:
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    return head


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk
