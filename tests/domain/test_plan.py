"""The reconcile planner, on its own: worked examples, and properties over generated histories and days."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.billing import (
    Billing,
    DecreasePolicy,
    Prices,
    PriceSetting,
    ProrationMode,
    Schedule,
    Status,
    StatusChange,
    Term,
)
from app.domain.history import Change, History
from app.domain.markers import Kind, Marker, company_key
from app.domain.periods import BillingCycle
from app.domain.plan import Line, LineValues, Operation, OpKind, Plan, Situation, frontier, plan, simulate

KEY = company_key("3f1c2a9e-0000-4000-8000-000000000001")
START = date(2026, 1, 1)
AGREEMENT = 17


def situation(
    changes: Sequence[tuple[date, int, int]],
    today: date,
    *,
    price: str = "3.00",
    mode: ProrationMode = ProrationMode.line,
    started: date = START,
    overwrite: bool = False,
    next_invoice: date | None = None,
) -> Situation:
    billing = Billing(
        history=History(Change(d, s, c) for d, s, c in changes),
        prices=Prices([PriceSetting(START - timedelta(days=30), 1, False, Decimal(price), Decimal("1.00"))]),
        status=Status([StatusChange(started, 1, True)]),
        schedule=Schedule([Term(START, AGREEMENT, BillingCycle.monthly, START)]),
        mode=mode,
        policy=DecreasePolicy.no_credit,
        currency="USD",
    )
    return Situation(
        billing=billing,
        key=KEY,
        today=today,
        product_text="Vendor EDR",
        overwrite_drift=overwrite,
        next_invoice={AGREEMENT: next_invoice} if next_invoice else {},
    )


def by_marker(lines: Sequence[Line]) -> dict[str, LineValues]:
    return {str(line.marker): line.current for line in lines if line.current is not None}


def marker(kind: Kind, first: date, second: date | None = None) -> str:
    return str(Marker(KEY, kind, first, second))


# ---------------------------------------------------------------------------------------------------- examples
def test_a_new_company_gets_its_proration_and_the_next_periods_base() -> None:
    # Billing starts 16 Nov with 9 licenses (counted since 1 Nov): 9 × 3.00 × 15/30 for November, 9 × 3.00 from Dec.
    result = plan(situation([(date(2026, 11, 1), 1, 9)], date(2026, 11, 16), started=date(2026, 11, 16)), [])
    assert [(op.kind, op.marker.kind) for op in result.operations] == [
        (OpKind.create, Kind.proration),
        (OpKind.create, Kind.base),
    ]
    proration, base = (op.values for op in result.operations)
    assert (proration.quantity, proration.unit_price) == (Decimal(1), Decimal("13.50"))
    assert (proration.effective, proration.cancelled) == (date(2026, 12, 1), date(2026, 12, 31))
    assert (base.quantity, base.unit_price, base.effective, base.cancelled) == (
        Decimal(9),
        Decimal("3.00"),
        date(2026, 12, 1),
        None,
    )


def test_a_change_patches_the_open_lines_and_ends_the_running_base() -> None:
    before = situation([(START, 1, 1)], date(2026, 11, 3))
    lines = simulate([], plan(before, []).operations)
    assert marker(Kind.base, date(2026, 12, 1)) in by_marker(lines)
    # A month on, the December base line runs; a change on 16 Dec must leave December's billing as it was.
    later = situation([(START, 1, 1), (date(2026, 12, 16), 2, 9)], date(2026, 12, 16))
    result = plan(later, lines)
    changes = {(op.kind, op.marker.kind): op for op in result.operations}
    assert changes[(OpKind.patch, Kind.base)].changes == {"cancelled": date(2026, 12, 31)}  # ends before January
    assert changes[(OpKind.create, Kind.base)].values.quantity == Decimal(9)  # January's line
    assert changes[(OpKind.create, Kind.proration)].values.unit_price == Decimal("12.39")  # 8 × 3.00 × 16/31
    assert plan(later, simulate(lines, result.operations)).empty


def test_a_hand_edit_is_held_under_hold_and_written_over_when_asked() -> None:
    today = date(2026, 11, 20)
    s = situation([(START, 1, 1), (date(2026, 11, 16), 2, 9)], today)
    lines = simulate([], plan(s, []).operations)
    edited = [
        dataclasses.replace(line, current=line.current.replace(quantity=Decimal(42)))  # someone fixed it in CW
        if line.marker.kind is Kind.base and line.current is not None
        else line
        for line in lines
    ]
    s2 = situation([(START, 1, 1), (date(2026, 11, 16), 2, 5)], today)
    held = plan(s2, edited)
    assert all(op.marker.kind is not Kind.base for op in held.operations)
    assert [d.marker.kind for d in held.drifts] == [Kind.base]
    assert "quantity 9 → 42" in held.drifts[0].describe()
    written = plan(dataclasses.replace(s2, overwrite_drift=True), edited)
    base_ops = [op for op in written.operations if op.marker.kind is Kind.base]
    assert [op.changes for op in base_ops] == [{"quantity": Decimal(5)}]


def test_a_create_whose_answer_was_lost_and_that_cw_does_not_have_is_created_again() -> None:
    s = situation([(START, 1, 4)], date(2026, 11, 20), started=date(2026, 11, 1))
    first = plan(s, [])
    base = next(op for op in first.operations if op.marker.kind is Kind.base)
    lost = Line(base.marker, AGREEMENT, None, None, None)  # create pending, nothing found by its marker
    assert [(op.kind, op.marker) for op in plan(s, [lost]).operations] == [
        (op.kind, op.marker) for op in first.operations
    ]
    assert (OpKind.create, base.marker) in [(op.kind, op.marker) for op in plan(s, [lost]).operations]


def test_a_frozen_proration_line_is_never_changed_a_catch_up_carries_the_difference() -> None:
    november_change = [(START, 1, 1), (date(2026, 11, 16), 2, 9)]
    lines = simulate([], plan(situation(november_change, date(2026, 11, 20)), []).operations)
    # 5 December: a late delivery says 9 → 5 from 25 November. November's proration line is frozen (December began).
    late = situation([*november_change, (date(2026, 11, 25), 3, 5)], date(2026, 12, 5))
    result = plan(late, lines)
    touched = {str(op.marker) for op in result.operations}
    assert marker(Kind.proration, date(2026, 11, 1)) not in touched
    catch_up = next(op for op in result.operations if op.marker.kind is Kind.catch_up)
    # November owes 3.00 × (8 × 9 + 4 × 6) / 30 = 9.60 above B; its line billed 12.00: −2.40 on January's invoice.
    assert catch_up.values.unit_price == Decimal("-2.40")
    assert (catch_up.values.effective, catch_up.values.cancelled) == (date(2027, 1, 1), date(2027, 1, 31))
    assert catch_up.marker == Marker(KEY, Kind.catch_up, date(2026, 11, 1), date(2027, 1, 1))
    # December's base line billed 9 in advance, B was 5: −12.00, also with January.
    december = next(
        op for op in result.operations if op.marker == Marker(KEY, Kind.catch_up, date(2026, 12, 1), date(2027, 1, 1))
    )
    assert december.values.unit_price == Decimal("-12.00")


def test_an_invoice_shown_ahead_freezes_the_next_period_early() -> None:
    s = situation([(START, 1, 1)], date(2026, 11, 20))
    lines = simulate([], plan(s, []).operations)
    ahead = situation([(START, 1, 1), (date(2026, 11, 25), 2, 3)], date(2026, 11, 26), next_invoice=date(2027, 1, 1))
    f = frontier(ahead)
    assert f is not None
    assert f.start == date(2027, 1, 1)  # December's invoice exists: its lines are frozen
    result = plan(ahead, lines)
    current = {str(line.marker): line for line in lines}
    assert not any(touches_the_frozen(op, f.start, current) for op in result.operations)
    # November's proration and December's base are caught up with January: 2 × 3.00 × 6/30 and 2 × 3.00.
    catch_ups = sorted(op.values.unit_price for op in result.operations if op.marker.kind is Kind.catch_up)
    assert catch_ups == [Decimal("1.20"), Decimal("6.00")]


# ---------------------------------------------------------------------------------------------------- properties
@st.composite
def histories(draw: st.DrawFn) -> list[tuple[date, int, int]]:
    days = st.dates(START, START + timedelta(days=200))
    raw = draw(st.lists(st.tuples(days, st.integers(0, 40)), min_size=1, max_size=10))
    return [(day, sequence, count) for sequence, (day, count) in enumerate(raw)]


def touches_the_frozen(op: Operation, f_start: date, lines: dict[str, Line]) -> bool:
    """Whether the operation changes what a line bills for a period an invoice may already cover (before F)."""
    if op.kind is OpKind.create:
        return op.values.effective < f_start and op.marker.kind is not Kind.delta
    line = lines[str(op.marker)]
    assert line.current is not None
    if op.marker.kind is Kind.base:
        if line.current.effective >= f_start:
            return False  # a line for a period not billed yet
        return set(op.changes) != {"cancelled"} or op.values.cancelled != f_start - timedelta(days=1)
    if op.marker.kind is Kind.delta:
        return line.current.cancelled is not None and line.current.cancelled < f_start - timedelta(days=1)
    return line.current.effective < f_start


@settings(max_examples=250, deadline=None)
@given(
    history=histories(),
    steps=st.lists(st.integers(1, 45), min_size=1, max_size=8),
    mode=st.sampled_from([ProrationMode.line, ProrationMode.none, ProrationMode.native]),
)
def test_planning_again_after_the_operations_finds_nothing_and_frozen_lines_stay(
    history: list[tuple[date, int, int]], steps: list[int], mode: ProrationMode
) -> None:
    today = START
    lines: list[Line] = []
    for step in steps:
        today += timedelta(days=step)
        known = [c for c in history if c[0] <= today + timedelta(days=30)]  # the history as far as it is known
        s = situation(known, today, mode=mode)
        result = plan(s, lines)
        f = frontier(s)
        assert f is not None
        current = {str(line.marker): line for line in lines}
        for op in result.operations:
            assert not touches_the_frozen(op, f.start, current), (op, f)
        lines = simulate(lines, result.operations)
        assert plan(s, lines).empty


@settings(max_examples=150, deadline=None)
@given(history=histories(), first=st.integers(5, 150), later=st.integers(1, 60), pick=st.integers(0, 50))
def test_a_hand_edited_line_is_never_written_under_hold(
    history: list[tuple[date, int, int]], first: int, later: int, pick: int
) -> None:
    today = START + timedelta(days=first)
    lines = simulate([], plan(situation(history, today), []).operations)
    if not lines:
        return
    victim = lines[pick % len(lines)]
    assert victim.current is not None
    edited = [
        dataclasses.replace(line, current=line.current.replace(unit_price=line.current.unit_price + Decimal("0.37")))
        if line is victim and line.current is not None
        else line
        for line in lines
    ]
    result: Plan = plan(situation(history, today + timedelta(days=later)), edited)
    assert all(not (op.marker == victim.marker and op.agreement_id == victim.agreement_id) for op in result.operations)
    assert any(d.marker == victim.marker for d in result.drifts)
