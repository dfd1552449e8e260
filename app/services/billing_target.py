"""A company's billing, read once from the database into domain values (`Target`): what the reconcile, the preview,
the charges and the periods views all plan and account from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    AgreementTerm,
    BillingProduct,
    BillingStatusChange,
    ChangeStatus,
    Company,
    LicenseChange,
    PriceSetting,
    Tenant,
    TrackedAddition,
)
from app.db.repositories.additions import live
from app.domain.billing import (
    Billing,
    DecreasePolicy,
    Prices,
    ProrationMode,
    Schedule,
    Status,
    StatusChange,
    Term,
)
from app.domain.billing import PriceSetting as DomainPriceSetting
from app.domain.history import Change, History
from app.domain.markers import Marker, company_key, parse
from app.domain.money import count_text, money_text
from app.domain.periods import BillingCycle, local_day
from app.domain.plan import Line, LineValues, Situation

MONEY = ("quantity", "unit_price", "unit_cost", "less_included")
DAYS = ("effective", "cancelled")


def values_to_json(values: LineValues) -> dict[str, Any]:
    return {
        "quantity": count_text(values.quantity),
        "unit_price": money_text(values.unit_price),
        "unit_cost": money_text(values.unit_cost),
        "less_included": count_text(values.less_included),
        "effective": values.effective.isoformat(),
        "cancelled": values.cancelled.isoformat() if values.cancelled else None,
        "description": values.description,
    }


def values_from_json(data: dict[str, Any] | None) -> LineValues | None:
    if not data or "effective" not in data:
        return None
    return LineValues(
        quantity=Decimal(str(data["quantity"])),
        unit_price=Decimal(str(data["unit_price"])),
        unit_cost=Decimal(str(data["unit_cost"])),
        less_included=Decimal(str(data.get("less_included") or 0)),
        effective=date.fromisoformat(data["effective"]),
        cancelled=date.fromisoformat(data["cancelled"]) if data.get("cancelled") else None,
        description=data.get("description"),
    )


@dataclass(frozen=True, slots=True)
class TrackedRow:
    """A tracked addition as stored (its CW state is read by the reconcile)."""

    id: int
    marker: Marker
    agreement_id: int
    addition_id: int | None
    adopted: bool
    create_pending: bool
    delete_pending: bool
    written: LineValues | None
    uncertain: tuple[LineValues, ...]

    def as_line(self, current: LineValues | None) -> Line:
        return Line(
            marker=self.marker,
            agreement_id=self.agreement_id,
            addition_id=self.addition_id,
            current=current,
            written=self.written,
            uncertain=self.uncertain,
            adopted=self.adopted,
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a reconcile needs, read in one transaction (no CW call)."""

    tenant_id: str
    company_pk: str
    company_id: str  # the portal's id
    company_name: str
    billing: Billing
    today: date
    timezone: str
    sync_mode: str
    drift_policy: str
    tenant_billing: bool
    product_id: int | None
    product_text: str
    agreement_id: int | None  # the current agreement
    cw_company_id: int | None
    agreement_status: str | None
    next_invoice_date: date | None
    agreement_checked_at: datetime | None
    tracked: tuple[TrackedRow, ...] = field(default=())
    shared_agreement: bool = False  # another portal company is mapped to the same agreement (its lines name this one)

    @property
    def key(self) -> str:
        return company_key(self.company_pk)

    def situation(self, *, overwrite_drift: bool = False) -> Situation:
        invoiced = (
            {self.agreement_id: self.next_invoice_date}
            if self.agreement_id is not None and self.next_invoice_date is not None
            else {}
        )
        return Situation(
            billing=self.billing,
            key=self.key,
            today=self.today,
            product_text=self.product_text,
            next_invoice=invoiced,
            overwrite_drift=overwrite_drift or self.drift_policy == "overwrite",
            label=self.company_name if self.shared_agreement else None,
        )


def _group(rows: Iterable[Any], key: str) -> dict[Any, list[Any]]:
    grouped: dict[Any, list[Any]] = {}
    for row in rows:
        grouped.setdefault(getattr(row, key), []).append(row)
    return grouped


async def shared_agreements(session: AsyncSession, companies: Sequence[Company]) -> set[tuple[str, int]]:
    """(tenant, agreement) pairs among these companies' agreements that more than one portal company is mapped to."""
    agreements = sorted({c.cw_agreement_id for c in companies if c.cw_agreement_id is not None})
    if not agreements:
        return set()
    rows = await session.execute(
        select(Company.tenant_id, Company.cw_agreement_id)
        .where(
            Company.tenant_id.in_(sorted({c.tenant_id for c in companies})),
            Company.cw_agreement_id.in_(agreements),
            Company.deleted_at.is_(None),
        )
        .group_by(Company.tenant_id, Company.cw_agreement_id)
        .having(func.count() > 1)
    )
    return {(tenant_id, agreement_id) for tenant_id, agreement_id in rows if agreement_id is not None}


async def load_targets(
    session: AsyncSession, *, companies: Sequence[Company], tenants: Mapping[str, Tenant], now: datetime
) -> dict[str, Target]:
    """The targets of several companies (of any tenants), read in one query per table: a worker loads a whole
    claimed batch at once."""
    if not companies:
        return {}
    ids = [c.id for c in companies]
    tenant_ids = sorted({c.tenant_id for c in companies})
    products = {
        p.tenant_id: p
        for p in await session.scalars(select(BillingProduct).where(BillingProduct.tenant_id.in_(tenant_ids)))
    }
    prices = _group(
        await session.scalars(
            select(PriceSetting).where(
                PriceSetting.tenant_id.in_(tenant_ids),
                PriceSetting.company_id.is_(None) | PriceSetting.company_id.in_(ids),
            )
        ),
        "tenant_id",
    )
    statuses = _group(
        await session.scalars(select(BillingStatusChange).where(BillingStatusChange.company_id.in_(ids))), "company_id"
    )
    terms = _group(await session.scalars(select(AgreementTerm).where(AgreementTerm.company_id.in_(ids))), "company_id")
    history = _group(
        await session.execute(
            select(
                LicenseChange.company_id,
                LicenseChange.effective_at,
                LicenseChange.sequence,
                LicenseChange.license_count,
            ).where(LicenseChange.company_id.in_(ids), LicenseChange.status == ChangeStatus.accepted.value)
        ),
        "company_id",
    )
    tracked = _group(
        await session.scalars(
            select(TrackedAddition).where(TrackedAddition.company_id.in_(ids), live()).order_by(TrackedAddition.id)
        ),
        "company_id",
    )
    shared = await shared_agreements(session, companies)
    targets = {}
    for company in companies:
        tenant = tenants[company.tenant_id]
        tz = tenant.timezone
        billing = Billing(
            history=History(
                Change(local_day(r.effective_at, tz), r.sequence, r.license_count) for r in history.get(company.id, [])
            ),
            prices=Prices(
                DomainPriceSetting(local_day(p.set_at, tz), p.id, p.company_id is not None, p.unit_price, p.unit_cost)
                for p in prices.get(tenant.id, [])
                if p.company_id in (None, company.id)
            ),
            status=Status(
                StatusChange(local_day(c.changed_at, tz), c.id, c.active) for c in statuses.get(company.id, [])
            ),
            schedule=Schedule(
                Term(t.from_day, t.cw_agreement_id, BillingCycle(t.billing_cycle), t.bill_start_date, t.ended_on)
                for t in terms.get(company.id, [])
            ),
            mode=ProrationMode(tenant.proration_mode),
            policy=DecreasePolicy(tenant.decrease_policy),
            currency=tenant.currency,
        )
        product = products.get(tenant.id)
        targets[company.id] = Target(
            tenant_id=tenant.id,
            company_pk=company.id,
            company_id=company.external_id,
            company_name=company.name,
            billing=billing,
            today=local_day(now, tz),
            timezone=tz,
            sync_mode=tenant.sync_mode,
            drift_policy=tenant.drift_policy,
            tenant_billing=tenant.billing_enabled,
            product_id=product.cw_catalog_item_id if product else None,
            product_text=(product.description or product.identifier) if product else "",
            agreement_id=company.cw_agreement_id,
            cw_company_id=company.cw_company_id,
            agreement_status=company.agreement_status,
            next_invoice_date=company.next_invoice_date,
            agreement_checked_at=company.agreement_checked_at,
            tracked=tuple(row for row in map(_tracked_row, tracked.get(company.id, [])) if row is not None),
            shared_agreement=(tenant.id, company.cw_agreement_id) in shared,
        )
    return targets


def _tracked_row(row: TrackedAddition) -> TrackedRow | None:
    marker = parse(row.marker)
    if marker is None:
        return None
    return TrackedRow(
        id=row.id,
        marker=marker,
        agreement_id=row.cw_agreement_id,
        addition_id=row.cw_addition_id,
        adopted=row.adopted,
        create_pending=row.create_pending,
        delete_pending=row.delete_pending,
        written=values_from_json(row.last_written),
        uncertain=tuple(v for v in (values_from_json(u) for u in row.uncertain or []) if v is not None),
    )


async def load_target(session: AsyncSession, *, tenant: Tenant, company: Company, now: datetime) -> Target:
    """One company's target (see `load_targets`)."""
    return (await load_targets(session, companies=[company], tenants={tenant.id: tenant}, now=now))[company.id]
