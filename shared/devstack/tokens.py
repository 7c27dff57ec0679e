"""Demo bearer tokens for the local stack: plain tokens for the human, only hashes for the services."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.reference import load_reference_data

TOKENS_FILE = "tokens.yaml"
PLAIN_TOKENS_FILE = "demo-tokens.txt"


@dataclass(frozen=True)
class DemoPrincipal:
    """Who a demo token speaks for."""

    principal: str
    role: str
    grid_id: str | None = None
    department_id: str | None = None

    @property
    def scope(self) -> str:
        """A short label for the grid or department the principal is bound to."""
        if self.grid_id:
            return f"grid={self.grid_id}"
        if self.department_id:
            return f"department={self.department_id}"
        return "-"


@dataclass(frozen=True)
class DemoToken:
    """A demo principal with its plain bearer token."""

    who: DemoPrincipal
    token: str

    @property
    def sha256(self) -> str:
        """The token's hash as stored in tokens.yaml."""
        return hash_token(self.token)


def demo_principals() -> tuple[DemoPrincipal, ...]:
    """Two grid members, every department of the reference data, one operator, one supervisor.

    Every department has a token, so the demo acknowledges every department's dispatches
    (not only those of the first three).
    """
    departments = load_reference_data().departments
    return (
        DemoPrincipal("gm-liuyue-01", "reporter", grid_id="liuyue-01"),
        DemoPrincipal("gm-silian-03", "reporter", grid_id="silian-03"),
        *(DemoPrincipal(f"dept-{d.id}", "department", department_id=d.id) for d in departments),
        DemoPrincipal("operator-01", "operator"),
        DemoPrincipal("supervisor-01", "supervisor"),
    )


def hash_token(token: str) -> str:
    """Return the lowercase sha256 hex digest services compare bearer tokens against."""
    return hashlib.sha256(token.encode()).hexdigest()


def _read_plain(path: Path) -> dict[str, str]:
    """Read principal -> token from an existing demo-tokens.txt."""
    tokens: dict[str, str] = {}
    if not path.is_file():
        return tokens
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) >= 4:
            tokens[fields[0]] = fields[-1].strip()
    return tokens


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def ensure_demo_tokens(
    state_dir: Path, principals: tuple[DemoPrincipal, ...] | None = None
) -> list[DemoToken]:
    """Reuse or generate one token per demo principal; write tokens.yaml (hashes) and demo-tokens.txt."""
    if principals is None:
        principals = demo_principals()
    plain_path = state_dir / PLAIN_TOKENS_FILE
    known = _read_plain(plain_path)
    tokens = [DemoToken(who, known.get(who.principal) or secrets.token_urlsafe(24)) for who in principals]

    lines = [
        "# hazard-dispatch demo tokens: keep private. Use as `Authorization: Bearer <token>`.",
        "# principal\trole\tscope\ttoken",
        *(f"{t.who.principal}\t{t.who.role}\t{t.who.scope}\t{t.token}" for t in tokens),
    ]
    _write_private(plain_path, "\n".join(lines) + "\n")

    entries: list[dict[str, Any]] = []
    for t in tokens:
        entry: dict[str, Any] = {"token_sha256": t.sha256, "principal": t.who.principal, "role": t.who.role}
        if t.who.grid_id:
            entry["grid_id"] = t.who.grid_id
        if t.who.department_id:
            entry["department_id"] = t.who.department_id
        entries.append(entry)
    header = "# Demo principals for the local stack (sha256 of each bearer token; no plain tokens here).\n"
    (state_dir / TOKENS_FILE).write_text(header + yaml.safe_dump(entries, sort_keys=False))
    return tokens
