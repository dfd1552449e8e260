"""The reconcile planner: what CW should hold for a company, and the exact operations that get it there.

`desired_additions()` turns the ledger and settings into the additions CW must hold (DESIGN.md §5):
  * the base line always: current quantity, unit price and cost, lessIncluded 0;
  * `line` mode: one proration line per company and period (quantity 1, unit price = the period's net amount,
    dated over the next period so it is billed exactly once);
  * `native` mode: one delta line per stretch of added seats, dated from the change day to its end;
  * `none`: the base line only.
`plan()` compares that with what CW holds and with what we last wrote there: an addition whose managed fields
differ from our last write was edited by hand (drift) and, under the `hold` policy, is left alone and reported.
Re-running `plan()` after its operations succeeded yields no operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from app.domain.money import format_money
from app.domain.periods import BillingCycle, Period, next_period, period_containing
from app.domain.proration import (
    CountChange,
    DecreasePolicy,
    PeriodCharge,
    ProrationMode,
    charge_description,
    format_day_range,
    native_layers,
    period_charge,
)

MANAGED_FIELDS = (
    "quantity",
    "unit_price",
    "unit_cost",
    "less_included",
    "effective_date",
    "cancelled_date",
    "invoice_description",
)


class Role(StrEnum):
    base = "base"
    proration = "proration"
    delta = "delta"


@dataclass(frozen=True, slots=True)
class AdditionFields:
    """The fields of an agreement addition this service manages."""

    quantity: Decimal
    unit_price: Decimal
    unit_cost: Decimal
    less_included: Decimal = Decimal(0)
    effective_date: date | None = None
    cancelled_date: date | None = None
    invoice_description: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MANAGED_FIELDS}

    def differences(self, other: Mapping[str, Any], *, only: Sequence[str] = MANAGED_FIELDS) -> dict[str, Any]:
        """The fields (among `only`) where `other` holds something else than this."""
        mine = self.as_dict()
        return {name: mine[name] for name in only if name in other and not _same(mine[name], other[name])}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        try:
            return Decimal(str(a)) == Decimal(str(b))
        except (ArithmeticError, ValueError, TypeError):  # an unparsable value simply differs
            return False
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class DesiredAddition:
    marker: str
    role: Role
    fields: AdditionFields
    # Fields CW must hold but that are never changed after the create (history belongs to CW).
    create_only: tuple[str, ...] = ()
    period_start: date | None = None


@dataclass(frozen=True, slots=True)
class ActualAddition:
    """An addition we track, with what CW holds now (`current`, None if CW no longer has it) and what we last
    wrote (`last_written`, None for an adopted addition we have not written yet)."""

    marker: str
    role: Role
    cw_addition_id: int | None
    current: Mapping[str, Any] | None
    last_written: Mapping[str, Any] | None


class OpKind(StrEnum):
    create = "create"
    patch = "patch"
    zero = "zero"  # a line that no longer bills anything: quantity 0 (kept for the history, never deleted)


@dataclass(frozen=True, slots=True)
class Operation:
    kind: OpKind
    marker: str
    role: Role
    cw_addition_id: int | None
    changes: Mapping[str, Any]
    fields: AdditionFields


@dataclass(frozen=True, slots=True)
class Drift:
    marker: str
    role: Role
    cw_addition_id: int | None
    expected: Mapping[str, Any]
    found: Mapping[str, Any] | None

    def describe(self) -> str:
        if self.found is None:
            return f"{self.role} addition {self.cw_addition_id} is missing from ConnectWise"
        parts = [f"{k} {self.expected[k]} → {self.found.get(k)}" for k in self.expected]
        return f"{self.role} addition {self.cw_addition_id} was edited in ConnectWise: " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Plan:
    operations: tuple[Operation, ...]
    drifts: tuple[Drift, ...] = ()
    held: tuple[str, ...] = field(default=())  # markers not written because of drift under `hold`

    @property
    def empty(self) -> bool:
        return not self.operations


@dataclass(frozen=True, slots=True)
class BillingInputs:
    cycle: BillingCycle
    anchor: date
    today: date
    mode: ProrationMode
    policy: DecreasePolicy
    currency: str
    unit_price: Decimal
    unit_cost: Decimal
    product_description: str
    license_count: int
    changes: tuple[CountChange, ...]
    opening_count: int
    marker_prefix: str  # e.g. "cwbs:<company hex>:"

    @property
    def period(self) -> Period:
        return period_containing(self.today, cycle=self.cycle, anchor=self.anchor)

    @property
    def next_period(self) -> Period:
        return next_period(self.period, cycle=self.cycle, anchor=self.anchor)

    def charge(self) -> PeriodCharge:
        return period_charge(
            period=self.period,
            changes=self.changes,
            opening_count=self.opening_count,
            unit_price=self.unit_price,
            unit_cost=self.unit_cost,
            policy=self.policy,
            currency=self.currency,
        )


def replace_inputs(inputs: BillingInputs, **changes: Any) -> BillingInputs:
    return dataclasses.replace(inputs, **changes)


def base_marker(prefix: str) -> str:
    return prefix + "base"


def proration_marker(prefix: str, period: Period) -> str:
    return f"{prefix}p{period.start:%Y%m%d}"


def delta_marker(prefix: str, start: date, end: date) -> str:
    return f"{prefix}d{start:%y%m%d}{end:%y%m%d}"


def desired_additions(inputs: BillingInputs) -> tuple[DesiredAddition, ...]:
    period = inputs.period
    base = DesiredAddition(
        marker=base_marker(inputs.marker_prefix),
        role=Role.base,
        fields=AdditionFields(
            quantity=Decimal(inputs.license_count),
            unit_price=inputs.unit_price,
            unit_cost=inputs.unit_cost,
            effective_date=period.start,
            invoice_description=inputs.product_description,
        ),
        create_only=("effective_date", "invoice_description"),
    )
    wanted = [base]
    if inputs.mode is ProrationMode.line:
        charge = inputs.charge()
        if charge.amount != 0:
            following = inputs.next_period
            wanted.append(
                DesiredAddition(
                    marker=proration_marker(inputs.marker_prefix, period),
                    role=Role.proration,
                    fields=AdditionFields(
                        quantity=Decimal(1),
                        unit_price=charge.amount,
                        unit_cost=charge.cost_amount,
                        effective_date=following.start,
                        cancelled_date=following.end,
                        invoice_description=f"{inputs.product_description}: {charge_description(charge)}"[:6000],
                    ),
                    period_start=period.start,
                )
            )
    elif inputs.mode is ProrationMode.native:
        merged: dict[tuple[date, date], int] = {}
        for layer in native_layers(period, inputs.changes, inputs.opening_count):
            merged[(layer.start, layer.end)] = merged.get((layer.start, layer.end), 0) + layer.quantity
        for (start, end), quantity in sorted(merged.items()):
            wanted.append(
                DesiredAddition(
                    marker=delta_marker(inputs.marker_prefix, start, end),
                    role=Role.delta,
                    fields=AdditionFields(
                        quantity=Decimal(quantity),
                        unit_price=inputs.unit_price,
                        unit_cost=inputs.unit_cost,
                        effective_date=start,
                        cancelled_date=end,
                        invoice_description=(
                            f"{inputs.product_description}: +{quantity} licenses "
                            f"({format_day_range(start, end)}, prorated by ConnectWise)"
                        ),
                    ),
                    period_start=period.start,
                )
            )
    return tuple(wanted)


def native_expected_amount(inputs: BillingInputs) -> Decimal:
    """What CW's own proration should bill for the delta lines (shown to the MSP; CW does the arithmetic)."""
    period = inputs.period
    total = Decimal(0)
    for layer in native_layers(period, inputs.changes, inputs.opening_count):
        total += Decimal(layer.quantity) * inputs.unit_price * layer.days / period.days
    return total.quantize(Decimal("0.01"))


def plan(desired: Sequence[DesiredAddition], actual: Sequence[ActualAddition], *, overwrite_drift: bool) -> Plan:
    by_marker = {a.marker: a for a in actual}
    operations: list[Operation] = []
    drifts: list[Drift] = []
    held: list[str] = []
    for want in desired:
        have = by_marker.get(want.marker)
        managed = [f for f in MANAGED_FIELDS if f not in want.create_only]
        if have is None or (have.cw_addition_id is None and have.current is None):
            operations.append(
                Operation(OpKind.create, want.marker, want.role, None, want.fields.as_dict(), want.fields)
            )
            continue
        if have.current is None:  # we had it, CW no longer does
            drifts.append(Drift(want.marker, want.role, have.cw_addition_id, {}, None))
            if overwrite_drift:
                operations.append(
                    Operation(OpKind.create, want.marker, want.role, None, want.fields.as_dict(), want.fields)
                )
            else:
                held.append(want.marker)
            continue
        if have.last_written is not None:
            edited = {
                k: v
                for k, v in have.last_written.items()
                if k in managed and k in have.current and not _same(v, have.current[k])
            }
            if edited:
                drifts.append(
                    Drift(want.marker, want.role, have.cw_addition_id, edited, {k: have.current.get(k) for k in edited})
                )
                if not overwrite_drift:
                    held.append(want.marker)
                    continue
        changes = want.fields.differences(have.current, only=managed)
        if changes:
            operations.append(
                Operation(OpKind.patch, want.marker, want.role, have.cw_addition_id, changes, want.fields)
            )
    wanted = {w.marker for w in desired}
    for have in actual:
        if have.marker in wanted or have.role is Role.base or have.current is None:
            continue
        if have.current.get("quantity") not in (0, Decimal(0)):
            zero = AdditionFields(
                quantity=Decimal(0),
                unit_price=Decimal(str(have.current.get("unit_price", 0))),
                unit_cost=Decimal(str(have.current.get("unit_cost", 0))),
            )
            operations.append(
                Operation(OpKind.zero, have.marker, have.role, have.cw_addition_id, {"quantity": Decimal(0)}, zero)
            )
    return Plan(tuple(operations), tuple(drifts), tuple(held))


def describe_change(
    *,
    agreement: str,
    before: int,
    after: int,
    charge: PeriodCharge | None,
    currency: str,
    unit_price: Decimal,
    mode: ProrationMode,
) -> str:
    """The preview's sentence: "Licenses 1 → 9 will be applied to agreement 'Managed Services' …"."""
    text = (
        f"Licenses {before} → {after} will be applied to agreement '{agreement}': the base line becomes "
        f"{after} × {format_money(unit_price, currency)}"
    )
    if mode is ProrationMode.line and charge is not None and charge.amount != 0:
        text += (
            f"; a proration line of {format_money(charge.amount, currency)} is billed on the next invoice "
            f"({charge_description(charge)})"
        )
    elif mode is ProrationMode.native:
        text += "; ConnectWise prorates the added licenses on its own (the agreement's prorate setting)"
    elif mode is ProrationMode.none:
        text += " from the next billing period; nothing is prorated"
    return text + "."
