"""Topic names and partition counts: the one place they are defined."""

from __future__ import annotations

LIFECYCLE = "hazard.lifecycle"
"""Every hazard event, keyed by hazard_id so each hazard's events stay in order."""

DEAD_LETTER = "hazard.lifecycle.dlt"
"""Messages a consumer could not apply, with the error and origin in headers."""

LIFECYCLE_PARTITIONS = 6
"""Grow it only to multiples of 6 (``shared.db.INBOX_LOCK_SLOTS``: the consumers' inbox locks)."""
DEAD_LETTER_PARTITIONS = 1


def topic_partitions(
    *, lifecycle: str = LIFECYCLE, dead_letter: str = DEAD_LETTER, lifecycle_partitions: int | None = None
) -> dict[str, int]:
    """Topics to provision, with their partition counts."""
    return {
        lifecycle: lifecycle_partitions or LIFECYCLE_PARTITIONS,
        dead_letter: DEAD_LETTER_PARTITIONS,
    }
