"""The local stack's demo with short deadlines: what the late departments receive, kept as examples.

The pieces of ``make run`` (PostgreSQL, Tansu, the five services, the SMTP server writing
``.eml`` files and the webhook receiver writing a JSON line per call), the demo subscriptions
(``shared.devstack.runner.demo_subscriptions``) and the demo data (``bench.loadgen --demo``), on a
copy of the reference data whose receipt deadlines are two wall-clock minutes (rectification
three; the street's escalation a minute after the receipt deadline, the district's two): the
departments that never acknowledge get reminders (催办), overdue notices and escalations within
minutes instead of hours.

``python -m bench.demo_notifications [--count 60] [--wait-s 300]`` writes under
``docs/notifications/``: one mail per trigger (``demo-<trigger>.eml``), each rendered by headless
Chromium (``demo-<trigger>.png``), the first lines of the webhook log and one line per trigger
(``demo-webhooks.jsonl``), and the count of notices by trigger and channel (``demo-summary.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.devstack.runner import demo_subscriptions
from shared.reference import PACKAGED_DATA_DIR
from tests.support.system import System

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "notifications"
CHROMIUM = Path("/usr/bin/chromium")
WANTED = ("dispatched", "receipt_due_soon", "receipt_overdue", "escalated", "rectification_ordered")


def fast_reference(directory: Path) -> Path:
    """The packaged reference data with deadlines of minutes (wall clock) for every category."""
    shutil.copytree(PACKAGED_DATA_DIR, directory)
    path = directory / "categories.yaml"
    data = yaml.safe_load(path.read_text())
    for category in data["categories"]:
        category["receipt_deadline"] = {"minutes": 2, "working_time": False}
        category["rectification_deadline"] = {"minutes": 3, "working_time": False}
        category.pop("urgency", None)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    path = directory / "escalation.yaml"
    data = yaml.safe_load(path.read_text())
    for step in data["overdue_receipt"]:
        if step["level"] >= 2:
            step["after"] = {"minutes": step["level"] - 1, "working_time": False}
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return directory


def _deliveries(system: System) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    before: int | None = None
    with httpx.Client(timeout=30) as client:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if before is not None:
                params["before"] = before
            response = client.get(
                system.url("notifications") + "/api/v1/deliveries",
                params=params,
                headers=system.headers("operator"),
            )
            response.raise_for_status()
            page = response.json()["deliveries"]
            found.extend(page)
            if len(page) < 500:
                return found
            before = page[-1]["delivery_id"]


def _mail_page(mail: EmailMessage) -> str:
    """The mail as a reader shows it: its headers, then its HTML part."""
    body = mail.get_body(preferencelist=("html",))
    assert body is not None
    content = body.get_content()
    rows = "".join(
        f"<div><b>{name}:</b> {html.escape(str(mail[name]))}</div>"
        for name in ("From", "To", "Subject", "Date")
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><style>body{font-family:sans-serif;margin:16px;"
        "max-width:760px} .head{border-bottom:1px solid #ccc;padding-bottom:8px;margin-bottom:8px}</style>"
        f"</head><body><div class='head'>{rows}</div>{content}</body></html>"
    )


async def _render(pages: dict[str, str]) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 800, "height": 300})
            for name, content in pages.items():
                await page.set_content(content)
                await page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)
        finally:
            await browser.close()


def main(argv: list[str] | None = None) -> int:
    """Run the demo, wait for the late departments' notices, write the examples."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.demo_notifications", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=60, help="demo hazards")
    parser.add_argument("--wait-s", type=float, default=300.0, help="at most this long for every trigger")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hazard-notify-demo-"))
    reference = fast_reference(work / "reference")
    with System(reference_dir=reference, proxy=False) as system:
        created = demo_subscriptions(
            notifications_url=system.url("notifications"),
            webhook_url=system.webhook_url("").rstrip("/"),
            operator_token=system.principal("operator").token,
        )
        print(f"demo subscriptions: {created}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.loadgen",
                "--demo",
                "--count",
                str(args.count),
                "--intake",
                system.url("intake"),
                "--dispatch",
                system.url("dispatch"),
                "--tracking",
                system.url("tracking"),
                "--reporting",
                system.url("reporting"),
                "--tokens",
                str(system.base / "tokens.json"),
            ],
            cwd=ROOT,
            check=True,
        )
        started = time.monotonic()
        while True:
            sent = [d for d in _deliveries(system) if d["status"] == "sent"]
            seen = {d["trigger"] for d in sent if d["channel"] == "email"}
            if set(WANTED) <= seen or time.monotonic() - started > args.wait_s:
                break
            time.sleep(5)
        deliveries = _deliveries(system)
        # A long header comes back folded: its value starts with the folding space.
        mails = {str(m["X-Hazard-Idempotency-Key"]).strip(): m for m in system.mails()}
        calls = system.webhook_calls()
        OUT.mkdir(parents=True, exist_ok=True)
        pages: dict[str, str] = {}
        for trigger in WANTED:
            chosen = next(
                (
                    d
                    for d in sorted(deliveries, key=lambda d: d["delivery_id"])
                    if d["trigger"] == trigger
                    and d["channel"] == "email"
                    and f"{d['event_id']}:{d['subscription_id']}" in mails
                ),
                None,
            )
            if chosen is None:
                print(f"no mail for {trigger}", flush=True)
                continue
            mail = mails[f"{chosen['event_id']}:{chosen['subscription_id']}"]
            (OUT / f"demo-{trigger}.eml").write_bytes(bytes(mail))
            pages[f"demo-{trigger}"] = _mail_page(mail)
        if CHROMIUM.exists():
            asyncio.run(_render(pages))
        excerpt = calls[:5]
        for trigger in WANTED:
            line = next((c for c in calls if (c.get("body") or {}).get("trigger") == trigger), None)
            if line is not None and line not in excerpt:
                excerpt.append(line)
        with (OUT / "demo-webhooks.jsonl").open("w", encoding="utf-8") as out:
            for line in excerpt:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        summary = {
            "command": "python -m bench.demo_notifications " + " ".join(argv or sys.argv[1:]),
            "hazards": args.count,
            "deliveries_by_trigger_channel_status": {
                f"{t} {c} {s}": n
                for (t, c, s), n in sorted(
                    Counter((d["trigger"], d["channel"], d["status"]) for d in deliveries).items()
                )
            },
            "mails_received": len(mails),
            "webhook_calls_received": len(calls),
            "examples": sorted(pages),
        }
        (OUT / "demo-summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
        print(json.dumps(summary, ensure_ascii=False, indent=1), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
