"""Mapping a portal company to its CW company and agreement (first mapping, adoption, moves, unmapping), whether
billing applies to it, and what a company looks like to the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise.client import ConnectWiseClient
from app.connectwise.conditions import F
from app.connectwise.errors import CWNotFoundError
from app.connectwise.schemas import Addition, Agreement
from app.db.models import (
    AgreementTerm,
    BillingProduct,
    ChangeSource,
    ChangeStatus,
    Company,
    LicenseChange,
    PriceSetting,
    SyncState,
    Tenant,
    TrackedAddition,
)
from app.db.repositories.additions import current_base
from app.db.repositories.additions import live as live_addition
from app.domain.billing import Schedule, Term
from app.domain.history import OPENING_SEQUENCE
from app.domain.markers import Kind, Marker, company_key, is_ours
from app.domain.matching import Candidate, rank
from app.domain.periods import BillingCycle, UnsupportedBillingCycleError, local_day, parse_cycle, period_containing
from app.domain.plan import LineValues
from app.domain.pricing import EffectivePrice, resolve_price
from app.errors import ConflictError, UnprocessableError
from app.schemas.common import money_str, present
from app.schemas.companies import (
    BillingUpdate,
    CompanyMapping,
    CompanyPricing,
    CompanyRead,
    CompanySyncSummary,
    SuggestionRead,
)
from app.services.audit import record_audit
from app.services.billing_target import load_target, values_to_json
from app.services.sync_condition import summary
from app.services.sync_schedule import billing_applies, record_status, schedule_if_wanted


class MappingRejectedError(UnprocessableError):
    code = "mapping_rejected"
    title = "This company or agreement cannot be mapped"


class MappingConflictError(ConflictError):
    code = "mapping_conflict"
    title = "This mapping would bill the same licenses twice or leave days unbilled"


class AgreementSharedError(ConflictError):
    code = "agreement_shared"
    title = "Another portal company is mapped to this agreement"


def effective_price(company: Company, product: BillingProduct | None) -> EffectivePrice:
    """The company's override where it has one, else the product's default."""
    return resolve_price(
        price_override=company.unit_price_override,
        cost_override=company.unit_cost_override,
        default_price=product.unit_price if product else None,
        default_cost=product.unit_cost if product else None,
    )


def line_values(addition: Addition) -> LineValues:
    """What CW holds in an addition, in the planner's terms."""
    zero = Decimal(0)
    return LineValues(
        quantity=addition.quantity if addition.quantity is not None else zero,
        unit_price=addition.unit_price if addition.unit_price is not None else zero,
        unit_cost=addition.unit_cost if addition.unit_cost is not None else zero,
        less_included=addition.less_included if addition.less_included is not None else zero,
        effective=addition.effective_date.date() if addition.effective_date else date(1900, 1, 1),
        cancelled=addition.cancelled_date.date() if addition.cancelled_date else None,
        description=addition.invoice_description,
    )


@dataclass(frozen=True, slots=True)
class AgreementFacts:
    name: str
    cycle: str
    bill_start: datetime
    prorate: bool
    next_invoice: date | None = None


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
        name=agreement.name,
        cycle=parsed.value,
        bill_start=anchor,
        prorate=bool(agreement.prorate_flag),
        next_invoice=agreement.next_invoice_date.date() if agreement.next_invoice_date else None,
    )


async def suggest_matches(client: ConnectWiseClient, company: Company) -> list[SuggestionRead]:
    """CW companies that may be this portal company, best first, each with its reason; never applied by themselves."""
    condition = F("name").contains_text(company.name.split()[0] if company.name.split() else company.name)
    if company.identifier:
        condition = condition | (F("identifier") == company.identifier)
    condition = (F("deletedFlag") == False) & condition  # noqa: E712 (a CW condition)
    found = await client.find_companies(condition, limit=200)
    ranked = rank(
        name=company.name,
        identifier=company.identifier,
        candidates=[Candidate(c.id, c.identifier, c.name) for c in found],
    )
    return [
        SuggestionRead(
            cw_company_id=s.candidate.cw_company_id,
            identifier=s.candidate.identifier,
            name=s.candidate.name,
            reason=s.reason.value,
            score=s.score,
            auto_applicable=s.exact,
        )
        for s in ranked
    ]


async def map_company(
    session: AsyncSession,
    client: ConnectWiseClient,
    *,
    tenant: Tenant,
    company: Company,
    cw_company_id: int,
    cw_agreement_id: int,
    actor: str,
    now: datetime,
    share_agreement: bool = False,
) -> None:
    """Map the company to an agreement (DESIGN §5, agreement changes).

    * An agreement another portal company of the tenant is mapped to is refused (409 naming it) unless
      `share_agreement`: then each company's lines name it, and each sees only its own lines as its own.

    * A first mapping bills on the agreement from the period containing today; a live addition of the product that
      is already there is adopted (its quantity is the company's count from its effective date) instead of creating
      a second one.
    * A move to another agreement: the old one bills through the end of the current period and nothing after, the
      new one from the next period — whose first day must be a period start of the new agreement too.
    """
    product = await session.get(BillingProduct, tenant.id)
    if product is None:
        raise MappingRejectedError("Map the product first (PUT or POST /api/v1/billing/product)")
    others = list(
        await session.scalars(
            select(Company.external_id)
            .where(
                Company.tenant_id == tenant.id,
                Company.cw_agreement_id == cw_agreement_id,
                Company.id != company.id,
                Company.deleted_at.is_(None),  # a deleted company's billing has ended
            )
            .order_by(Company.external_id)
        )
    )
    if others and not share_agreement and company.cw_agreement_id != cw_agreement_id:
        raise AgreementSharedError(
            f"Agreement {cw_agreement_id} already bills portal company {', '.join(others)}; map this one to its own "
            'agreement, or send "share_agreement": true if both belong on it (each one\'s lines then name it)',
            extra={"companies": others},
        )
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
    facts = await check_agreement(client, cw_company_id=cw_company_id, agreement=agreement, now=now)
    today = local_day(now, tenant.timezone)
    terms = list(
        await session.scalars(
            select(AgreementTerm).where(AgreementTerm.company_id == company.id).order_by(AgreementTerm.from_day)
        )
    )
    live = (F("product/id") == product.cw_catalog_item_id) & (F("cancelledDate").is_null() | (F("cancelledDate") > now))
    # Lines another company of the tenant already bills from (adopted lines carry no marker) are never adopted twice.
    taken = set(
        await session.scalars(
            select(TrackedAddition.cw_addition_id).where(
                TrackedAddition.tenant_id == tenant.id,
                TrackedAddition.cw_agreement_id == cw_agreement_id,
                TrackedAddition.company_id != company.id,
                live_addition(),
            )
        )
    )
    foreign = [
        a
        for a in await client.list_additions(cw_agreement_id, conditions=live)
        if not is_ours(a.serial_number) and a.id not in taken
    ]
    schedule = Schedule(
        Term(t.from_day, t.cw_agreement_id, BillingCycle(t.billing_cycle), t.bill_start_date) for t in terms
    )
    new_cycle, new_anchor = BillingCycle(facts.cycle), facts.bill_start.date()
    before = _mapping_dict(company)
    same = company.cw_agreement_id == cw_agreement_id and terms and terms[-1].cw_agreement_id == cw_agreement_id
    if same:
        _store_facts(company, cw_company_id, cw_agreement_id, facts, now)
        return
    adopt: Addition | None = None
    current = schedule.period_containing(today) if terms else None
    if not terms:  # the first mapping
        from_day = period_containing(today, cycle=new_cycle, anchor=new_anchor).start
        if len(foreign) > 1:
            ids = ", ".join(str(a.id) for a in foreign)
            raise MappingRejectedError(
                f"Agreement {cw_agreement_id} already has {len(foreign)} active additions of {product.identifier} "
                f"(ids {ids}); cancel all but one in ConnectWise so there is exactly one to adopt",
                extra={"addition_ids": [a.id for a in foreign]},
            )
        adopt = foreign[0] if foreign else None
    else:
        if foreign:
            ids = ", ".join(str(a.id) for a in foreign)
            raise MappingConflictError(
                f"Agreement {cw_agreement_id} already has additions of {product.identifier} not managed by this "
                f"service (ids {ids}); this company bills on agreement {company.cw_agreement_id or 'none'} today, so "
                "they would bill the same seats twice. Cancel them in ConnectWise first.",
                extra={"addition_ids": [a.id for a in foreign]},
            )
        if company.cw_agreement_id is None or current is None:  # billing had ended: it starts again
            from_day = max(period_containing(today, cycle=new_cycle, anchor=new_anchor).start, terms[-1].from_day)
        else:  # a move: the new agreement bills from the next period
            from_day = current.end + timedelta(days=1)
            start = period_containing(from_day, cycle=new_cycle, anchor=new_anchor).start
            if start != from_day:
                raise MappingConflictError(
                    f"Agreement {cw_agreement_id}'s periods do not start on {from_day:%d %b %Y}, where this company's "
                    f"next period starts (its period containing that day starts {start:%d %b %Y}); pick an agreement "
                    "whose billing cycle and bill start day line up, or change them in ConnectWise"
                )
    for term in terms:  # a move not in force yet is replaced by this one
        if term.from_day >= from_day:
            await session.delete(term)
    session.add(
        AgreementTerm(
            tenant_id=tenant.id,
            company_id=company.id,
            from_day=from_day,
            cw_agreement_id=cw_agreement_id,
            billing_cycle=facts.cycle,
            bill_start_date=new_anchor,
            created_at=now,
        )
    )
    _store_facts(company, cw_company_id, cw_agreement_id, facts, now)
    company.mapped_at = company.mapped_at or now
    await session.flush()
    adopted_id = None
    if adopt is not None:
        adopted_id = await _adopt(session, tenant=tenant, company=company, agreement_id=cw_agreement_id, line=adopt)
    await company_changed(
        session,
        tenant=tenant,
        company=company,
        actor=actor,
        action="company.mapped",
        before=before,
        after=_mapping_dict(company)
        | {"from_day": from_day, "adopted_addition_id": adopted_id}
        | ({"shares_agreement_with": others} if others else {}),
        reason="mapping_changed",
        status_reason="mapped",
        now=now,
    )
    for other in await session.scalars(
        select(Company).where(Company.tenant_id == tenant.id, Company.external_id.in_(others))
    ):  # their lines now name their company too
        await schedule_if_wanted(session, tenant=tenant, company=other, reason="agreement_shared", at=now)


async def unmap_company(session: AsyncSession, *, tenant: Tenant, company: Company, actor: str, now: datetime) -> date:
    """End billing on the agreement: it bills through the end of the current period and nothing after (DESIGN §5).
    Returns the first day nothing is billed any more."""
    if company.cw_agreement_id is None:
        raise MappingConflictError(f"Company {company.external_id} is not mapped")
    terms = list(
        await session.scalars(
            select(AgreementTerm).where(AgreementTerm.company_id == company.id).order_by(AgreementTerm.from_day)
        )
    )
    schedule = Schedule(
        Term(t.from_day, t.cw_agreement_id, BillingCycle(t.billing_cycle), t.bill_start_date) for t in terms
    )
    today = local_day(now, tenant.timezone)
    current = schedule.period_containing(today)
    last = terms[-1]
    ends = current.end + timedelta(days=1) if current is not None else today
    for term in terms:
        if term.from_day >= ends and term is not last:
            await session.delete(term)
    if last.from_day >= ends:
        last.cw_agreement_id = None
        last.from_day = ends
    else:
        session.add(
            AgreementTerm(
                tenant_id=tenant.id,
                company_id=company.id,
                from_day=ends,
                cw_agreement_id=None,
                billing_cycle=last.billing_cycle,
                bill_start_date=last.bill_start_date,
                created_at=now,
            )
        )
    before = _mapping_dict(company)
    company.cw_agreement_id = company.cw_company_id = None
    company.agreement_status = company.next_invoice_date = None
    await session.flush()
    await company_changed(
        session,
        tenant=tenant,
        company=company,
        actor=actor,
        action="company.unmapped",
        before=before,
        after={"billed_through": ends - timedelta(days=1)},
        reason="mapping_changed",
        status_reason="unmapped",
        now=now,
    )
    return ends


def _store_facts(company: Company, cw_company_id: int, agreement_id: int, facts: AgreementFacts, now: datetime) -> None:
    company.cw_company_id, company.cw_agreement_id = cw_company_id, agreement_id
    company.agreement_name, company.billing_cycle = facts.name, facts.cycle
    company.bill_start_date, company.agreement_prorate = facts.bill_start.date(), facts.prorate
    company.agreement_status, company.agreement_checked_at = "Active", now
    company.next_invoice_date = facts.next_invoice


async def _adopt(session: AsyncSession, *, tenant: Tenant, company: Company, agreement_id: int, line: Addition) -> int:
    """Track an existing addition as the company's base line; its billed quantity is the company's count from its
    effective date until the first change (the history's opening)."""
    values = line_values(line)
    session.add(
        TrackedAddition(
            tenant_id=tenant.id,
            company_id=company.id,
            cw_agreement_id=agreement_id,
            kind=Kind.base.value,
            marker=str(Marker(company_key(company.id), Kind.base, values.effective)),
            cw_addition_id=line.id,
            adopted=True,
            last_written=values_to_json(values),
        )
    )
    opening = datetime.combine(values.effective, time(12), tzinfo=ZoneInfo(tenant.timezone))
    await session.execute(
        delete(LicenseChange).where(
            LicenseChange.company_id == company.id, LicenseChange.source == ChangeSource.adopted.value
        )
    )
    session.add(
        LicenseChange(
            tenant_id=tenant.id,
            company_id=company.id,
            sequence=OPENING_SEQUENCE,
            license_count=int(values.quantity - values.less_included),
            effective_at=opening,
            received_at=opening,
            status=ChangeStatus.accepted.value,
            source=ChangeSource.adopted.value,
        )
    )
    return line.id


async def company_changed(
    session: AsyncSession,
    *,
    tenant: Tenant,
    company: Company,
    actor: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    reason: str,
    status_reason: str,
    now: datetime,
) -> None:
    """The one way a change to what a company is billed is recorded: whether billing applies is settled (its status
    timeline), the change is audited, and a reconcile is scheduled when one is wanted (`reconcile_wanted`)."""
    await settle_billing(session, tenant=tenant, company=company, now=now, reason=status_reason)
    await record_audit(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action=action,
        object_type="company",
        object_id=company.external_id,
        before=before,
        after=after,
    )
    await schedule_if_wanted(session, tenant=tenant, company=company, reason=reason, at=now)


async def edit_billing(
    session: AsyncSession, *, tenant: Tenant, company: Company, body: BillingUpdate, actor: str, now: datetime
) -> None:
    """ "Edit Billing": enable or disable, override price/cost (null = the product default). A price or cost applies
    from the company's next period (DESIGN §5)."""

    def billing() -> dict[str, Any]:
        return {
            "enabled": company.billing_enabled,
            "unit_price": company.unit_price_override,
            "unit_cost": company.unit_cost_override,
        }

    before = billing()
    if body.enabled is not None:
        company.billing_enabled = body.enabled
    if present(body, "unit_price"):
        company.unit_price_override = body.unit_price
    if present(body, "unit_cost"):
        company.unit_cost_override = body.unit_cost
    after = billing()
    changed = [k for k in after if after[k] != before[k]]
    if not changed:
        return
    priced = bool({"unit_price", "unit_cost"} & set(changed))
    if priced:
        session.add(
            PriceSetting(
                tenant_id=tenant.id,
                company_id=company.id,
                set_at=now,
                unit_price=company.unit_price_override,
                unit_cost=company.unit_cost_override,
                source="company",
            )
        )
    await company_changed(
        session,
        tenant=tenant,
        company=company,
        actor=actor,
        action="company.billing_changed",
        before={k: before[k] for k in changed},
        after={k: after[k] for k in changed},
        reason="price_change" if priced else "billing_enabled",
        status_reason="billing_changed",
        now=now,
    )


async def settle_billing(
    session: AsyncSession, *, tenant: Tenant, company: Company, now: datetime, reason: str
) -> None:
    """Record whether billing applies now (enabled, mapped, not deleted). When it starts while an adopted line already
    bills the current period, billing counts from that period's start, at the adopted line's price (the line billed
    it in advance); the company's own price applies from the next period."""
    if billing_applies(company) == company.billing_active:
        return
    at = now
    if billing_applies(company):
        adopted = await _adopted_billing_now(session, tenant=tenant, company=company, now=now)
        if adopted is not None:
            period_start, values = adopted
            at = datetime.combine(period_start - timedelta(days=1), time(12), tzinfo=ZoneInfo(tenant.timezone))
            session.add_all(
                [
                    PriceSetting(
                        tenant_id=tenant.id,
                        company_id=company.id,
                        set_at=at,
                        unit_price=values.unit_price,
                        unit_cost=values.unit_cost,
                        source="adopted",
                    ),
                    PriceSetting(
                        tenant_id=tenant.id,
                        company_id=company.id,
                        set_at=now,
                        unit_price=company.unit_price_override,
                        unit_cost=company.unit_cost_override,
                        source="adopted_until_next_period",
                    ),
                ]
            )
    record_status(session, company, at=at, reason=reason)


async def _adopted_billing_now(
    session: AsyncSession, *, tenant: Tenant, company: Company, now: datetime
) -> tuple[date, LineValues] | None:
    """(the current period's first day, the adopted line's values) when an adopted line billed the current period."""
    target = await load_target(session, tenant=tenant, company=company, now=now)
    period = target.billing.schedule.period_containing(target.today)
    if period is None:
        return None
    for row in target.tracked:
        if row.adopted and row.written is not None and row.written.bills(period.start):
            return period.start, row.written
    return None


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
    tenant: Tenant | None = None,
    loaded: bool = False,
) -> CompanyRead:
    tenant = tenant or await session.get(Tenant, company.tenant_id)
    assert tenant is not None  # noqa: S101 (a company's tenant exists: foreign key)
    if not loaded:
        product = await session.get(BillingProduct, company.tenant_id)
        state = await session.get(SyncState, company.id)
        base = await current_base(session, company.id, company.cw_agreement_id)
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
        sync=CompanySyncSummary(**summary(tenant, company, state)),
    )
