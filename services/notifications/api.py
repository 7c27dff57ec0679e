"""HTTP routes of the notifications service: subscriptions (operators) and the delivery log.

Each route parses, calls a use case of :mod:`services.notifications.service` (which refuses with
``shared.domain_errors`` subclasses, mapped to the error shape in one place) and answers a declared
response model.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.notifications import service
from services.notifications.repository import NotificationsRepository, Subscription
from services.notifications.settings import NotificationsSettings
from shared.auth import Principal, require
from shared.openapi import error_responses
from shared.service import ServiceRuntime
from shared.uow import UnitOfWorkFactory

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


class SubscriptionView(BaseModel):
    """A subscription as answered: never the secret, only whether one is set."""

    subscription_id: str
    scope: str
    scope_id: str
    channel: str
    url: str | None
    address: str | None
    format: str
    language: str
    signed: bool
    description: str
    created_by: str
    created_at: str


class SubscriptionList(BaseModel):
    """Live subscriptions, oldest first."""

    subscriptions: list[SubscriptionView]


class DeliveryView(BaseModel):
    """One delivery in the log: who was told what, when, by which channel, with what result."""

    delivery_id: int
    event_id: str
    subscription_id: str
    hazard_id: str
    department_id: str
    trigger: str
    channel: str
    target: str
    status: str
    attempts: int
    event_at: str
    created_at: str
    sent_at: str | None
    next_attempt_at: str | None
    last_error: str | None


class DeliveryList(BaseModel):
    """The delivery log, newest first."""

    deliveries: list[DeliveryView]


def _runtime(request: Request) -> ServiceRuntime[NotificationsSettings]:
    runtime: ServiceRuntime[NotificationsSettings] = request.app.state.runtime
    return runtime


def _work(request: Request) -> UnitOfWorkFactory[NotificationsRepository]:
    work: UnitOfWorkFactory[NotificationsRepository] = request.app.state.runtime.work
    return work


Runtime = Annotated[ServiceRuntime[NotificationsSettings], Depends(_runtime)]
Work = Annotated[UnitOfWorkFactory[NotificationsRepository], Depends(_work)]
Operator = Annotated[Principal, Depends(require("operator"))]
Reader = Annotated[Principal, Depends(require("operator", "supervisor", "department"))]


def subscription_view(sub: Subscription) -> SubscriptionView:
    """The answer's shape of a subscription: never the secret, only whether one is set."""
    return SubscriptionView(
        subscription_id=str(sub.subscription_id),
        scope=sub.scope,
        scope_id=sub.scope_id,
        channel=sub.channel,
        url=sub.target if sub.channel == "webhook" else None,
        address=sub.target if sub.channel == "email" else None,
        format=sub.format,
        language=sub.language,
        signed=sub.secret_encrypted is not None,
        description=sub.description,
        created_by=sub.created_by,
        created_at=sub.created_at.isoformat(),
    )


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a webhook or an e-mail address to a department's or escalation target's notices",
    responses={
        **_ERRORS,
        **error_responses(422, s422="Malformed or refused target, unknown scope or channel"),
    },
)
async def post_subscription(
    body: SubscriptionBody, runtime: Runtime, work: Work, principal: Operator
) -> SubscriptionView:
    """Takes effect for the next event, without restart; the signing secret is stored encrypted."""
    settings = runtime.settings
    async with work() as uow:
        sub = await service.subscribe(
            uow,
            service.NewSubscription(**body.model_dump()),
            reference=runtime.reference,
            allow_private=settings.delivery.allow_private_targets,
            secrets=service.Secrets(settings.secret_key.get_secret_value()),
            created_by=principal.id,
        )
    return subscription_view(sub)


@router.get("/subscriptions", summary="Subscriptions (operators and supervisors: all; a department: its own)")
async def get_subscriptions(
    work: Work,
    principal: Reader,
    scope: Annotated[Literal["department", "escalation"] | None, Query()] = None,
    scope_id: Annotated[str | None, Query(max_length=100)] = None,
) -> SubscriptionList:
    """Live subscriptions, oldest first."""
    if principal.role == "department":
        scope, scope_id = "department", principal.department_id
    async with work() as uow:
        found = await service.list_subscriptions(uow, scope=scope, scope_id=scope_id)
    return SubscriptionList(subscriptions=[subscription_view(s) for s in found])


@router.delete(
    "/subscriptions/{subscription_id}",
    status_code=204,
    summary="Delete a subscription; what it still had to send is cancelled",
    responses={**_ERRORS, **error_responses(404, s404="No such subscription")},
)
async def delete_subscription(subscription_id: uuid.UUID, work: Work, _: Operator) -> Response:
    """Delete a subscription (its delivery log stays)."""
    async with work() as uow:
        await service.unsubscribe(uow, subscription_id)
    return Response(status_code=204)


def delivery_view(row: Any) -> DeliveryView:
    """The answer's shape of one delivery in the log."""
    return DeliveryView(
        delivery_id=row.delivery_id,
        event_id=str(row.event_id),
        subscription_id=str(row.subscription_id),
        hazard_id=str(row.hazard_id),
        department_id=row.department_id,
        trigger=row.trigger,
        channel=row.channel,
        target=row.target,
        status=row.status,
        attempts=row.attempts,
        event_at=row.event_at.isoformat(),
        created_at=row.created_at.isoformat(),
        sent_at=row.sent_at.isoformat() if row.sent_at else None,
        next_attempt_at=row.next_attempt_at.isoformat() if row.status in ("pending", "retrying") else None,
        last_error=row.last_error,
    )


@router.get(
    "/deliveries",
    summary="The delivery log, newest first (a department: its own; operators and supervisors: all)",
    responses=_ERRORS,
)
async def get_deliveries(
    work: Work,
    principal: Reader,
    department_id: Annotated[str | None, Query(max_length=100)] = None,
    hazard_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[Literal["pending", "retrying", "sent", "failed", "cancelled"] | None, Query()] = None,
    before: Annotated[int | None, Query(ge=1, description="delivery_id to page before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Every delivery: who was told what, when, by which channel, with what result."""
    if principal.role == "department":
        department_id = principal.department_id
    async with work() as uow:
        rows = await service.list_deliveries(
            uow,
            department_id=department_id,
            hazard_id=hazard_id,
            status=status,
            before=before,
            limit=limit,
        )
    return DeliveryList(deliveries=[delivery_view(row) for row in rows])
