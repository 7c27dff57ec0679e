"""The one entry for people (/app/ on reporting): the page, where each API is, the names, who a token is (#17)."""

from __future__ import annotations

from typing import Any

import pytest

from services.reporting.settings import PeopleAppSettings
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for

pytestmark = pytest.mark.integration


async def test_the_entry_page_its_config_names_and_whoami(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    settings = settings_for(db_url, kafka.bootstrap_servers, topics)
    settings.app = PeopleAppSettings(
        intake_url="https://intake.hazard.example.org",
        dispatch_url="https://dispatch.hazard.example.org/",
        tracking_url="https://tracking.hazard.example.org",
        poll_s=7,
    )
    async with running_app(settings) as (_app, client):
        page = await client.get("/app/")
        assert page.status_code == 200
        assert 'src="/static/app/app.js"' in page.text
        csp = page.headers["content-security-policy"]
        # The page may call the three APIs and nothing else.
        assert (
            "connect-src 'self' https://dispatch.hazard.example.org https://intake.hazard.example.org "
            "https://tracking.hazard.example.org;" in csp
        )
        assert "script-src 'self';" in csp
        assert (await client.get("/static/app/app.js")).status_code == 200

        config = (await client.get("/app/config.json")).json()
        assert config == {
            "intake": "https://intake.hazard.example.org",
            "dispatch": "https://dispatch.hazard.example.org",
            "tracking": "https://tracking.hazard.example.org",
            "reporting": "",
            "dashboard": "/",
            "poll_ms": 7000,
        }
        reference = (await client.get("/app/reference.json")).json()
        assert reference["groups"] == ["fire", "public_security", "other"]
        by_id = {c["id"]: c for c in reference["categories"]}
        assert by_id["locked_rooftop_door"] == {
            "id": "locked_rooftop_door",
            "zh": "天台逃生门锁闭",
            "en": "Locked rooftop escape door",
            "group": "fire",
            "urgency": ["urgent"],
        }
        assert {c["group"] for c in reference["categories"]} <= {"fire", "public_security", "other"}
        assert any(g["id"] == "liuyue-01" and g["center"]["lat"] for g in reference["grids"])

        me = await client.get("/api/v1/whoami", headers=auth())
        assert me.json() == {
            "principal": "sup-1",
            "role": "supervisor",
            "grid_id": None,
            "department_id": None,
        }
        stranger = await client.get("/api/v1/whoami", headers={"Authorization": "Bearer nope"})
        assert stranger.status_code == 401
        assert stranger.json()["error"]["code"] == "unauthenticated"

        # The dashboard links to the entry.
        assert 'href="/app/"' in (await client.get("/")).text
