"""Portal webhook events (DESIGN.md §4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from app.api.schemas.common import IsoDateTime

CompanyRef = Annotated[str, Field(min_length=1, max_length=100, description="The portal's company id")]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LicenseCountChangedData(_Data):
    company_id: CompanyRef
    company_name: str | None = Field(default=None, max_length=200)
    license_count: int = Field(ge=0, le=10_000_000)
    previous_count: int | None = Field(default=None, ge=0, le=10_000_000)
    effective_at: IsoDateTime | None = Field(default=None, description="Defaults to the delivery time")
    sequence: int | None = Field(default=None, ge=0, le=2**62, description="Increases per company")


class CompanyUpsertedData(_Data):
    company_id: CompanyRef
    name: str = Field(min_length=1, max_length=200)
    identifier: str | None = Field(default=None, max_length=100)


class CompanyDeletedData(_Data):
    company_id: CompanyRef


class LicenseCountChanged(BaseModel):
    type: Literal["license.count_changed"]
    data: LicenseCountChangedData


class CompanyUpserted(BaseModel):
    type: Literal["company.upserted"]
    data: CompanyUpsertedData


class CompanyDeleted(BaseModel):
    type: Literal["company.deleted"]
    data: CompanyDeletedData


class PortalEvent(
    RootModel[Annotated[LicenseCountChanged | CompanyUpserted | CompanyDeleted, Field(discriminator="type")]]
):
    """One portal event. Unknown `type`s are acknowledged and recorded, not applied."""


class WebhookAck(BaseModel):
    status: Literal["accepted", "duplicate"]
    outcome: str = Field(description="applied, stale_sequence, company_deleted, unknown_type, … ")
