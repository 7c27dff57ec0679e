"""A process whose wall clock is off: what the services read as "now" is skewed, the database's is not."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, tzinfo

import pytest

_REAL = datetime


def skew_process_clock(monkeypatch: pytest.MonkeyPatch, skew: timedelta) -> None:
    """Make ``datetime.now()`` in every loaded module of ``services`` and ``shared`` run `skew` off.

    This is what a replica whose host clock drifted sees; the database server's clock is untouched.
    """

    class Skewed(_REAL):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return _REAL.now(tz) + skew

    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in ("services", "shared") and getattr(module, "datetime", None) is _REAL:
            monkeypatch.setattr(module, "datetime", Skewed)
