"""The one business clock: what "now" is for billing days, periods, scheduling and leases.

In production it is the real time. `PIN_NOW` (dev and demos) starts it at a fixed moment from which it runs on with
real time; tests and the demo move it with `set` / `advance` (a frozen clock only moves when told), and the in-process
sandbox reads the same clock, so the service and "ConnectWise" agree on the date. Security checks (token expiry,
webhook timestamps) use the real time, never this clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware moment")
        self._base = start.astimezone(UTC) if start is not None else None
        self._since = time.monotonic()
        self._frozen = frozen

    @classmethod
    def real(cls) -> Clock:
        return cls()

    @classmethod
    def for_settings(cls, pin_now: datetime | None) -> Clock:
        """The process's business clock: real time, or `PIN_NOW`'s moment running on."""
        return cls(pin_now) if pin_now is not None else cls.real()

    @classmethod
    def virtual(cls, start: datetime) -> Clock:
        """A clock that stands still until it is moved (tests, simulations)."""
        return cls(start, frozen=True)

    @property
    def is_real(self) -> bool:
        return self._base is None

    def now(self) -> datetime:
        if self._base is None:
            return datetime.now(UTC)
        if self._frozen:
            return self._base
        return self._base + timedelta(seconds=time.monotonic() - self._since)

    def __call__(self) -> datetime:
        return self.now()

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware moment")
        self._base = moment.astimezone(UTC)
        self._since = time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)

    def freeze(self, moment: datetime) -> None:
        """Stand still at `moment` until moved again (tests, simulations)."""
        self.set(moment)
        self._frozen = True
