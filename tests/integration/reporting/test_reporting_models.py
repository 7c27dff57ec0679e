"""Every JSON answer of reporting is exactly what its declared response model describes.

The seed-shaped history (tests/support/seed_history.py) goes through the real broker into the
reporting app; then each JSON route is called and its real answer validated against the model
the route declares (``services/reporting/models.py``, ``extra="forbid"``: a field answered but
not described, a field described but missing, or a null where the model says never, fails).
The OpenAPI document names the same models.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from services.reporting import models
from shared.events import dump_event
from shared.reference import load_reference_data
from shared.roles import role_url
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support import seed_history
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

H1 = {"from": "2026-01-01", "to": "2026-06-30"}

ROUTES: list[tuple[str, dict[str, str], type[BaseModel]]] = [
    ("/api/v1/reports/summary", {**H1}, models.Summary),
    ("/api/v1/reports/summary", {**H1, "group_by": "community"}, models.Summary),
    ("/api/v1/reports/summary", {**H1, "group_by": "grid"}, models.Summary),
    ("/api/v1/reports/summary", {**H1, "group_by": "campaign,category"}, models.Summary),
    ("/api/v1/reports/summary", {**H1, "group_by": "street,group"}, models.Summary),
    ("/api/v1/reports/summary", {"from": "2020-01-01", "to": "2020-01-31"}, models.Summary),
    ("/api/v1/reports/overdue", {}, models.OverdueList),
    ("/api/v1/reports/relapse-hotspots", {**H1, "min_relapses": "1"}, models.Hotspots),
    ("/api/v1/reports/campaigns", {}, models.Campaigns),
    ("/api/v1/reports/timeseries", {**H1, "bucket": "month"}, models.Timeseries),
    ("/api/v1/reports/timeseries", {**H1, "metric": "rectification_rate"}, models.Timeseries),
    ("/api/v1/reports/reference", {}, models.ReportingReference),
    ("/api/v1/reports/period", {**H1}, models.PeriodReport),
    ("/api/v1/whoami", {}, models.WhoAmI),
    ("/app/config.json", {}, models.AppConfig),
    ("/app/reference.json", {}, models.AppReference),
]


def _rows(body: Any) -> int:
    """How many list items the answer holds, all lists together (an answer of empty lists proves little)."""
    if isinstance(body, dict):
        return sum(_rows(v) for v in body.values())
    if isinstance(body, list):
        return len(body) + sum(_rows(v) for v in body)
    return 0


async def test_every_json_answer_is_its_declared_model(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    reference = load_reference_data()
    events = seed_history.events_of(seed_history.generate(reference))
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )
    settings = settings_for(role_url(db_url, "reporting"), kafka.bootstrap_servers, topics)
    async with running_app(settings) as (app, client):
        await wait_applied(db_url, len(events))
        for path, params, model in ROUTES:
            response = await client.get(path, params=params, headers=auth())
            assert response.status_code == 200, (path, params, response.text)
            body = response.json()
            assert model.model_validate(body).model_dump(by_alias=True, mode="json") == body, (path, params)
            if path not in ("/api/v1/whoami", "/app/config.json") and not params.get("from", "").startswith(
                "2020"
            ):
                assert _rows(body) > 0, (path, params)

        # The OpenAPI document describes each documented route's answer with its model.
        document = app.openapi()
        for path, _, model in ROUTES:
            if path not in document["paths"]:
                continue  # the people pages' JSON is not part of the API document
            content = document["paths"][path]["get"]["responses"]["200"]["content"]
            assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model.__name__}"}
