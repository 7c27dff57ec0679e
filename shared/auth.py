"""Bearer-token authentication: tokens map to principals with one role; only SHA-256 hashes are configured."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from shared.errors import ApiError
from shared.settings import AuthSettings, TokenEntry

Role = Literal["reporter", "department", "operator", "supervisor"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a person or system with one role, bound to a grid or a department when the role says so."""

    id: str
    role: Role
    grid_id: str | None = None
    department_id: str | None = None
    reporter_type: str | None = None  # a reporter's kind (events.ReporterType); None: a grid member
    # A building manager's buildings (free-text ids the admin bound them to).
    building_ids: tuple[str, ...] = ()


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token is configured."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRegistry:
    """Looks principals up by the hash of the presented token.

    The file's (or settings') entries are the bootstrap; :meth:`refresh` adds the principals kept in
    the database and removes denied hashes, in place, so every holder of the registry sees the change.
    """

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._base: dict[str, Principal] = {}
        for entry in entries:
            if entry.role == "reporter" and not entry.grid_id:
                raise ValueError(f"token for {entry.principal!r}: a reporter must be bound to a grid_id")
            if entry.role == "department" and not entry.department_id:
                raise ValueError(f"token for {entry.principal!r}: a department token needs a department_id")
            self._base[entry.token_sha256] = Principal(
                entry.principal, entry.role, entry.grid_id, entry.department_id, entry.reporter_type
            )
        self._by_hash: dict[str, Principal] = dict(self._base)

    def refresh(self, added: dict[str, Principal], denied: frozenset[str] | set[str]) -> None:
        """The bootstrap entries plus ``added`` (hash -> principal), less the ``denied`` hashes."""
        merged = {**self._base, **added}
        self._by_hash = {h: p for h, p in merged.items() if h not in denied}

    def base_hashes(self, principal: str) -> list[str]:
        """The bootstrap (file) hashes held by a principal."""
        return [h for h, p in self._base.items() if p.id == principal]

    def base_principals(self) -> list[tuple[str, Principal]]:
        """The bootstrap entries, as (hash, principal)."""
        return list(self._base.items())

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenRegistry:
        """Tokens from the settings' file (YAML list of entries) and inline entries."""
        entries = list(settings.tokens)
        if settings.tokens_file is not None:
            entries.extend(load_token_file(settings.tokens_file))
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal holding this token, or None."""
        return self._by_hash.get(hash_token(token))

    def __len__(self) -> int:
        return len(self._by_hash)


def load_token_file(path: Path) -> list[TokenEntry]:
    """Read a YAML list of token entries, with an error that names the file and entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read token file: {exc}") from exc
    try:
        return TypeAdapter(list[TokenEntry]).validate_python(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid token entry: {exc}") from exc


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Request) -> Principal:
    """The caller, or 401 when the token is missing or unknown."""
    token = _bearer(request)
    registry: TokenRegistry = request.app.state.tokens
    principal = registry.authenticate(token) if token else None
    if principal is None:
        raise ApiError(
            401,
            "unauthenticated",
            "A valid bearer token is required: send 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def require(*roles: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A route dependency admitting only the given roles (403 for a known caller in another role)."""
    allowed = frozenset(roles)

    async def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if principal.role not in allowed:
            raise ApiError(
                403,
                "forbidden",
                f"This action needs the role {' or '.join(sorted(allowed))}; you are a {principal.role}.",
            )
        return principal

    return dependency
