"""What the admin API takes (request bodies) and answers (response models, exactly today's fields)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.reference import CampaignTargets
from shared.text import Text

Id = Annotated[str, Text(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")]
Code = Annotated[str, Text(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Slug = Annotated[str, Text(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str, Text(strip=True, min_length=1, max_length=200)]
ReporterType = Literal["grid_member", "building_manager", "hotline", "cadre_visit"]
Role = Literal["reporter", "department", "operator", "supervisor"]
AuditEntity = Literal["principal", "department", "routing_rules", "campaign"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# --- request bodies --------------------------------------------------------------------------


class PrincipalIn(_Body):
    """A person or system to give a token: role, and what the role binds it to."""

    principal: Id
    role: Role
    grid_id: Slug | None = None
    department_id: Code | None = None
    reporter_type: ReporterType | None = None
    building_ids: Annotated[
        list[Annotated[str, Text(min_length=1, max_length=100)]], Field(max_length=200)
    ] = []


class Contact(_Body):
    """An escalation contact of a department."""

    name: Name
    phone: Annotated[str, Text(pattern=r"^[0-9+\- ]{3,30}$")] | None = None
    email: Annotated[str, Text(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")] | None = None
    # The overdue-receipt escalation levels at which notifications e-mails this contact (left out:
    # every level; an urging reaches every contact). Only a contact with an e-mail address is told.
    levels: Annotated[list[Annotated[int, Field(ge=1, le=99)]], Field(min_length=1, max_length=20)] | None = (
        None
    )


class DepartmentIn(_Body):
    """A department's names and escalation contacts."""

    name_en: Name
    name_zh: Name
    contacts: Annotated[list[Contact], Field(max_length=20)] = []


class NewDepartment(DepartmentIn):
    """A new department."""

    id: Code


class RoutingRulesIn(_Body):
    """The whole ordered rule list of a new routing version."""

    rules: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=1000)]


class RuleChange(_Body):
    """One routing rule's match (category, and community / grid when it names them) and department.

    ``position`` (1 = first) places it in the ordered list; the first matching rule wins. Left out:
    a new rule goes before the first rule of its category as wide as it or wider (overrides before
    generic rules), a changed rule keeps its place.
    """

    category: Code
    community_id: Slug | None = None
    grid_id: Slug | None = None
    department_id: Code
    position: Annotated[int, Field(ge=1, le=1001)] | None = None


class NewRule(RuleChange):
    """A new routing rule, with its id."""

    id: Slug


class CampaignIn(_Body):
    """A new campaign: a date window (both ends included), the categories it counts, its targets."""

    id: Slug
    name_en: Name
    name_zh: Name
    starts_on: date
    ends_on: date
    categories: Annotated[list[Code], Field(min_length=1, max_length=100)]
    targets: CampaignTargets = CampaignTargets()


class CampaignTargetsIn(_Body):
    """New targets of a campaign."""

    targets: CampaignTargets


class CampaignEnd(_Body):
    """When a campaign ends (its last day); today when left out."""

    ends_on: date | None = None


# --- answers ---------------------------------------------------------------------------------


class PrincipalView(BaseModel):
    """A principal with its binding; never a token or its hash."""

    principal: str
    role: str
    grid_id: str | None
    department_id: str | None
    reporter_type: str | None
    building_ids: list[str]
    source: Literal["file", "database"]
    active: bool


class PrincipalWithToken(PrincipalView):
    """A principal and its new plain token (in this answer only)."""

    token: str


class PrincipalList(BaseModel):
    """Everyone holding a token, by principal."""

    principals: list[PrincipalView]


class ContactView(BaseModel):
    """An escalation contact (fields left out when not given)."""

    name: str
    phone: str | None = None
    email: str | None = None
    levels: list[int] | None = None


class DepartmentView(BaseModel):
    """A department and its escalation contacts."""

    id: str
    name_en: str
    name_zh: str
    contacts: list[ContactView]


class DepartmentList(BaseModel):
    """Every department in force."""

    departments: list[DepartmentView]


class DepartmentDeleted(BaseModel):
    """A deleted department."""

    id: str
    deleted: bool


class RuleView(BaseModel):
    """A routing rule (community and grid left out when it names none)."""

    id: str
    category: str
    community_id: str | None = None
    grid_id: str | None = None
    department_id: str


class RoutingRules(BaseModel):
    """The routing rules of a version, in order (first match wins)."""

    version: int
    rules: list[RuleView]


class TargetsView(BaseModel):
    """A campaign's goals; null when not tracked."""

    found: int | None
    notices_issued: int | None
    rectified: int | None


class CampaignView(BaseModel):
    """A campaign with its window and targets."""

    id: str
    name_en: str
    name_zh: str
    starts_on: date
    ends_on: date
    categories: list[str]
    targets: TargetsView


class CampaignList(BaseModel):
    """Every campaign in force."""

    campaigns: list[CampaignView]


class AuditEntry(BaseModel):
    """Who changed what, when, before and after."""

    id: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    before: Any
    after: Any


class AuditList(BaseModel):
    """Audit rows, newest first."""

    audit: list[AuditEntry]
