"""Shared API types. Money is a decimal string in responses ("3.00") and a decimal (string or number) in requests."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, Field, WithJsonSchema

from app.domain.money import is_valid_price, money_text

MONEY_PATTERN = r"^-?\d+\.\d{2,4}$"


def _check_price(value: Decimal) -> Decimal:
    if not is_valid_price(value):
        raise ValueError("must be a non-negative amount with at most 4 decimal places, below 10^14")
    return value


PRICE_PATTERN = r"^\d{1,14}(\.\d{1,4})?$"
# Documented as the contract's decimal string; a JSON number is tolerated on input and checked the same way.
PriceIn = Annotated[
    Decimal,
    AfterValidator(_check_price),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": PRICE_PATTERN,
            "examples": ["3.00"],
            "description": 'A unit price or cost, e.g. "3.00" (up to 4 decimals)',
        }
    ),
]
MoneyStr = Annotated[str, Field(pattern=MONEY_PATTERN, examples=["3.00"])]


def money_str(value: Decimal | None) -> str | None:
    """Money as the API shows it (`app.domain.money.money_text`): "3.00", "2.50", "3.125"."""
    return None if value is None else money_text(value)


class Page(BaseModel):
    total: int
    limit: int
    offset: int


def present(model: BaseModel, name: str) -> bool:
    """Whether the request set `name` (explicit null included), as opposed to leaving it out."""
    return name in model.model_fields_set


def dump_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def _iso_only(value: Any) -> Any:
    """Pydantic would read a bare number as a Unix timestamp; the documented format is ISO 8601."""
    if isinstance(value, int | float) or (
        isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
    ):
        raise ValueError("use an ISO 8601 date-time with a timezone, e.g. 2026-11-16T14:03:00Z")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


class SyncCondition(StrEnum):
    """Where a company's sync stands (`cause` says why, `action` what to do)."""

    in_sync = "in_sync"  # CW holds what the company owes
    pending = "pending"  # changes wait for the worker
    retrying = "retrying"  # CW could not be reached or throttled; retries by itself
    failed = "failed"  # parked: retrying cannot fix it (CW refused); fix, then POST …/sync
    drift = "drift"  # a hand edit in CW is held, not overwritten
    awaiting_approval = "awaiting_approval"  # review mode: a change set waits
    dismissed = "dismissed"  # the last change set was dismissed
    needs_attention = "needs_attention"  # the agreement is cancelled, expired or gone: remap
    not_mapped = "not_mapped"  # no agreement: nothing is billed (after the period it was unmapped in)
    deleted = "deleted"  # deleted in the portal: billed through that period, nothing after
    billing_disabled = "billing_disabled"  # billing is off for this company
    billing_off_for_tenant = "billing_off_for_tenant"  # the tenant's master switch is off
