"""The people's pages: one entry (/app/) where each role signs in and lands on its page.

Department desk, grid member's phone page and operator's queue are plain HTML/JS/CSS (no build
step) served here, next to the supervisors' dashboard. They call intake, dispatch and tracking
directly from the browser with the signed-in bearer token: ``/app/config.json`` names each API's
base URL (``REPORTING__APP__*``), and those services allow this page's origin by CORS
(``<SERVICE>__HTTP__CORS_ORIGINS``). ``GET /api/v1/whoami`` tells the page which role a token has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from services.reporting import models
from services.reporting.settings import PeopleAppSettings, ReportingSettings
from shared.auth import Principal, authenticate
from shared.service import ServiceRuntime

router = APIRouter()
APP_DIR = Path(__file__).parent / "static" / "app"
GROUPS = ("fire", "public_security", "other")
"""How the grid member's category picker groups categories (production safety counts as other)."""


def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


def _app_settings(runtime: Annotated[ServiceRuntime[Any], Depends(_runtime)]) -> PeopleAppSettings:
    settings = runtime.settings
    return settings.app if isinstance(settings, ReportingSettings) else PeopleAppSettings()


Runtime = Annotated[ServiceRuntime[Any], Depends(_runtime)]
AppSettings = Annotated[PeopleAppSettings, Depends(_app_settings)]


def _origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def page_csp(settings: PeopleAppSettings) -> str:
    """The pages load only their own files and talk only to this service and the three APIs."""
    apis = " ".join(
        sorted({_origin(u) for u in (settings.intake_url, settings.dispatch_url, settings.tracking_url)})
    )
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self' {apis}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


@router.get("/app", include_in_schema=False)
@router.get("/app/", include_in_schema=False)
async def app_page(settings: AppSettings) -> FileResponse:
    """The page shell: sign-in, then the page of the token's role (no data, no token in it)."""
    return FileResponse(
        APP_DIR / "index.html",
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": page_csp(settings)},
    )


@router.get("/app/config.json", include_in_schema=False, response_model=models.AppConfig)
async def app_config(settings: AppSettings) -> JSONResponse:
    """Where the pages find each API, and how often they poll."""
    return JSONResponse(
        {
            "intake": settings.intake_url.rstrip("/"),
            "dispatch": settings.dispatch_url.rstrip("/"),
            "tracking": settings.tracking_url.rstrip("/"),
            "reporting": "",
            "dashboard": "/",
            "poll_ms": int(settings.poll_s * 1000),
        },
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/app/reference.json", include_in_schema=False, response_model=models.AppReference)
async def app_reference(runtime: Runtime) -> JSONResponse:
    """Public names the pages show: categories by group, departments, communities and grids."""
    ref = runtime.reference
    return JSONResponse(
        {
            "timezone": ref.calendar.timezone,
            "groups": list(GROUPS),
            "categories": [
                {
                    "id": c.code,
                    "zh": c.name_zh,
                    "en": c.name_en,
                    "group": c.group if c.group in GROUPS else "other",
                    "urgency": [u.level for u in c.urgency],
                }
                for c in ref.categories
            ],
            "departments": [{"id": d.id, "zh": d.name_zh, "en": d.name_en} for d in ref.departments],
            "communities": [{"id": c.id, "zh": c.name_zh, "en": c.name_en} for c in ref.communities],
            "grids": [
                {
                    "id": g.id,
                    "zh": g.name_zh,
                    "en": g.name_en,
                    "community_id": g.community_id,
                    "center": {"lat": g.center.lat, "lon": g.center.lon},
                }
                for g in ref.grids
            ],
        },
        headers={"Cache-Control": "no-cache"},
    )


@router.get(
    "/api/v1/whoami",
    tags=["people"],
    summary="Who the bearer token is: principal, role, grid, department",
    response_model=models.WhoAmI,
)
async def whoami(principal: Annotated[Principal, Depends(authenticate)]) -> dict[str, Any]:
    """What the sign-in page needs to open the token's page; 401 for an unknown token."""
    return {
        "principal": principal.id,
        "role": principal.role,
        "grid_id": principal.grid_id,
        "department_id": principal.department_id,
    }
