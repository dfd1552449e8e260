"""A per-tenant request budget: at most `limit` requests in any `window` seconds (a sliding log).

Callers wait for a slot; they cannot exceed the budget. The clock and sleep are injectable so tests can run
thousands of requests in virtual time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol


class Budget(Protocol):
    """What the CW client waits on before every request."""

    async def acquire(self) -> None: ...


class Budgets(Protocol):
    """One budget per tenant."""

    def for_tenant(self, tenant_id: str) -> Budget: ...


class RequestBudget:
    def __init__(
        self,
        limit: int,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if limit < 1:
            raise ValueError("a request budget needs a limit of at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._granted and now - self._granted[0] >= self.window:
                    self._granted.popleft()
                if len(self._granted) < self.limit:
                    self._granted.append(now)
                    return
                # At least a millisecond: a remainder that float rounding leaves near zero must not spin the loop.
                delay = max(self.window - (now - self._granted[0]), 0.001)
                self.waited += delay
                await self._sleep(delay)


class BudgetRegistry:
    """One budget per tenant for this process (requests/minute), counted per minute as CW counts them; `window`
    counts the same rate in shorter windows (benchmarks, against a sandbox counting the same way)."""

    def __init__(
        self,
        per_minute: int,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[str, RequestBudget] = {}

    def for_tenant(self, tenant_id: str) -> RequestBudget:
        budget = self._budgets.get(tenant_id)
        if budget is None:
            # A window a sixtieth longer (61 s for a minute): CW counts a call when it arrives, we when we send it, so
            # a call sent exactly a window after the first of a full one could still land inside CW's window.
            limit = max(1, round(self.per_minute * self.window / 60))
            budget = self._budgets[tenant_id] = RequestBudget(
                limit, window=self.window * 61 / 60, clock=self._clock, sleep=self._sleep
            )
        return budget
