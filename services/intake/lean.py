"""``LeanRoute``: a FastAPI route declared and documented like any other, served without the generic machinery.

Under load FastAPI's generic request handling (solving the dependency tree, validating the
body through its field machinery, encoding the answer with ``jsonable_encoder``) costs more
CPU than committing a report. Intake's two hot routes (``POST /api/v1/hazards`` and
``…/batch``) are declared with this route class: the route, its path, request model,
response model, dependencies and OpenAPI entry are FastAPI's, built from the endpoint's
signature as for every other route; only the per-request work is lean:

1. the body is read and decoded by FastAPI's own rules (JSON for ``application/json`` or
   ``…+json`` content types, with orjson, falling back to ``json`` for what orjson refuses, so
   malformed JSON is the same 400, a body that cannot be decoded the same other 400, and a
   lone surrogate still reaches the text check);
2. the endpoint's dependencies (each an ``async def dep(request)``: the shared auth of
   :mod:`shared.auth`, the rate limit, the service) are awaited in the signature's order, as
   FastAPI does before it validates a body;
3. the body parameter is validated with the endpoint's own annotation (one ``TypeAdapter``),
   a failure raised as the :class:`RequestValidationError` FastAPI would raise;
4. the endpoint is called and must return a :class:`Response` (its answer is encoded by the
   endpoint with orjson, see :func:`json_answer`).

The same endpoint mounted as a plain :class:`APIRoute` gives the same answers
(``tests/integration/intake/test_intake_hot_routes.py`` checks it).
"""

from __future__ import annotations

import email.message
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

_JSON = "application/json"
_MISSING: Any = object()


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded with orjson (the same bytes Starlette's ``JSONResponse`` sends for these bodies)."""
    return Response(orjson.dumps(body), status, headers=headers, media_type=_JSON)


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule (strict content type): JSON only when declared ``application/json`` or ``…+json``."""
    if not content_type:
        return False
    if content_type == _JSON or content_type.startswith(_JSON + ";"):
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _decode(raw: bytes, content_type: str | None) -> Any:
    """The body as FastAPI hands it to validation: parsed JSON, the raw bytes, or missing."""
    if not raw:
        return _MISSING
    if not _is_json(content_type):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass  # NaN, huge integers, lone surrogates, UTF-16…: Python's json decides, as in FastAPI
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from exc


Dependency = Callable[[Request], Awaitable[Any]]


def _parts(endpoint: Callable[..., Any]) -> tuple[list[tuple[str, Dependency]], str, TypeAdapter[Any]]:
    """The endpoint's dependencies (in order), and its one body parameter's name and validator."""
    hints = typing.get_type_hints(endpoint, include_extras=True)
    dependencies: list[tuple[str, Dependency]] = []
    body: tuple[str, TypeAdapter[Any]] | None = None
    for name in inspect.signature(endpoint).parameters:
        hint = hints[name]
        if typing.get_origin(hint) is typing.Annotated:
            marker = next((m for m in typing.get_args(hint)[1:] if isinstance(m, Depends)), None)
            if marker is not None and marker.dependency is not None:
                if not inspect.iscoroutinefunction(marker.dependency):
                    raise TypeError(f"{endpoint.__name__}: dependency {name} must be an async def (request)")
                dependencies.append((name, marker.dependency))
                continue
        if body is not None:
            raise TypeError(f"{endpoint.__name__}: a lean route takes one body parameter")
        body = (name, TypeAdapter(hint))
    if body is None:
        raise TypeError(f"{endpoint.__name__}: a lean route takes one body parameter")
    return dependencies, body[0], body[1]


class LeanRoute(APIRoute):
    """An :class:`APIRoute` whose requests skip FastAPI's generic handling; see the module's docstring."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        dependencies, body_name, adapter = _parts(endpoint)

        async def handle(request: Request) -> Response:
            try:
                body = _decode(await request.body(), request.headers.get("content-type"))
            except (HTTPException, RequestValidationError):
                raise  # the body limit's 413; malformed JSON
            except Exception as exc:  # invalid UTF-8, a client gone: as FastAPI answers them
                raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
            arguments = {name: await dependency(request) for name, dependency in dependencies}
            if body is _MISSING:
                raise RequestValidationError(
                    [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
                )
            try:
                arguments[body_name] = adapter.validate_python(body, from_attributes=True)
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)],
                    body=body,
                ) from exc
            answer = await endpoint(**arguments)
            if not isinstance(answer, Response):
                raise TypeError(f"{endpoint.__name__} must return a Response on a lean route")
            return answer

        return handle
