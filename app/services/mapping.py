"""Mapping a portal company to its CW company and agreement, and what a company looks like to the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.schemas.common import money_str
from app.api.schemas.companies import CompanyMapping, CompanyPricing, CompanyRead, CompanySyncSummary
from app.connectwise.client import ConnectWiseClient
from app.connectwise.conditions import F
from app.connectwise.errors import CWNotFoundError
from app.connectwise.schemas import Agreement
from app.db.base import utcnow
from app.db.models import BillingProduct, Company, SyncState, Tenant, TrackedAddition
from app.domain.periods import UnsupportedBillingCycleError, parse_cycle
from app.errors import UnprocessableError
from app.services.audit import record_audit
from app.services.billing_inputs import effective_price
from app.services.sync_schedule import schedule_sync, sync_eligible

MARKER_PREFIX = "cwbs:"


class MappingRejectedError(UnprocessableError):
    code = "mapping_rejected"
    title = "This company or agreement cannot be mapped"


def marker(company: Company, role: str) -> str:
    """The key written into an addition's serial number (≤ 50 characters): `cwbs:<company hex>:<role>`."""
    return f"{MARKER_PREFIX}{company.id.replace('-', '')}:{role}"


@dataclass(frozen=True, slots=True)
class AgreementFacts:
    name: str
    cycle: str
    bill_start: datetime
    prorate: bool


async def check_agreement(
    client: ConnectWiseClient, *, cw_company_id: int, agreement: Agreement, now: datetime
) -> AgreementFacts:
    """Everything that makes an agreement unusable for license billing, each with the reason (422)."""
    owner = agreement.company.id if agreement.company else None
    if owner != cw_company_id:
        who = agreement.company.name if agreement.company and agreement.company.name else f"company {owner}"
        raise MappingRejectedError(
            f"Agreement {agreement.id} ('{agreement.name}') belongs to {who}, not to CW company {cw_company_id}"
        )
    status = (agreement.agreement_status or "").lower()
    if agreement.cancelled_flag or status == "cancelled":
        raise MappingRejectedError(f"Agreement {agreement.id} ('{agreement.name}') is cancelled")
    ended = agreement.end_date is not None and agreement.end_date < now and not agreement.no_ending_date_flag
    if status == "expired" or ended:
        raise MappingRejectedError(f"Agreement {agreement.id} ('{agreement.name}') has expired")
    if agreement.billing_cycle is None or agreement.billing_cycle.id is None:
        raise MappingRejectedError(f"Agreement {agreement.id} has no billing cycle; it is not recurring")
    cycle = await client.get_billing_cycle(agreement.billing_cycle.id)
    try:
        parsed = parse_cycle(cycle.billing_options or cycle.name)
    except UnsupportedBillingCycleError:
        raise MappingRejectedError(
            f"Agreement {agreement.id} bills {cycle.name} ({cycle.billing_options or 'unknown'}); only recurring "
            "Monthly, Quarterly, SemiAnnual and Yearly agreements can carry license billing"
        ) from None
    anchor = agreement.bill_start_date or agreement.start_date
    if anchor is None:
        raise MappingRejectedError(f"Agreement {agreement.id} has no bill start date to anchor its periods")
    return AgreementFacts(
        name=agreement.name, cycle=parsed.value, bill_start=anchor, prorate=bool(agreement.prorate_flag)
    )


async def map_company(
    session: AsyncSession,
    client: ConnectWiseClient,
    *,
    tenant: Tenant,
    company: Company,
    cw_company_id: int,
    cw_agreement_id: int,
    actor: str,
) -> None:
    product = await session.get(BillingProduct, tenant.id)
    if product is None:
        raise MappingRejectedError("Map the product first (PUT or POST /api/v1/billing/product)")
    try:
        cw_company = await client.get_company(cw_company_id)
    except CWNotFoundError:
        raise MappingRejectedError(f"ConnectWise has no company {cw_company_id}") from None
    if cw_company.deleted_flag:
        raise MappingRejectedError(f"CW company {cw_company_id} ('{cw_company.name}') is in the recycle bin")
    try:
        agreement = await client.get_agreement(cw_agreement_id)
    except CWNotFoundError:
        raise MappingRejectedError(f"ConnectWise has no agreement {cw_agreement_id}") from None
    now = datetime.now(UTC)
    facts = await check_agreement(client, cw_company_id=cw_company_id, agreement=agreement, now=now)

    live = (F("product/id") == product.cw_catalog_item_id) & (F("cancelledDate").is_null() | (F("cancelledDate") > now))
    additions = await client.list_additions(cw_agreement_id, conditions=live)
    ours = {marker(company, "base")}
    foreign = [a for a in additions if not (a.serial_number or "").startswith(MARKER_PREFIX)]
    own_base = [a for a in additions if (a.serial_number or "") in ours]
    if len(foreign) > 1 and not own_base:
        ids = ", ".join(str(a.id) for a in foreign)
        raise MappingRejectedError(
            f"Agreement {cw_agreement_id} already has {len(foreign)} active additions of {product.identifier} "
            f"(ids {ids}); cancel all but one in ConnectWise so there is exactly one to adopt",
            extra={"addition_ids": [a.id for a in foreign]},
        )

    before = _mapping_dict(company)
    # Moving to another agreement: our additions on the old one are no longer written (left as they are in CW).
    await session.execute(
        update(TrackedAddition)
        .where(
            TrackedAddition.company_id == company.id,
            TrackedAddition.retired_at.is_(None),
            TrackedAddition.cw_agreement_id != cw_agreement_id,
        )
        .values(retired_at=utcnow())
    )
    company.cw_company_id, company.cw_agreement_id = cw_company_id, cw_agreement_id
    company.agreement_name, company.billing_cycle = facts.name, facts.cycle
    company.bill_start_date, company.agreement_prorate = facts.bill_start.date(), facts.prorate
    company.mapped_at = utcnow()

    base = await session.scalar(
        select(TrackedAddition).where(
            TrackedAddition.company_id == company.id,
            TrackedAddition.role == "base",
            TrackedAddition.retired_at.is_(None),
        )
    )
    adopted_id: int | None = None
    if base is None:
        found = own_base[0] if own_base else (foreign[0] if foreign else None)
        base = TrackedAddition(
            tenant_id=tenant.id,
            company_id=company.id,
            cw_agreement_id=cw_agreement_id,
            role="base",
            marker=marker(company, "base"),
            cw_addition_id=found.id if found else None,
            adopted=bool(found and not own_base),
        )
        session.add(base)
        adopted_id = found.id if found and not own_base else None
    await session.flush()
    after = _mapping_dict(company) | {"base_addition_id": base.cw_addition_id, "adopted_addition_id": adopted_id}
    await record_audit(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action="company.mapped",
        object_type="company",
        object_id=company.external_id,
        before=before,
        after=after,
    )
    if sync_eligible(tenant, company):
        await schedule_sync(session, tenant_id=tenant.id, company_id=company.id, reason="mapping_changed")


def _mapping_dict(company: Company) -> dict[str, object]:
    return {
        "cw_company_id": company.cw_company_id,
        "cw_agreement_id": company.cw_agreement_id,
        "agreement_name": company.agreement_name,
        "billing_cycle": company.billing_cycle,
        "bill_start_date": company.bill_start_date,
    }


async def company_view(
    session: AsyncSession,
    company: Company,
    *,
    product: BillingProduct | None = None,
    state: SyncState | None = None,
    base: TrackedAddition | None = None,
    loaded: bool = False,
) -> CompanyRead:
    if not loaded:
        product = await session.get(BillingProduct, company.tenant_id)
        state = await session.get(SyncState, company.id)
        base = await session.scalar(
            select(TrackedAddition).where(
                TrackedAddition.company_id == company.id,
                TrackedAddition.role == "base",
                TrackedAddition.retired_at.is_(None),
            )
        )
    price = effective_price(company, product)
    mapping = None
    if company.cw_agreement_id is not None and company.cw_company_id is not None:
        mapping = CompanyMapping(
            cw_company_id=company.cw_company_id,
            cw_agreement_id=company.cw_agreement_id,
            agreement_name=company.agreement_name,
            billing_cycle=company.billing_cycle,
            bill_start_date=company.bill_start_date,
            agreement_prorate=company.agreement_prorate,
            base_addition_id=base.cw_addition_id if base else None,
            adopted=bool(base and base.adopted),
        )
    return CompanyRead(
        company_id=company.external_id,
        name=company.name,
        identifier=company.identifier,
        license_count=company.license_count,
        billing_enabled=company.billing_enabled,
        deleted=company.deleted_at is not None,
        mapping=mapping,
        pricing=CompanyPricing(
            unit_price=money_str(price.unit_price),
            unit_cost=money_str(price.unit_cost),
            price_source=price.price_source.value,
            cost_source=price.cost_source.value,
            unit_price_override=money_str(company.unit_price_override),
            unit_cost_override=money_str(company.unit_cost_override),
        ),
        sync=CompanySyncSummary(
            status=state.status if state else "in_sync",
            reason=state.reason if state else None,
            due=bool(state and state.due_at is not None),
            attempts=state.attempts if state else 0,
            last_error=state.last_error if state else None,
            last_success_at=state.last_success_at if state else None,
        ),
    )
