"""``python -m services.dispatch``: run the dispatch service with settings from the environment."""

from __future__ import annotations

from services.dispatch.app import NAME, create_app
from services.dispatch.settings import DispatchSettings
from shared.runner import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(NAME, DispatchSettings, create_app))
