"""HTTP routes of the notifications service: subscriptions (operators) and the delivery log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.notifications import domain, repository, service
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal, require
from shared.errors import ApiError
from shared.service import ServiceRuntime

router = APIRouter(prefix="/api/v1", tags=["notifications"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token"},
    403: {"description": "The role may not do this"},
}


class SubscriptionBody(BaseModel):
    """Who is told (a department's people, or an escalation target's contacts), and how."""

    model_config = ConfigDict(extra="forbid")

    scope: Literal["department", "escalation"]
    scope_id: Annotated[str, Field(min_length=1, max_length=100)]
    channel: Literal["webhook", "email"]
    url: Annotated[str, Field(min_length=8, max_length=2000)] | None = None
    address: Annotated[str, Field(min_length=3, max_length=254)] | None = None
    format: Literal["json", "wecom", "dingtalk"] = "json"
    language: Literal["zh", "en"] = "zh"
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    description: Annotated[str, Field(max_length=500)] = ""


def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


def _settings(runtime: ServiceRuntime[Any]) -> NotificationsSettings:
    assert isinstance(runtime.settings, NotificationsSettings)
    return runtime.settings


def _invalid(field: str, problem: str) -> ApiError:
    return ApiError(
        422, "invalid", "The subscription cannot be stored.", [{"field": field, "problem": problem}]
    )


def subscription_view(sub: repository.Subscription) -> dict[str, Any]:
    """The JSON shape of a subscription: never the secret, only whether one is set."""
    return {
        "subscription_id": str(sub.subscription_id),
        "scope": sub.scope,
        "scope_id": sub.scope_id,
        "channel": sub.channel,
        "url": sub.target if sub.channel == "webhook" else None,
        "address": sub.target if sub.channel == "email" else None,
        "format": sub.format,
        "language": sub.language,
        "signed": sub.secret_encrypted is not None,
        "description": sub.description,
        "created_by": sub.created_by,
        "created_at": sub.created_at.isoformat(),
    }


async def _checked_target(body: SubscriptionBody, runtime: ServiceRuntime[Any]) -> str:
    reference = runtime.reference
    if body.scope == "department":
        if body.scope_id not in {d.id for d in reference.departments}:
            raise _invalid("scope_id", f"no department {body.scope_id!r} in the reference data")
    else:
        targets = sorted({step.target for step in reference.escalation_steps if step.target != "department"})
        if body.scope_id not in targets:
            raise _invalid("scope_id", f"not an escalation target; known: {', '.join(targets)}")
    try:
        if body.channel == "webhook":
            if body.url is None or body.address is not None:
                raise domain.InvalidSubscription("url", "a webhook subscription takes a url and no address")
            allow = _settings(runtime).delivery.allow_private_targets
            await service.check_webhook_target(body.url, allow_private=allow)
            return body.url
        if body.address is None or body.url is not None:
            raise domain.InvalidSubscription("address", "an e-mail subscription takes an address and no url")
        if body.secret is not None or body.format != "json":
            raise domain.InvalidSubscription("channel", "secret and format apply to webhooks only")
        return domain.check_email_address(body.address)
    except domain.InvalidSubscription as exc:
        raise _invalid(exc.field, exc.problem) from None


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a webhook or an e-mail address to a department's or escalation target's notices",
    responses={**_ERRORS, 422: {"description": "Malformed or refused target, unknown scope or channel"}},
)
async def post_subscription(
    body: SubscriptionBody, request: Request, principal: Principal = Depends(require("operator"))
) -> dict[str, Any]:
    """Takes effect for the next event, without restart; the signing secret is stored encrypted."""
    runtime = _runtime(request)
    target = await _checked_target(body, runtime)
    secrets = service.Secrets(_settings(runtime).secret_key.get_secret_value())
    async with runtime.sessions() as session, session.begin():
        sub = await service.create_subscription(
            session,
            scope=body.scope,
            scope_id=body.scope_id,
            channel=body.channel,
            target=target,
            fmt=body.format,
            language=body.language,
            secret=body.secret,
            description=body.description,
            created_by=principal.id,
            now=datetime.now(UTC),
            secrets=secrets,
        )
    return subscription_view(sub)


@router.get("/subscriptions", summary="Subscriptions (operators and supervisors: all; a department: its own)")
async def get_subscriptions(
    request: Request,
    scope: Annotated[Literal["department", "escalation"] | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=100)] = None,
    principal: Principal = Depends(require("operator", "supervisor", "department")),
) -> dict[str, Any]:
    """Live subscriptions, oldest first."""
    if principal.role == "department":
        scope, scope_id = "department", principal.department_id
    async with _runtime(request).sessions() as session:
        found = await repository.list_subscriptions(session, scope=scope, scope_id=scope_id)
    return {"subscriptions": [subscription_view(s) for s in found]}


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    summary="Delete a subscription; what it still had to send is cancelled",
    responses={**_ERRORS, 404: {"description": "No such subscription"}},
)
async def delete_subscription(
    subscription_id: uuid.UUID, request: Request, principal: Principal = Depends(require("operator"))
) -> Response:
    """Delete a subscription (its delivery log stays)."""
    async with _runtime(request).sessions() as session, session.begin():
        deleted = await repository.delete_subscription(session, subscription_id, now=datetime.now(UTC))
    if not deleted:
        raise ApiError(404, "not_found", f"No subscription {subscription_id}.")
    return Response(status_code=204)


def delivery_view(row: Any) -> dict[str, Any]:
    """The JSON shape of one delivery in the log."""
    return {
        "delivery_id": row.delivery_id,
        "event_id": str(row.event_id),
        "subscription_id": str(row.subscription_id),
        "hazard_id": str(row.hazard_id),
        "department_id": row.department_id,
        "trigger": row.trigger,
        "channel": row.channel,
        "target": row.target,
        "status": row.status,
        "attempts": row.attempts,
        "event_at": row.event_at.isoformat(),
        "created_at": row.created_at.isoformat(),
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.status in ("pending", "retrying") else None,
        "last_error": row.last_error,
    }


@router.get(
    "/deliveries",
    summary="The delivery log, newest first (a department: its own; operators and supervisors: all)",
    responses=_ERRORS,
)
async def get_deliveries(
    request: Request,
    department_id: Annotated[str | None, Query(max_length=100)] = None,
    hazard_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[Literal["pending", "retrying", "sent", "failed", "cancelled"] | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1, description="delivery_id to page before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    principal: Principal = Depends(require("operator", "supervisor", "department")),
) -> dict[str, Any]:
    """Every delivery: who was told what, when, by which channel, with what result."""
    if principal.role == "department":
        department_id = principal.department_id
    async with _runtime(request).sessions() as session:
        rows = await repository.list_deliveries(
            session,
            department_id=department_id,
            hazard_id=hazard_id,
            status=status,
            before=before,
            limit=limit,
        )
    return {"deliveries": [delivery_view(row) for row in rows]}
