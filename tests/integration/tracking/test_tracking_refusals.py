"""Refusals of tracking's actions: hidden cases are 404 and name nobody; text PostgreSQL cannot hold is 422.

API.md: an object the caller may not see is 404 for reads and actions alike, and the answer
never names who holds it; 403 only for a visible object the caller may not act on, or a wrong role.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.tracking import tracking_helpers as helpers
from tests.integration.tracking.tracking_helpers import AppFactory, auth, ordered_case

pytestmark = pytest.mark.integration

EVIDENCE = {"note": "Padlock removed", "photos": []}


@pytest.fixture
def tracking_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Tracking in-process on this test's database and topics."""
    return helpers.app_factory(db_url, kafka, topics)


def names_nobody(response: Any) -> None:
    text = response.text
    for name in ("fire", "liuyue-01", "officer-fire", "gm-liuyue-01"):
        assert name not in text, (name, text)


async def test_acting_on_a_case_the_caller_cannot_see_is_404_like_an_unknown_case(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        hazard = await ordered_case(client, kafka, topics)
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        unknown = f"/api/v1/hazards/{uuid.uuid4()}"

        read = await client.get(url, headers=auth("tok-police"))
        rectify = await client.post(f"{url}/rectification", json=EVIDENCE, headers=auth("tok-police"))
        rectify_unknown = await client.post(
            f"{unknown}/rectification", json=EVIDENCE, headers=auth("tok-police")
        )
        assert (read.status_code, rectify.status_code, rectify_unknown.status_code) == (404, 404, 404)
        assert rectify.json()["error"]["code"] == rectify_unknown.json()["error"]["code"] == "not_found"
        names_nobody(rectify)

        verify = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-02"))
        assert verify.status_code == 404, verify.text
        assert verify.json()["error"]["code"] == "not_found"
        names_nobody(verify)

        # Nothing moved: the holder still rectifies.
        done = await client.post(f"{url}/rectification", json=EVIDENCE, headers=auth("tok-fire"))
        assert done.status_code == 200, done.text
        hidden = await client.post(f"{url}/verification", json={"passed": False}, headers=auth("tok-gm-02"))
        assert hidden.status_code == 404
        names_nobody(hidden)


async def test_a_visible_case_the_caller_may_not_act_on_is_403_without_naming_the_holder(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        hazard = await ordered_case(client, kafka, topics)
        # Reassigned from fire to police: fire was involved, so it still sees the case.
        hazard.dispatch_id = uuid.uuid4()
        hazard.at = datetime.now(UTC)  # after the rectification order tracking stamped just now
        await helpers.publish(kafka.bootstrap_servers, topics["lifecycle"], hazard.dispatched("police"))
        await helpers.wait_for_state(client, hazard.hazard_id, "dispatched")
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        assert (await client.get(url, headers=auth("tok-fire"))).status_code == 200

        refused = await client.post(f"{url}/rectification", json=EVIDENCE, headers=auth("tok-fire"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "forbidden"
        assert "police" not in refused.text

        # A reporter of the grid sees the case but is the wrong role for rectification.
        wrong_role = await client.post(f"{url}/rectification", json=EVIDENCE, headers=auth("tok-gm-01"))
        assert wrong_role.status_code == 403


@pytest.mark.parametrize(
    ("action", "body"),
    [
        ("rectification", {"note": "Padlock\x00removed", "photos": []}),
        ("rectification", {"note": "Padlock removed", "photos": ["https://img.example.org/\x00.jpg"]}),
        ("rectification", {"note": "Padlock \ud800 removed", "photos": []}),
        ("verification", {"passed": False, "note": "Still\x00locked", "photos": []}),
        ("verification", {"passed": True, "note": "ok", "photos": ["https://img.example.org/\x00.jpg"]}),
    ],
)
async def test_nul_or_surrogates_in_a_note_or_photo_are_422(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str], action: str, body: dict[str, Any]
) -> None:
    content = json.dumps(body).encode()  # JSON escapes: \u0000, \ud800
    async with tracking_app() as (_app, client):
        hazard = await ordered_case(client, kafka, topics)
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        if action == "verification":
            done = await client.post(f"{url}/rectification", json=EVIDENCE, headers=auth("tok-fire"))
            assert done.status_code == 200, done.text
        token = "tok-fire" if action == "rectification" else "tok-gm-01"
        response = await client.post(
            f"{url}/{action}", content=content, headers={**auth(token), "content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert {d["field"] for d in error["details"]} <= {"note", "photos.0"}
        # The case is untouched and still takes a clean body.
        clean = {**body, "note": "clean", "photos": []}
        again = await client.post(f"{url}/{action}", json=clean, headers=auth(token))
        assert again.status_code == 200, again.text
