"""``GET /api/v1/hazards``: the case lists of the people's pages, scoped as the case itself is (#17).

A grid member sees its grid's cases (``mine``: only those it reported), e.g. what awaits its
verification (``state=rectified``); a department sees the cases it holds now (``open``: not closed);
operators and supervisors see all. Another grid's or department's case never appears.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    auth,
    ordered_case,
    publish,
    wait_for_state,
)

pytestmark = pytest.mark.integration


def _ids(answer: Any) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {item["hazard_id"] for item in answer.json()["items"]}


async def test_case_lists_are_scoped_by_grid_department_and_reporter(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        rectified = await ordered_case(client, kafka, topics)
        done = await client.post(
            f"/api/v1/hazards/{rectified.hazard_id}/rectification",
            headers=auth("tok-fire"),
            json={"note": "chain removed", "photos": []},
        )
        assert done.status_code == 200, done.text
        waiting = await ordered_case(client, kafka, topics)
        elsewhere = Hazard(grid_id="liuyue-02", category="public_security_hazard", lon=114.17437)
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            elsewhere.reported(reporter_id="gm-liuyue-02"),
            elsewhere.dispatched("police"),
        )
        await wait_for_state(client, elsewhere.hazard_id, "dispatched")
        mine, theirs = str(rectified.hazard_id), str(elsewhere.hazard_id)

        to_verify = await client.get("/api/v1/hazards?state=rectified", headers=auth("tok-gm-01"))
        assert _ids(to_verify) == {mine}
        item = to_verify.json()["items"][0]
        assert item["state"] == "rectified"
        assert item["department_id"] == "fire"
        assert item["grid_id"] == "liuyue-01"
        assert _ids(await client.get("/api/v1/hazards?mine=true", headers=auth("tok-gm-01"))) == {
            mine,
            str(waiting.hazard_id),
        }
        assert _ids(await client.get("/api/v1/hazards?mine=true", headers=auth("tok-gm-02"))) == {theirs}
        assert _ids(await client.get("/api/v1/hazards?state=rectified", headers=auth("tok-gm-02"))) == set()

        fire_open = await client.get("/api/v1/hazards?open=true", headers=auth("tok-fire"))
        assert _ids(fire_open) == {mine, str(waiting.hazard_id)}
        assert _ids(await client.get("/api/v1/hazards", headers=auth("tok-police"))) == {theirs}
        assert _ids(
            await client.get("/api/v1/hazards?state=rectification_ordered", headers=auth("tok-fire"))
        ) == {str(waiting.hazard_id)}
        assert _ids(await client.get("/api/v1/hazards", headers=auth("tok-supervisor"))) == {
            mine,
            theirs,
            str(waiting.hazard_id),
        }

        # Closed cases leave the open list.
        passed = await client.post(
            f"/api/v1/hazards/{rectified.hazard_id}/verification",
            headers=auth("tok-gm-01"),
            json={"passed": True},
        )
        assert passed.status_code == 200, passed.text
        await wait_for_state(client, rectified.hazard_id, "closed")
        assert _ids(await client.get("/api/v1/hazards?open=true", headers=auth("tok-fire"))) == {
            str(waiting.hazard_id)
        }

        # Bad input: the error shape, nothing listed.
        for query in ("state=sideways", "limit=0", "limit=201", "offset=-1"):
            refused = await client.get(f"/api/v1/hazards?{query}", headers=auth("tok-fire"))
            assert refused.status_code == 422, query
            assert refused.json()["error"]["code"]
        anonymous = await client.get("/api/v1/hazards")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthenticated"
