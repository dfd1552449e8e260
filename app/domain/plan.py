"""The reconcile planner (DESIGN.md §5–§6): the lines ConnectWise must hold for a company, and the operations that
get it there. Pure: no I/O, no clock; everything comes in as values.

What CW bills, as this service counts it: a line bills a period of its agreement when it is active on the period's
first day (`effective ≤ start ≤ cancelled`), `(quantity − lessIncluded) × unitPrice`, rounded to the cent. The service
dates every line it writes on a period's first day (native mode's delta lines aside), so the agreement's prorate
switch never changes what its lines bill.

A line is **frozen** once an invoice covering it may exist: once the period it bills has started, or earlier when CW
already shows an invoice for that period. The first period none of whose lines are frozen is the **frontier** F.
For every period P from the first one billed through the current one:

* what P owes comes from `Billing.owed` (the license history, prices, status and schedule);
* frozen lines contribute what they bill: the base line that billed P, P's proration line once P+1 is frozen, and
  catch-ups for P billed with a frozen period;
* while P's proration line is not frozen it holds `owed(P) − B × price(P)` (line mode), native mode's delta lines
  the seats above B;
* whatever is left — a late or backdated change, a base that billed another B, a price it billed — goes on a
  **catch-up line** for P billed with F, explained.

The base line that bills F holds B(F) × price(F) on F's agreement, written now, so an invoice run on any day of F
bills B(F); a running base line that would bill F with other values is ended on the day before F (its own periods are
left as they were billed) and a new line starts on F's first day.

A line that has billed nothing yet (dated over F or later) and is no longer wanted — the company moved, a proration or
catch-up came to zero, a base slot lost to a running line that bills F as wanted — is deleted, so no invoice prints it
at zero; a line ended on the day before F is opened again when F wants its values back.

Before any write the line's values in CW are compared with what the service last wrote: a difference is drift (a
hand edit) and, under the `hold` policy, that line is not written and the drift is reported. A value the service sent
without learning the outcome is its own, not a hand edit. Planning again after the operations succeeded yields none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from app.domain.billing import Billing, PeriodOwed, ProrationMode, native_layers, periods_to_account
from app.domain.markers import Kind, Marker
from app.domain.money import decimal_text, round_money
from app.domain.periods import Period
from app.domain.texts import base_text, catch_up_text, delta_text, proration_text

MANAGED = ("quantity", "unit_price", "unit_cost", "less_included", "effective", "cancelled", "description")


@dataclass(frozen=True, slots=True)
class LineValues:
    """The fields of an addition this service manages."""

    quantity: Decimal
    unit_price: Decimal
    unit_cost: Decimal
    effective: date
    cancelled: date | None = None
    less_included: Decimal = Decimal(0)
    description: str | None = None

    def bills(self, period_start: date) -> bool:
        return self.effective <= period_start and (self.cancelled is None or self.cancelled >= period_start)

    def amount(self, currency: str) -> Decimal:
        return round_money((self.quantity - self.less_included) * self.unit_price, currency)

    def cost(self, currency: str) -> Decimal:
        return round_money((self.quantity - self.less_included) * self.unit_cost, currency)

    def differences(self, other: LineValues, *, fields: Iterable[str] = MANAGED) -> dict[str, Any]:
        """The fields (among `fields`) where `other` holds something else than this; values compared as values."""
        return {name: getattr(self, name) for name in fields if getattr(self, name) != getattr(other, name)}

    def replace(self, **changes: Any) -> LineValues:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Line:
    """A line the service tracks (created or adopted), as CW holds it now and as the service last wrote it."""

    marker: Marker
    agreement_id: int
    addition_id: int | None
    current: LineValues | None  # None: CW no longer has it (or a create whose outcome is unknown found nothing)
    written: LineValues | None  # None: never written (an adopted line's values are what CW held when adopted)
    uncertain: tuple[LineValues, ...] = ()  # writes whose outcome the service never learned
    adopted: bool = False

    @property
    def kind(self) -> Kind:
        return self.marker.kind

    @property
    def billed_values(self) -> LineValues | None:
        """What the line bills, as far as the service knows: what it wrote (hand edits are reported, not trusted)."""
        return self.written or self.current

    def drift(self, fields: Sequence[str] = MANAGED) -> dict[str, tuple[Any, Any]]:
        """Fields edited in CW since the service wrote them: {field: (written, found)}."""
        if self.current is None or self.written is None:
            return {}
        changed = self.written.differences(self.current, fields=fields)
        if changed and any(not u.differences(self.current, fields=fields) for u in self.uncertain):
            return {}  # CW holds a value the service sent without learning the outcome: its own write
        return {name: (getattr(self.written, name), getattr(self.current, name)) for name in changed}


class OpKind(StrEnum):
    create = "create"
    patch = "patch"
    delete = "delete"  # a line that never billed and is no longer wanted (an invoice must not print it at zero)


@dataclass(frozen=True, slots=True)
class Operation:
    kind: OpKind
    marker: Marker
    agreement_id: int
    addition_id: int | None
    values: LineValues  # the line's values after the operation (delete: what it held)
    changes: Mapping[str, Any]  # create: every field; patch: the fields that change; delete: none
    reason: str  # why, in a few words (the audit trail and the change set show it)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "line": self.marker.kind.value,
            "marker": str(self.marker),
            "agreement_id": self.agreement_id,
            "addition_id": self.addition_id,
            "reason": self.reason,
            "changes": {k: _json(v, k) for k, v in self.changes.items()},
        }


@dataclass(frozen=True, slots=True)
class Drift:
    marker: Marker
    agreement_id: int
    addition_id: int | None
    fields: Mapping[str, tuple[Any, Any]]  # field -> (written, found); empty with `missing`
    missing: bool = False
    frozen: bool = False

    def describe(self) -> str:
        what = f"{self.marker.kind.value} line {self.addition_id or str(self.marker)}"
        if self.missing:
            return f"{what} is missing from ConnectWise"
        parts = ", ".join(f"{k} {_json(w, k)} → {_json(f, k)}" for k, (w, f) in self.fields.items())
        return f"{what} was edited in ConnectWise: {parts}"


@dataclass(frozen=True, slots=True)
class PeriodAccount:
    """One period's money: what it owes, what frozen lines bill for it, and what the open lines carry."""

    owed: PeriodOwed
    frozen: Decimal  # billed by lines that can no longer change
    open: Decimal  # carried by lines still being written (proration, catch-up, deltas)
    lines: tuple[tuple[Marker, int, Decimal, bool], ...]  # (marker, agreement, amount for this period, frozen)

    @property
    def period(self) -> Period:
        return self.owed.period

    @property
    def settled(self) -> bool:
        return self.frozen + self.open == self.owed.owed


@dataclass(frozen=True, slots=True)
class Plan:
    operations: tuple[Operation, ...]
    drifts: tuple[Drift, ...] = ()
    held: tuple[Marker, ...] = ()  # lines not written because of drift under `hold`
    accounts: tuple[PeriodAccount, ...] = ()
    frontier: Period | None = None
    next_wakeup: date | None = None  # the first day on which the desired lines change without any new event

    @property
    def empty(self) -> bool:
        return not self.operations


@dataclass(frozen=True, slots=True)
class Situation:
    """What the planner needs besides the lines: the company's billing, the day, and what CW shows of invoices."""

    billing: Billing
    key: str  # the company's marker key
    today: date
    product_text: str
    # Per agreement: the first day of its next period not invoiced yet, as CW last showed it (invoicing ahead).
    next_invoice: Mapping[int, date] = field(default_factory=dict)
    overwrite_drift: bool = False
    label: str | None = None  # the portal company's name, for line texts on a shared agreement


# ---------------------------------------------------------------------------------------------------- planning
def frontier(situation: Situation) -> Period | None:
    """F: the first period none of whose lines is frozen — after the current one, or after what CW already shows
    invoiced."""
    schedule = situation.billing.schedule
    current = schedule.period_containing(situation.today)
    if current is None:
        first = schedule.terms[0].from_day if schedule else None
        return schedule.period_containing(first) if first and first > situation.today else None
    candidate = schedule.next_period(current)
    while candidate is not None:
        agreement = schedule.agreement_for(candidate)
        shown = situation.next_invoice.get(agreement) if agreement is not None else None
        if shown is None or shown <= candidate.start:
            return candidate
        candidate = schedule.next_period(candidate)
    return None


def plan(situation: Situation, lines: Sequence[Line]) -> Plan:
    billing = situation.billing
    currency = billing.currency
    frontier_period = frontier(situation)
    if frontier_period is None:
        return Plan(())
    f_start = frontier_period.start
    accounts: list[PeriodAccount] = []
    desired: list[tuple[Marker, int, LineValues, str]] = []  # (marker, agreement, values, reason)
    last_billed = frontier_period.start - timedelta(days=1)
    for period in periods_to_account(billing, through=last_billed):
        owed = billing.owed(period)
        following = billing.schedule.next_period(period)
        assert following is not None  # noqa: S101 (the frontier comes after every accounted period)
        home = _home(situation, following, period)
        contributions: list[tuple[Marker, int, Decimal, bool]] = []
        frozen_amount = frozen_cost = Decimal(0)
        for line in lines:
            values = line.billed_values
            if values is None:
                continue
            amount, cost, dated_over = _contribution(line, values, period, following, currency)
            if amount is None:
                continue
            if not billing.schedule.bills_on(line.agreement_id, dated_over):
                amount, cost = Decimal(0), Decimal(0)  # its agreement ended before that invoice: never billed
            is_frozen = dated_over < f_start
            contributions.append((line.marker, line.agreement_id, amount, is_frozen))
            if is_frozen:
                frozen_amount += amount
                frozen_cost += cost
        open_amount = open_cost = Decimal(0)
        if following.start >= f_start and home is not None:  # P's own lines are still open
            if billing.mode is ProrationMode.line and owed.prorated_amount:  # none: an unbilled one is deleted
                values = LineValues(
                    quantity=Decimal(1),
                    unit_price=owed.prorated_amount,
                    unit_cost=owed.prorated_cost,
                    effective=following.start,
                    cancelled=following.end,
                    description=proration_text(owed, situation.label),
                )
                desired.append((Marker(situation.key, Kind.proration, period.start), home, values, "proration"))
                open_amount, open_cost = owed.prorated_amount, owed.prorated_cost
            elif billing.mode is ProrationMode.native and period.contains(situation.today):
                agreement = owed.agreement_id or home
                for layer in native_layers(owed.billed_quantity, owed.stretches, owed.period):
                    values = LineValues(
                        quantity=Decimal(layer.quantity),
                        unit_price=owed.unit_price,
                        unit_cost=owed.unit_cost,
                        effective=layer.start,
                        cancelled=layer.end,
                        description=delta_text(
                            situation.product_text, layer.quantity, layer.start, layer.end, situation.label
                        ),
                    )
                    desired.append(
                        (Marker(situation.key, Kind.delta, layer.start, layer.end), agreement, values, "delta")
                    )
                    open_amount += _prorated(values, period, currency)
                    open_cost += round_money(values.quantity * values.unit_cost * layer.days / period.days, currency)
        gap = owed.owed - frozen_amount - open_amount
        cost_gap = owed.owed_cost - frozen_cost - open_cost
        catch_marker = Marker(situation.key, Kind.catch_up, period.start, f_start)
        catch_home = _home(situation, frontier_period, period)
        if catch_home is not None and gap:  # nothing left to catch up: an unbilled catch-up line is deleted
            existing = next(
                (x.current for x in lines if x.agreement_id == catch_home and x.marker == catch_marker and x.current),
                None,
            )
            text = (  # the day it was reported stays on the line while the amount does not change
                existing.description
                if existing is not None and existing.unit_price == gap and existing.description
                else catch_up_text(
                    owed, billed=frozen_amount + open_amount, reported=situation.today, label=situation.label
                )
            )
            values = LineValues(
                quantity=Decimal(1),
                unit_price=gap,
                unit_cost=cost_gap,
                effective=frontier_period.start,
                cancelled=frontier_period.end,
                description=text,
            )
            desired.append((catch_marker, catch_home, values, "catch-up"))
            open_amount += gap
        accounts.append(PeriodAccount(owed, frozen_amount, open_amount, tuple(contributions)))

    base = billing.base_for(frontier_period)
    agreement_f = billing.schedule.agreement_for(frontier_period)
    base_wanted = None
    if base is not None and agreement_f is not None:
        count, price = base
        base_wanted = LineValues(
            quantity=Decimal(count),
            unit_price=price.unit_price,
            unit_cost=price.unit_cost,
            effective=f_start,
            description=base_text(situation.product_text, situation.label),
        )
    operations, drifts, held = _converge(situation, lines, desired, base_wanted, agreement_f, frontier_period)
    return Plan(
        operations=tuple(operations),
        drifts=tuple(drifts),
        held=tuple(held),
        accounts=tuple(accounts),
        frontier=frontier_period,
        next_wakeup=billing.history.next_change_after(situation.today),
    )


def _home(situation: Situation, billed_with: Period, source: Period) -> int | None:
    """The agreement that bills a line dated over `billed_with` for `source`: the one billing `billed_with`, or — when
    billing has ended since — the last one that billed the company."""
    schedule = situation.billing.schedule
    agreement = schedule.agreement_for(billed_with)
    if agreement is not None:
        return agreement
    for term in reversed(schedule.terms):
        if term.from_day <= source.start and term.agreement_id is not None:
            return term.agreement_id
    return None


def _contribution(
    line: Line, values: LineValues, period: Period, following: Period, currency: str
) -> tuple[Decimal | None, Decimal, date]:
    """What the line bills for `period` (None: nothing), its cost, and the first day of the period it is billed
    with (which decides whether it is frozen)."""
    kind = line.kind
    if kind is Kind.base:
        if values.bills(period.start):
            return values.amount(currency), values.cost(currency), period.start
        return None, Decimal(0), period.start
    if kind is Kind.proration and line.marker.first == period.start:
        return values.amount(currency), values.cost(currency), values.effective
    if kind is Kind.catch_up and line.marker.first == period.start:
        return values.amount(currency), values.cost(currency), values.effective
    if kind is Kind.delta and period.contains(line.marker.first):
        return _prorated(values, period, currency), Decimal(0), following.start
    return None, Decimal(0), period.start


def _prorated(values: LineValues, period: Period, currency: str) -> Decimal:
    """What CW's proration bills for a delta line inside `period` (its days there, pro rata)."""
    end = min(values.cancelled or period.end, period.end)
    days = (end - max(values.effective, period.start)).days + 1
    if days <= 0:
        return Decimal(0)
    return round_money((values.quantity - values.less_included) * values.unit_price * days / period.days, currency)


# ---------------------------------------------------------------------------------------------------- converging
def _converge(
    situation: Situation,
    lines: Sequence[Line],
    desired: Sequence[tuple[Marker, int, LineValues, str]],
    base_wanted: LineValues | None,
    agreement_f: int | None,
    frontier_period: Period,
) -> tuple[list[Operation], list[Drift], list[Marker]]:
    f_start = frontier_period.start
    operations: list[Operation] = []
    drifts: list[Drift] = []
    held: list[Marker] = []
    reported: set[tuple[int, str]] = set()

    def blocked(line: Line) -> bool:
        """Report the line's drift once; True when it must not be written (hold policy)."""
        key = (line.agreement_id, str(line.marker))
        if line.current is None:
            if key not in reported:
                drifts.append(Drift(line.marker, line.agreement_id, line.addition_id, {}, missing=True))
                reported.add(key)
            return True
        edited = line.drift()
        if not edited:
            return False
        if key not in reported:
            drifts.append(Drift(line.marker, line.agreement_id, line.addition_id, edited))
            reported.add(key)
        if situation.overwrite_drift:
            return False
        held.append(line.marker)
        return True

    def write(line: Line | None, marker: Marker, agreement: int, values: LineValues, reason: str) -> None:
        if situation.billing.schedule.ended(agreement) is not None:
            return  # an agreement that ended in CW is never written to (it bills nothing more anyway)
        if line is None or line.addition_id is None or line.current is None:
            if line is not None and line.addition_id is not None and not situation.overwrite_drift:
                blocked(line)  # we had it and CW lost it: reported, recreated only when overwriting
                return
            operations.append(Operation(OpKind.create, marker, agreement, None, values, _fields(values), reason))
            return
        changes = values.differences(line.current)
        if not changes or blocked(line):
            return
        operations.append(Operation(OpKind.patch, marker, agreement, line.addition_id, values, changes, reason))

    def remove(line: Line, reason: str) -> None:
        """Delete a line that has not billed anything (dated over F or later) and is no longer wanted."""
        if line.addition_id is None or line.current is None or situation.billing.schedule.ended(line.agreement_id):
            return
        if line.adopted:  # the MSP's own line: kept, billing nothing
            if line.current.quantity != 0:
                write(line, line.marker, line.agreement_id, line.current.replace(quantity=Decimal(0)), reason)
            return
        if not blocked(line):
            op = Operation(OpKind.delete, line.marker, line.agreement_id, line.addition_id, line.current, {}, reason)
            operations.append(op)

    by_key = {(line.agreement_id, str(line.marker)): line for line in lines}
    wanted = {(agreement, str(marker)) for marker, agreement, _, _ in desired}
    for marker, agreement, values, reason in desired:
        write(by_key.get((agreement, str(marker))), marker, agreement, values, reason)
    # Open lines nobody wants any more (moved to another agreement, a layer that went away): never billed, deleted.
    for line in lines:
        key = (line.agreement_id, str(line.marker))
        if line.kind is Kind.base or key in wanted or line.current is None:
            continue
        if _dated_over(line) >= f_start:
            remove(line, "no longer billed")
    # Frozen lines are never written, but a hand edit on them is still reported.
    for line in lines:
        key = (line.agreement_id, str(line.marker))
        frozen = line.current is not None and line.kind is not Kind.base and _dated_over(line) < f_start
        if frozen and key not in reported and (edited := line.drift()):
            drifts.append(Drift(line.marker, line.agreement_id, line.addition_id, edited, frozen=True))
            reported.add(key)
    _converge_base(situation, lines, base_wanted, agreement_f, f_start, write, remove, blocked)
    return operations, drifts, held


def _dated_over(line: Line) -> date:
    values = line.billed_values or line.current
    assert values is not None  # noqa: S101 (callers pass lines with values)
    if line.kind is Kind.delta:
        return values.cancelled + timedelta(days=1) if values.cancelled else values.effective
    return values.effective


def _converge_base(
    situation: Situation,
    lines: Sequence[Line],
    wanted: LineValues | None,
    agreement_f: int | None,
    f_start: date,
    write: Any,
    remove: Any,
    blocked: Any,
) -> None:
    """The base line for F: keep a running line that already bills F as wanted, or end the running ones on the day
    before F and write the line that starts on F. A running line held for drift holds the whole change (two lines
    would otherwise bill F)."""
    day_before = f_start - timedelta(days=1)
    bases = [line for line in lines if line.kind is Kind.base and line.current is not None]
    # Running: billing F, or ended on the day before F by an earlier plan (a later change may want it back).
    running = [
        b
        for b in bases
        if b.current
        and b.current.effective < f_start
        and (b.current.bills(f_start) or b.current.cancelled == day_before)
    ]
    future = [b for b in bases if b.current and b.current.effective >= f_start]
    keep: Line | None = None
    slot: Line | None = None
    target: LineValues | None = None
    if wanted is not None and agreement_f is not None:
        billed_fields = ("quantity", "unit_price", "unit_cost", "less_included")
        same = [
            b
            for b in running
            if b.agreement_id == agreement_f
            and b.current is not None
            and not wanted.differences(b.current, fields=billed_fields)
        ]
        slot = next((b for b in future if b.agreement_id == agreement_f and b.marker.first == f_start), None)
        if same:
            keep, slot = same[0], None
            if keep.current is not None and keep.current.cancelled is not None:
                target = keep.current.replace(cancelled=None)  # billing F again, as wanted
        else:
            target = wanted
            if slot is not None and slot.current is not None:  # bill the wanted values; an adopted line keeps its text
                target = slot.current.replace(
                    quantity=wanted.quantity,
                    unit_price=wanted.unit_price,
                    unit_cost=wanted.unit_cost,
                    cancelled=None,
                    description=slot.current.description if slot.adopted else wanted.description,
                )
            keep = slot
    to_end = [line for line in running if line is not keep and line.current is not None]
    if any(blocked(line) for line in to_end):
        return  # reported (and held): F keeps billing what the hand-edited line says
    if target is not None and keep is not None and slot is None:
        write(keep, keep.marker, keep.agreement_id, target, "billing the next period again")
    elif target is not None and agreement_f is not None:
        write(slot, Marker(situation.key, Kind.base, f_start), agreement_f, target, "base for the next period")
    for line in to_end:
        assert line.current is not None  # noqa: S101 (filtered above)
        write(line, line.marker, line.agreement_id, line.current.replace(cancelled=day_before), "ended before F")
    for line in future:
        if line is not keep:
            remove(line, "no longer billed")


def _fields(values: LineValues) -> dict[str, Any]:
    return {name: getattr(values, name) for name in MANAGED}


def _json(value: Any, field: str) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(field, value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def simulate(lines: Sequence[Line], operations: Sequence[Operation]) -> list[Line]:
    """The lines as CW would hold them once the operations succeeded (previews, tests)."""
    result = {(line.agreement_id, str(line.marker)): line for line in lines}
    next_id = -1
    for op in operations:
        key = (op.agreement_id, str(op.marker))
        existing = result.get(key)
        if op.kind is OpKind.delete:
            result.pop(key, None)
            continue
        addition_id = op.addition_id if op.addition_id is not None else (existing.addition_id if existing else None)
        if addition_id is None:
            addition_id, next_id = next_id, next_id - 1
        result[key] = Line(
            op.marker, op.agreement_id, addition_id, op.values, op.values, adopted=bool(existing and existing.adopted)
        )
    return list(result.values())
