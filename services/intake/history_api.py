"""HTTP route of the history import (#18 item 2): an operator uploads a CSV or Excel file of past records.

``POST /api/v1/imports`` (multipart: ``file``, optional ``on_error`` = ``refuse`` | ``skip``).
A wrong header, an unreadable file, or (with ``refuse``) any bad row is 422 in the error shape with
every problem's row, field and message, and nothing is stored; otherwise 200 with the counts and
the bad rows skipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from services.intake import history
from services.intake.history_import import OnError, import_history
from shared.auth import Principal, require
from shared.errors import ApiError, error_body
from shared.outbox import Outbox
from shared.reference import ReferenceData

router = APIRouter(prefix="/api/v1", tags=["history import"])


class RowProblem(BaseModel):
    """One problem of one row: its number, the field, what is wrong, and the value read."""

    model_config = ConfigDict(extra="forbid")

    row: int
    field: str
    problem: str
    value: str | None


class ImportOut(BaseModel):
    """What an import stored: counts, and every bad row's problems (skipped with on_error=skip)."""

    model_config = ConfigDict(extra="forbid")

    import_id: uuid.UUID
    on_error: Literal["refuse", "skip"]
    rows: int
    imported: int
    unchanged: int
    rejected: int
    errors: list[RowProblem]


async def _import_parts(request: Request) -> ImportParts:
    intake = request.app.state.intake
    return ImportParts(request.app.state.runtime.sessions, intake.outbox, intake.reference)


@dataclass(frozen=True, slots=True)
class ImportParts:
    """What an import needs: the sessions, the outbox and the reference data."""

    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    reference: ReferenceData


Parts = Annotated[ImportParts, Depends(_import_parts)]
IMPORT_PATH = "/api/v1/imports"
MAX_IMPORT_BYTES = 64 * 1024 * 1024
"""The largest import file (100,000 rows of the template are about 20 MB of CSV)."""
_operator = require("operator")


async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(422, "malformed_upload", "Send the file as multipart/form-data in the field 'file'.")
    try:
        return await request.form(max_files=1, max_fields=5)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise ApiError(422, "malformed_upload", f"The multipart body cannot be read: {exc.detail}") from exc


@router.post(
    "/imports",
    response_model=ImportOut,
    summary="Import past records (CSV or .xlsx template; on_error=refuse|skip); operators only",
    responses={
        413: {"description": "The file is larger than the limit"},
        422: {
            "description": "Wrong columns, unreadable file, or bad rows with on_error=refuse (nothing stored)"
        },
    },
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
                            "on_error": {"type": "string", "enum": ["refuse", "skip"], "default": "refuse"},
                        },
                    }
                }
            },
        }
    },
)
async def import_records(
    request: Request, principal: Annotated[Principal, Depends(_operator)], parts: Parts
) -> JSONResponse:
    """Check every row; store the good ones and their hazard.imported events in one transaction, or nothing."""
    form = await _form(request)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "file_missing", "Send the file in the multipart field 'file'.")
        on_error_raw = form.get("on_error") or "refuse"
        if on_error_raw not in ("refuse", "skip"):
            raise ApiError(
                422,
                "invalid",
                "on_error is 'refuse' (any bad row refuses the file) or 'skip' (bad rows listed, good ones imported).",
                [{"field": "on_error", "problem": "refuse or skip"}],
            )
        on_error: OnError = "skip" if on_error_raw == "skip" else "refuse"
        data = await upload.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise ApiError(
                413, "payload_too_large", f"An import file holds at most {MAX_IMPORT_BYTES} bytes."
            )
        filename = upload.filename or ""
    finally:
        await form.close()
    try:
        result = await import_history(
            parts.sessions,
            outbox=parts.outbox,
            reference=parts.reference,
            data=data,
            filename=filename,
            on_error=on_error,
            imported_by=principal.id,
        )
    except history.WrongColumnsError as exc:
        raise ApiError(
            422,
            "wrong_columns",
            "The header is not the import template's; nothing was imported.",
            exc.problems,
        ) from exc
    except history.UnreadableFileError as exc:
        raise ApiError(422, "unreadable_file", str(exc), [{"field": "file", "problem": str(exc)}]) from exc
    if result.refused:
        body: dict[str, Any] = error_body(
            "import_refused",
            f"{result.rejected} of {result.rows} rows are bad; nothing was imported "
            "(send on_error=skip to import the good rows).",
            [e.json() for e in result.errors],
        )
        body["error"]["import"] = result.json()
        return JSONResponse(body, status_code=422)
    return JSONResponse(result.json(), status_code=200)
