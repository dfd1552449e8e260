"""The CW request budget is one per tenant across processes on PostgreSQL: two processes (two engines, two budget
registries) sending as fast as they can stay together within the limit in every window."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.budget import SharedBudgets
from app.db.session import create_engine
from tests.conftest import TenantFactory


@pytest.mark.parametrize("limit", [10, 40])  # 40: grants are reserved two at a time, and some expire unused
async def test_two_processes_share_one_budget(
    database_url: str, engine: AsyncEngine, make_tenant: TenantFactory, limit: int
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the shared budget is PostgreSQL's; SQLite runs one process with the in-process budget")
    tenant = await make_tenant("Busy MSP")
    other = create_engine(database_url)  # the second process's engine
    window = 1.0  # counted per second to keep the test short
    registries = [SharedBudgets(e, per_minute=int(limit * 60 / window), window=window) for e in (engine, other)]
    granted: list[float] = []

    async def send(registry: SharedBudgets, count: int, *, pause_every: int) -> None:
        budget = registry.for_tenant(tenant.tenant_id)
        for i in range(count):
            await budget.acquire()
            granted.append(time.monotonic())
            if i % pause_every == pause_every - 1:
                await asyncio.sleep(1.1)  # reserved grants expire unused meanwhile

    total = 2 * limit
    started = time.monotonic()
    await asyncio.gather(
        send(registries[0], total // 2, pause_every=limit), send(registries[1], total // 2, pause_every=limit + 7)
    )
    elapsed = time.monotonic() - started
    await other.dispose()
    granted.sort()
    busiest = max(sum(1 for t in granted if start <= t < start + window) for start in granted)
    assert busiest <= limit  # never more than the limit in any window, across both processes
    assert elapsed >= window  # and they did wait for each other
