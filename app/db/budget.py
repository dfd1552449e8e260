"""The CW request budget shared by every process on one PostgreSQL database (DESIGN §7: N workers must not send N
times a tenant's CW limit).

The same rule as the in-process budget (`app/connectwise/budget.py`) — at most `limit` requests in any `window`
seconds — kept in the database as a sliding log of grants per tenant, on the database's clock (processes whose
clocks differ agree). A process reserves a few grants at a time (one short transaction: a per-tenant advisory lock
orders the processes, then one statement drops old grants, counts the rest and records as many new ones as fit) and
must use each within `hold` seconds, or drop it. A grant is recorded at the end of its hold and counted over
`window + hold`, so however the held grants are spent, no window of `window` seconds holds more than `limit`
requests. When the log is full the caller sleeps until its oldest grant leaves it. SQLite keeps the in-process
budget: it runs one process.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_RESERVE = text(
    """
    WITH pruned AS (
        DELETE FROM cw_request_grant
        WHERE tenant_id = :tenant_id AND granted_at <= clock_timestamp() - make_interval(secs => :span)
    ), recent AS (
        SELECT count(*) AS used, min(granted_at) AS oldest FROM cw_request_grant
        WHERE tenant_id = :tenant_id AND granted_at > clock_timestamp() - make_interval(secs => :span)
    ), granted AS (
        INSERT INTO cw_request_grant (tenant_id, granted_at)
        SELECT :tenant_id, clock_timestamp() + make_interval(secs => :hold)
        FROM recent, generate_series(1, GREATEST(LEAST(:chunk, :limit - recent.used), 0))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM granted) AS taken,
           EXTRACT(EPOCH FROM (SELECT oldest FROM recent) + make_interval(secs => :span) - clock_timestamp()) AS wait
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
        chunk: int,
        hold: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._key = zlib.crc32(f"cwbs-budget:{tenant_id}".encode()) - 2**31  # a signed 32-bit advisory lock key
        self._params = {"tenant_id": tenant_id, "limit": limit, "span": window + hold, "hold": hold, "chunk": chunk}
        self._hold = hold
        self._sleep = sleep
        self._clock = clock
        self._held: deque[float] = deque()  # the local deadlines of grants reserved and not used yet
        self._lock = asyncio.Lock()
        self.waited = 0.0

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._held and self._held[0] <= now:
                    self._held.popleft()  # not used in time: dropped (it stays counted, so nothing is overspent)
                if self._held:
                    self._held.popleft()
                    return
                async with self._engine.begin() as conn:
                    await conn.execute(_LOCK, {"key": self._key})
                    taken, wait = (await conn.execute(_RESERVE, self._params)).one()
                deadline = self._clock() + self._hold * 0.9  # a margin for the time the answer took
                self._held.extend([deadline] * int(taken))
                if not taken:
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
        self.chunk = max(1, min(10, self.limit // 20))  # reserved at once: a twentieth of the limit, at most 10
        self._engine = engine
        self._budgets: dict[str, SharedBudget] = {}

    def for_tenant(self, tenant_id: str) -> SharedBudget:
        budget = self._budgets.get(tenant_id)
        if budget is None:
            budget = self._budgets[tenant_id] = SharedBudget(
                self._engine, tenant_id, limit=self.limit, window=self.window, chunk=self.chunk
            )
        return budget
