"""A company's license history (DESIGN.md §5): every accepted change at its effective day, ties by sequence.

The count in force at the end of a day is the count of the change that comes last among those on or before that
day, ordered by (day, sequence): two changes on one day count only the higher sequence, and a change dated later
wins over an earlier one whatever their sequences. An opening count (an adopted ConnectWise line) is a change at
the line's effective day with sequence −1, so any change of that day overrides it. Nothing depends on the order in
which changes were learned: the history is a set.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

OPENING_SEQUENCE = -1
_LAST = 2**63  # above every sequence: "everything on this day"


@dataclass(frozen=True, slots=True, order=True)
class Change:
    day: date
    sequence: int
    count: int


@dataclass(frozen=True, slots=True)
class Stretch:
    """Days `start`..`end` (both included) at the end of which the count was `count`."""

    start: date
    end: date
    count: int

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


class History:
    def __init__(self, changes: Iterable[Change] = ()) -> None:
        self._changes = tuple(sorted(changes))
        self._keys = [(c.day, c.sequence) for c in self._changes]

    @property
    def changes(self) -> tuple[Change, ...]:
        return self._changes

    def __bool__(self) -> bool:
        return bool(self._changes)

    def count_on(self, day: date) -> int:
        """The count in force at the end of `day` (0 before the first change)."""
        index = bisect.bisect_right(self._keys, (day, _LAST))
        return self._changes[index - 1].count if index else 0

    def stretches(self, start: date, end: date) -> tuple[Stretch, ...]:
        """The days `start`..`end` cut where the count changes; together they cover every day once."""
        if end < start:
            return ()
        out: list[Stretch] = []
        cursor, current = start, self.count_on(start)
        for day in self._change_days(start + timedelta(days=1), end):
            count = self.count_on(day)
            if count != current:
                out.append(Stretch(cursor, day - timedelta(days=1), current))
                cursor, current = day, count
        out.append(Stretch(cursor, end, current))
        return tuple(out)

    def _change_days(self, start: date, end: date) -> Iterator[date]:
        first = bisect.bisect_left(self._keys, (start, -_LAST))
        seen: date | None = None
        for change in self._changes[first:]:
            if change.day > end:
                return
            if change.day != seen:
                seen = change.day
                yield change.day

    def next_change_after(self, day: date) -> date | None:
        """The first day after `day` on which some change takes effect (the worker comes back then)."""
        index = bisect.bisect_right(self._keys, (day, _LAST))
        return self._changes[index].day if index < len(self._changes) else None

    def count_before(self, day: date, sequence: int) -> int:
        """The count just before the change (day, sequence) took effect: what `previous_count` should say."""
        index = bisect.bisect_left(self._keys, (day, sequence))
        return self._changes[index - 1].count if index else 0
