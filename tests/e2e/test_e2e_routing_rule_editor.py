"""The routing-rule editor on the admin page, in a real headless Chromium against the real stack (#18).

One stack (PostgreSQL, Tansu, every service as a process). An operator signs in on /admin (reporting)
and adds a rule from the editor: road hazards in Liuyue go to urban management. A wrong department
is refused first, in words next to the form; nothing changes. A grid member reports a road hazard in
Liuyue through intake; dispatch (another process, not restarted) sends it to urban management under
the new rule. The operator changes the rule to fire: the next report goes to fire, the first keeps its
rule. The operator removes the rule: the next report goes to roads by the files' generic rule again.
The page is Chinese first, English on the toggle, with no console errors; a screenshot goes to
bench/results/.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.system import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
WAIT_MS = 90_000
RULE = "r-liuyue-road"


@pytest.fixture(scope="module")
def stack() -> Iterator[System]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: run scripts/ensure-chromium.sh")
    with System(
        proxy=False, pg_fast=True, services=("intake", "dispatch", "tracking", "reporting")
    ) as system:
        yield system


async def _report(client: httpx.AsyncClient, stack: System, grid: str) -> str:
    """A grid member's road hazard in ``grid`` (Liuyue), through intake; its hazard id."""
    center = stack.reference.grid(grid).center
    answer = await client.post(
        stack.url("intake") + "/api/v1/hazards",
        headers=stack.headers("reporter", grid_id=grid),
        json={
            "report_id": str(uuid.uuid4()),
            "category": "road_hazard",
            "description": "路面塌陷，约一米见方",
            "location": {"lat": center.lat, "lon": center.lon, "address": "六约路8号"},
            "grid_id": grid,
            "observed_at": datetime.now(UTC).isoformat(),
        },
    )
    assert answer.status_code in (200, 201, 202), answer.text
    hazard_id: str = answer.json()["hazard_id"]
    return hazard_id


async def _dispatched(client: httpx.AsyncClient, stack: System, hazard_id: str) -> tuple[str, str]:
    """The department and rule dispatch sent the hazard to (as the operator's inbox view shows it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = await client.get(
            stack.url("dispatch") + "/api/v1/dispatches",
            params={"limit": "200"},
            headers=stack.headers("operator"),
        )
        found = [d for d in answer.json()["items"] if d["hazard_id"] == hazard_id]
        if found:
            return found[0]["department_id"], found[0]["rule_id"]
        await asyncio.sleep(0.3)
    raise AssertionError(f"hazard {hazard_id} was not dispatched within 120 s")


async def _dispatch_rule(client: httpx.AsyncClient, stack: System) -> dict[str, Any] | None:
    answer = await client.get(
        stack.url("dispatch") + "/api/v1/routing-rules", headers=stack.headers("operator")
    )
    return next((r for r in answer.json()["rules"] if r["id"] == RULE), None)


async def _dispatch_follows(client: httpx.AsyncClient, stack: System, department: str | None) -> None:
    """Dispatch (its own process) holds the rule as the page left it, within 5 s."""
    started = time.monotonic()
    while True:
        rule = await _dispatch_rule(client, stack)
        if (rule is None and department is None) or (
            rule is not None and rule["department_id"] == department
        ):
            return
        assert time.monotonic() - started < 5, f"dispatch still routes by {rule}"
        await asyncio.sleep(0.1)


def _unexpected(message: Any) -> bool:
    """A console error other than Chromium's note of the refusals this test provokes (422 and 409)."""
    refused = "Failed to load resource" in message.text and (
        "status of 422" in message.text or "status of 409" in message.text
    )
    return bool(message.type == "error" and not refused)


async def test_routing_rule_editor_routes_live_reports(stack: System) -> None:
    from playwright.async_api import async_playwright, expect

    base = stack.url("reporting")
    operator = stack.principal("operator")
    problems: list[str] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(timeout=30) as client, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
            page = await context.new_page()
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if _unexpected(m) else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            async def until_loaded(action: Any) -> None:
                await page.evaluate("document.body.dataset.state = 'stale'")
                await action()
                await page.wait_for_selector("body[data-state=loaded]", state="attached", timeout=WAIT_MS)

            # Sign in as the operator.
            await page.goto(base + "/admin")
            assert await page.text_content("#routing h2") == "分派规则"
            await page.fill("#token-input", operator.token)
            await until_loaded(lambda: page.click("#token-form button[type=submit]"))
            rows = page.locator("#rules tbody tr")
            files = await rows.count()
            assert files == len(stack.reference.routing_rules)

            # A department that does not exist: refused in words, nothing changes.
            await page.fill("#r-id", RULE)
            await page.fill("#r-category", "road_hazard")
            await page.fill("#r-community", "liuyue")
            await page.fill("#r-department", "nasa")
            await page.click("#r-save")
            errors = page.locator("#rule-errors")
            await expect(errors).to_be_visible(timeout=WAIT_MS)
            assert await page.text_content("#rule-error-title") == "规则无效，未作任何修改："
            assert await errors.locator("li").all_text_contents() == ["接收部门：不存在“nasa”"]
            assert await rows.count() == files
            assert await page.text_content("#routing-version") == "0（配置文件）"

            # Fixed: urban management. The rule is in force here and in dispatch without a restart.
            await page.fill("#r-department", "urban_management")
            await until_loaded(lambda: page.click("#r-save"))
            await expect(errors).to_be_hidden()
            added = page.locator(f"tr[data-rule='{RULE}']")
            assert await rows.count() == files + 1
            assert await page.text_content("#routing-version") == "1"
            # Placed before the generic road rule, so it wins in Liuyue.
            assert int(await added.locator(".position").text_content() or 0) == (
                int(await page.locator("tr[data-rule='r-road-hazard'] .position").text_content() or 0) - 1
            )
            assert "(urban_management)" in (await added.locator(".department").text_content() or "")
            await _dispatch_follows(client, stack, "urban_management")
            first = await _report(client, stack, "liuyue-01")
            assert await _dispatched(client, stack, first) == ("urban_management", RULE)
            await page.locator("#routing").screenshot(path=str(RESULTS / "admin-routing-editor.png"))

            # A duplicate of the generic rule is a conflict, said in words.
            await page.fill("#r-id", "r-road-again")
            await page.fill("#r-category", "road_hazard")
            await page.fill("#r-department", "roads")
            await page.click("#r-save")
            await expect(page.locator("#rule-error-title")).to_have_text(
                "与其他规则冲突，未作任何修改：", timeout=WAIT_MS
            )
            assert "永远用不到" in " ".join(await errors.locator("li").all_text_contents())
            assert await rows.count() == files + 1

            # Changed to fire from the row's button: the next report goes to fire; the first keeps its rule.
            await added.locator("button.edit").click()
            await expect(errors).to_be_hidden()
            assert await page.input_value("#r-id") == RULE
            assert await page.input_value("#r-department") == "urban_management"
            await page.fill("#r-department", "fire")
            await until_loaded(lambda: page.click("#r-save"))
            assert "(fire)" in (await added.locator(".department").text_content() or "")
            assert await page.text_content("#routing-version") == "2"
            await _dispatch_follows(client, stack, "fire")
            second = await _report(client, stack, "liuyue-02")
            assert await _dispatched(client, stack, second) == ("fire", RULE)
            assert await _dispatched(client, stack, first) == ("urban_management", RULE)

            # Removed: Liuyue's road hazards go to roads by the generic rule again.
            await until_loaded(lambda: added.locator("button.remove").click())
            assert await added.count() == 0
            assert await rows.count() == files
            await _dispatch_follows(client, stack, None)
            third = await _report(client, stack, "liuyue-03")
            assert await _dispatched(client, stack, third) == ("roads", "r-road-hazard")

            # English on the toggle; the audit lists the three changes.
            await until_loaded(lambda: page.click("#lang-toggle"))
            assert await page.text_content("#routing h2") == "Routing rules"
            actions = await page.locator("#audit tbody tr td:nth-child(3)").all_text_contents()
            assert actions[:3] == ["remove_rule", "change_rule", "add_rule"]
            await context.close()
        finally:
            await browser.close()
    assert problems == []
