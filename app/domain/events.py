"""Portal events (DESIGN.md §4): what a webhook may carry, with its bounds. Parsed strictly: a count is an integer,
never a string or a boolean, and nothing is coerced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, StrictInt

MAX_LICENSES = 1_000_000
MAX_SEQUENCE = 2**63 - 1
EFFECTIVE_WINDOW = timedelta(days=400)
COMPANY_ID_PATTERN = r"^[A-Za-z0-9._~:@-]{1,128}$"
KNOWN_TYPES = ("license.count_changed", "company.upserted", "company.deleted")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs a timezone (e.g. 2026-11-16T14:03:00Z)")
    return value.astimezone(UTC)


CompanyId = Annotated[
    str, Field(pattern=COMPANY_ID_PATTERN, description="The portal's company id: 1–128 of A–Z a–z 0–9 . _ ~ : @ -")
]
Moment = Annotated[datetime, AfterValidator(_aware)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class LicenseCountChangedData(_Data):
    company_id: CompanyId
    company_name: str | None = Field(default=None, min_length=1, max_length=200)
    license_count: StrictInt = Field(ge=0, le=MAX_LICENSES)
    previous_count: StrictInt | None = Field(default=None, ge=0, le=MAX_LICENSES, description="Informational")
    effective_at: Moment | None = Field(
        default=None, strict=False, description="Within 400 days of now; defaults to the delivery time"
    )
    sequence: StrictInt = Field(ge=0, le=MAX_SEQUENCE, description="Increases per company; 0 is a sequence")


class CompanyUpsertedData(_Data):
    company_id: CompanyId
    name: str = Field(min_length=1, max_length=200)
    identifier: str | None = Field(
        default=None, max_length=100, description="Absent: unchanged; null: cleared; a string: set"
    )


class CompanyDeletedData(_Data):
    company_id: CompanyId


class LicenseCountChanged(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["license.count_changed"]
    data: LicenseCountChangedData


class CompanyUpserted(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["company.upserted"]
    data: CompanyUpsertedData


class CompanyDeleted(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["company.deleted"]
    data: CompanyDeletedData


Event = LicenseCountChanged | CompanyUpserted | CompanyDeleted


class PortalEvent(RootModel[Annotated[Event, Field(discriminator="type")]]):
    """One portal event. Unknown `type`s are acknowledged and stored, not applied."""


def out_of_window(event: Event, now: datetime) -> str | None:
    """Why the event's `effective_at` is refused (more than 400 days from `now` either way), or None."""
    moment = event.data.effective_at if isinstance(event, LicenseCountChanged) else None
    if moment is not None and abs(moment - now) > EFFECTIVE_WINDOW:
        return "data.effective_at: must be within 400 days of now"
    return None


def identifier_given(payload: dict[str, object]) -> bool:
    """Whether a `company.upserted` payload carries `identifier` at all (absent means unchanged)."""
    data = payload.get("data")
    return isinstance(data, dict) and "identifier" in data
