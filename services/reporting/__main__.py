"""``python -m services.reporting``: run the reporting service with settings from the environment."""

from __future__ import annotations

from services.reporting.app import NAME, create_app
from services.reporting.settings import ReportingSettings
from shared.runner import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(NAME, ReportingSettings, create_app))
