"""Topic names and partition counts: the one place they are defined."""

from __future__ import annotations

LIFECYCLE = "hazard.lifecycle"
"""Every hazard event, keyed by hazard_id so each hazard's events stay in order."""

DEAD_LETTER = "hazard.lifecycle.dlt"
"""Messages a consumer could not apply, with the error and origin in headers."""

LIFECYCLE_PARTITIONS = 6
"""The topic's first partition count. The consumers' inbox locks are taken per partition modulo it
(``shared.db.INBOX_LOCK_SLOTS``), so a topic grows only to multiples of it, and it stays as it is."""
DEAD_LETTER_PARTITIONS = 1


def topic_partitions(
    *, lifecycle: str = LIFECYCLE, dead_letter: str = DEAD_LETTER, lifecycle_partitions: int | None = None
) -> dict[str, int]:
    """Topics to provision, with their partition counts."""
    return {
        lifecycle: lifecycle_partitions or LIFECYCLE_PARTITIONS,
        dead_letter: DEAD_LETTER_PARTITIONS,
    }
