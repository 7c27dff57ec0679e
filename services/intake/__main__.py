"""``python -m services.intake``: run the intake service with settings from the environment."""

from __future__ import annotations

from services.intake.app import NAME, create_app
from services.intake.settings import IntakeSettings
from shared.runner import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(NAME, IntakeSettings, create_app))
