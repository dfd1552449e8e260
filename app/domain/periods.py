"""Billing periods from a ConnectWise agreement's billing cycle and bill start date (the anchor).

A period starts on the anchor's day of month every `months` months; an anchor on the 29th–31st clamps to the last
day of shorter months (and returns to the 31st in the months that have one). Periods are contiguous: every day
belongs to exactly one.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class BillingCycle(StrEnum):
    monthly = "Monthly"
    quarterly = "Quarterly"
    semiannual = "SemiAnnual"
    yearly = "Yearly"

    @property
    def months(self) -> int:
        return {"Monthly": 1, "Quarterly": 3, "SemiAnnual": 6, "Yearly": 12}[self.value]


class UnsupportedBillingCycleError(ValueError):
    """The agreement's cycle is not a recurring monthly-based cycle this service can prorate."""


def parse_cycle(name: str) -> BillingCycle:
    """Accept CW's `billingOptions` values and common cycle names (case and spacing insensitive)."""
    key = name.replace(" ", "").replace("-", "").lower()
    aliases = {
        "monthly": "Monthly",
        "quarterly": "Quarterly",
        "semiannual": "SemiAnnual",
        "semiannually": "SemiAnnual",
        "yearly": "Yearly",
        "annual": "Yearly",
        "annually": "Yearly",
    }
    if key not in aliases:
        raise UnsupportedBillingCycleError(f"billing cycle {name!r} is not Monthly, Quarterly, SemiAnnual or Yearly")
    return BillingCycle(aliases[key])


def _shift(anchor: date, months: int) -> date:
    """The anchor moved by whole months, its day clamped to the target month's length."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def days_from(self, day: date) -> int:
        """Days from `day` through the period's last day, `day` included."""
        return (self.end - day).days + 1


def period_index(day: date, *, cycle: BillingCycle, anchor: date) -> int:
    months = cycle.months
    # First guess from the calendar, then step to the period whose [start, next start) holds the day.
    k = ((day.year - anchor.year) * 12 + day.month - anchor.month) // months
    while _shift(anchor, k * months) > day:
        k -= 1
    while _shift(anchor, (k + 1) * months) <= day:
        k += 1
    return k


def period_at(index: int, *, cycle: BillingCycle, anchor: date) -> Period:
    start = _shift(anchor, index * cycle.months)
    end = _shift(anchor, (index + 1) * cycle.months) - timedelta(days=1)
    return Period(start=start, end=end)


def period_containing(day: date, *, cycle: BillingCycle, anchor: date) -> Period:
    return period_at(period_index(day, cycle=cycle, anchor=anchor), cycle=cycle, anchor=anchor)


def next_period(period: Period, *, cycle: BillingCycle, anchor: date) -> Period:
    return period_containing(period.end + timedelta(days=1), cycle=cycle, anchor=anchor)


def local_day(moment: datetime, timezone: str) -> date:
    """The calendar day of `moment` in the tenant's timezone ("which day did it change")."""
    if moment.tzinfo is None:
        raise ValueError("a moment must be timezone-aware")
    return moment.astimezone(ZoneInfo(timezone)).date()
