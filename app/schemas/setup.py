"""Connection, billing settings and audit shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr

from app.schemas.common import Page

ProrationModeName = Literal["line", "native", "none"]
DecreasePolicyName = Literal["no_credit", "credit"]
SyncModeName = Literal["auto", "review"]
DriftPolicyName = Literal["hold", "overwrite"]


class ConnectionUpdate(BaseModel):
    site_url: str = Field(max_length=300, examples=["https://na.myconnectwise.net"])
    company_id: str = Field(min_length=1, max_length=100, description="The CW login company id")
    public_key: str = Field(min_length=1, max_length=200)
    private_key: SecretStr | None = Field(
        default=None, min_length=1, max_length=200, description="Required the first time; omit to keep the stored one"
    )
    client_id: SecretStr | None = Field(
        default=None, min_length=1, max_length=200, description="Required the first time; omit to keep the stored one"
    )


class ConnectionRead(BaseModel):
    site_url: str
    company_id: str
    public_key: str
    private_key_set: bool
    client_id_set: bool
    updated_at: datetime


class ConnectionCheck(BaseModel):
    name: str
    ok: bool
    detail: str


class ConnectionTestResult(BaseModel):
    ok: bool
    version: str | None
    is_cloud: bool | None
    checks: list[ConnectionCheck]
    requeued: int = Field(
        default=0, description="Companies whose failed or retrying sync was queued again because every check passed"
    )


class BillingSettingsRead(BaseModel):
    enabled: bool
    timezone: str
    currency: str
    proration_mode: ProrationModeName
    decrease_policy: DecreasePolicyName
    sync_mode: SyncModeName
    drift_policy: DriftPolicyName


class BillingSettingsUpdate(BaseModel):
    enabled: bool | None = None
    timezone: str | None = Field(default=None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    proration_mode: ProrationModeName | None = None
    decrease_policy: DecreasePolicyName | None = None
    sync_mode: SyncModeName | None = None
    drift_policy: DriftPolicyName | None = None


class AuditEventRead(BaseModel):
    id: int
    created_at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(Page):
    items: list[AuditEventRead]
