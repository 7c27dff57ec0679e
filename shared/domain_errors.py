"""What a use case says when it refuses: domain exceptions, with no HTTP in them.

Use cases (each service's ``service.py``) and domain cores raise these; the edge turns them
into the API's error shape in one place (:func:`shared.errors.install_error_handlers`), and a
consumer turns them into a refused event. A service defines its own refusals as subclasses,
so each carries a stable ``code`` a client can branch on and a sentence a person can read.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal a caller should read: a stable code, a sentence, and per-field details."""

    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = list(details or [])


class NotFoundError(DomainError):
    """Unknown, or not visible to the caller: the two read alike, so the answer never says who holds it."""

    code = "not_found"


class ForbiddenError(DomainError):
    """The caller is known and may see the thing, but may not do this to it."""

    code = "forbidden"


class ConflictError(DomainError):
    """The thing's current state refuses the action (already acknowledged, already closed, ...)."""

    code = "conflict"


class InvalidError(DomainError):
    """The request is well formed but names something the domain does not accept."""

    code = "invalid"

    @classmethod
    def field(
        cls, field: str, message: str, *, code: str | None = None, problem: str | None = None
    ) -> InvalidError:
        """A refusal of one field's value."""
        return cls(message, code=code, details=[{"field": field, "problem": problem or message}])


class TooManyError(DomainError):
    """The caller sent more than a limit allows (a quota, not a malformed request)."""

    code = "rate_limited"
