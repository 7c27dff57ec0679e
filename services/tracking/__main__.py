"""``python -m services.tracking``: run the tracking service with settings from the environment."""

from __future__ import annotations

from services.tracking.app import NAME, create_app
from services.tracking.settings import TrackingSettings
from shared.runner import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(NAME, TrackingSettings, create_app))
