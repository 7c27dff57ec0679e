"""``python -m services.notifications``: run the notifications service with settings from the environment."""

from __future__ import annotations

from services.notifications.app import NAME, create_app
from services.notifications.settings import NotificationsSettings
from shared.runner import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(NAME, NotificationsSettings, create_app))
