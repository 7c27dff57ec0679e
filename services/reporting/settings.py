"""Settings of the reporting service: environment variables prefixed ``REPORTING__``, nested with ``__``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ProjectionSettings(BaseModel):
    """How often the daily rollup and the Prometheus domain gauges are refreshed."""

    model_config = ConfigDict(extra="forbid")

    # While changes arrive, the background refresher folds them in this often (a refresh costs the
    # changes since the last one: #20); a commit of this process's consumer wakes an idle refresher.
    rollup_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 0.25
    # Idle (its last refresh found nothing), the refresher looks again this often for changes that
    # no commit of this process announced (another replica's; that replica's refresher was woken).
    rollup_idle_s: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # The background refresher's share of the time at most (a refresh costs the changes since the last
    # one, #20; 0.5: it waits as long as it took): after a refresh that took d seconds it
    # waits d * (1 - share) / share before the next (a refresh of many changes waits longer),
    # but never so long that a summary would have to refresh itself (see max_staleness_s). 1: every
    # rollup_refresh_s whatever a refresh costs.
    rollup_max_busy: Annotated[float, Field(gt=0, le=1)] = 0.5
    # A summary or time series includes every event applied more than this many seconds ago: when
    # the oldest change not yet in the rollup is older, the request refreshes first (0: always).
    # Above rollup_refresh_s plus a refresh's duration, no request waits for a refresh.
    max_staleness_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    metrics_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    metrics_window_days: Annotated[int, Field(ge=1, le=366)] = 30


class DashboardSettings(BaseModel):
    """What the dashboard links to."""

    model_config = ConfigDict(extra="forbid")

    # Where an overdue dispatch's hazard opens: its case and timeline (tracking's case API, which
    # asks for the same bearer token). ``{hazard_id}`` is replaced; the local stack's default.
    case_url: Annotated[str, Field(min_length=1, max_length=500, pattern=r"\{hazard_id\}")] = (
        "http://127.0.0.1:8103/api/v1/hazards/{hazard_id}"
    )


_BASE = r"^https?://[^/\s?#]+(/[^\s?#]*)?$"


class PeopleAppSettings(BaseModel):
    """Where the people's pages (/app/: department desk, grid member, operator) find each API.

    The pages are served by this service and call intake, dispatch and tracking from the browser
    with the signed-in token; each of those services must list this page's origin in its
    ``HTTP__CORS_ORIGINS``. Defaults: the local stack's ports.
    """

    model_config = ConfigDict(extra="forbid")

    intake_url: Annotated[str, Field(max_length=300, pattern=_BASE)] = "http://127.0.0.1:8101"
    dispatch_url: Annotated[str, Field(max_length=300, pattern=_BASE)] = "http://127.0.0.1:8102"
    tracking_url: Annotated[str, Field(max_length=300, pattern=_BASE)] = "http://127.0.0.1:8103"
    # How often the desk and the queue ask for new dispatches (the browser polls).
    poll_s: Annotated[float, Field(ge=1, le=600)] = 5.0


def refresh_pause_s(projection: ProjectionSettings, took_s: float) -> float:
    """Seconds the background refresher waits after a refresh that took ``took_s``."""
    paced = took_s * (1 - projection.rollup_max_busy) / projection.rollup_max_busy
    pause = max(projection.rollup_refresh_s, paced)
    if projection.max_staleness_s > 0:
        # The next refresh should still end before its oldest change outgrows the bound.
        pause = min(pause, max(projection.rollup_refresh_s, projection.max_staleness_s - 2 * took_s))
    return pause


class ReportingSettings(ServiceSettings):
    """Everything the reporting service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="REPORTING__", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    projection: ProjectionSettings = Field(default_factory=ProjectionSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    app: PeopleAppSettings = Field(default_factory=PeopleAppSettings)
