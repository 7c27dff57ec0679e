"""Errors raised by the reference-data loader and lookups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_MAX_LISTED = 20


def plural(noun: str) -> str:
    """The English plural of a simple noun: category -> categories, grid -> grids."""
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


class ReferenceDataError(ValueError):
    """The reference data is invalid; `problems` holds one line per problem, each naming file and entry."""

    def __init__(self, problems: Sequence[str], directory: Path | None = None) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.directory = directory
        where = f" in {directory}" if directory is not None else ""
        count = len(self.problems)
        header = f"invalid reference data{where}: {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([header, *(f"- {problem}" for problem in self.problems)]))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with the original arguments."""
        return (type(self), (self.problems, self.directory))


class UnknownReference(KeyError):  # noqa: N818 - the name the services use
    """A lookup named an id the reference data does not define."""

    def __init__(self, kind: str, key: object, known: Iterable[str] = ()) -> None:
        self.kind = kind
        self.key = key
        known_list = sorted(known)
        listed = ", ".join(known_list[:_MAX_LISTED])
        if len(known_list) > _MAX_LISTED:
            listed += f", ... ({len(known_list)} in total)"
        self.message = f"unknown {kind} {key!r}" + (f". Known {plural(kind)}: {listed}" if known_list else "")
        super().__init__(self.message)

    def __str__(self) -> str:
        """The plain message, without KeyError's repr quoting."""
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle without the list of known ids."""
        return (type(self), (self.kind, self.key))
