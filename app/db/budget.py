"""The CW request budget shared by every process on one PostgreSQL database (DESIGN §7: N workers must not send N
times a tenant's CW limit).

The same rule as the in-process budget (`app/connectwise/budget.py`), kept in the database: at most `limit` requests
in any `window` seconds, a sliding log of grants per tenant. Taking a slot is one short transaction: a per-tenant
advisory lock orders the processes, then one statement drops grants older than the window, counts the rest and
records a new grant if there is room — on the database's clock, so processes whose clocks differ agree. When the
window is full the caller sleeps until its oldest grant leaves it. SQLite keeps the in-process budget: it runs one
process.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_TAKE = text(
    """
    WITH pruned AS (
        DELETE FROM cw_request_grant
        WHERE tenant_id = :tenant_id AND granted_at <= clock_timestamp() - make_interval(secs => :window)
    ), recent AS (
        SELECT count(*) AS used, min(granted_at) AS oldest FROM cw_request_grant
        WHERE tenant_id = :tenant_id AND granted_at > clock_timestamp() - make_interval(secs => :window)
    ), granted AS (
        INSERT INTO cw_request_grant (tenant_id, granted_at)
        SELECT :tenant_id, clock_timestamp() FROM recent WHERE used < :limit
        RETURNING granted_at
    )
    SELECT (SELECT count(*) FROM granted) AS taken,
           EXTRACT(EPOCH FROM (SELECT oldest FROM recent) + make_interval(secs => :window) - clock_timestamp()) AS wait
    """
)


class SharedBudget:
    def __init__(
        self,
        engine: AsyncEngine,
        tenant_id: str,
        *,
        limit: int,
        window: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._key = zlib.crc32(f"cwbs-budget:{tenant_id}".encode()) - 2**31  # a signed 32-bit advisory lock key
        self._params = {"tenant_id": tenant_id, "limit": limit, "window": window}
        self._sleep = sleep
        self.waited = 0.0

    async def acquire(self) -> None:
        while True:
            async with self._engine.begin() as conn:
                await conn.execute(_LOCK, {"key": self._key})
                taken, wait = (await conn.execute(_TAKE, self._params)).one()
            if taken:
                return
            delay = max(float(wait or 0), 0.001)
            self.waited += delay
            await self._sleep(delay)


class SharedBudgets:
    """Per-tenant budgets of `per_minute` requests, shared through PostgreSQL. `window` counts the same rate in
    shorter windows (benchmarks, against a sandbox counting that way)."""

    def __init__(self, engine: AsyncEngine, per_minute: int, *, window: float = 60.0) -> None:
        self.limit = max(1, round(per_minute * window / 60))
        # A window a sixtieth longer, as the in-process budget keeps it: CW counts a call when it arrives, we when we
        # send it.
        self.window = window * 61 / 60
        self._engine = engine
        self._budgets: dict[str, SharedBudget] = {}

    def for_tenant(self, tenant_id: str) -> SharedBudget:
        budget = self._budgets.get(tenant_id)
        if budget is None:
            budget = self._budgets[tenant_id] = SharedBudget(
                self._engine, tenant_id, limit=self.limit, window=self.window
            )
        return budget


__all__ = ["SharedBudget", "SharedBudgets"]
