"""One sync worker in a process of its own, for `bench.run`'s full reconcile with several workers:
`python -m bench.worker_process DATABASE_URL PER_MINUTE WINDOW WORKER_ID` works until nothing is due and prints
`{"started": …, "finished": …}` (wall-clock seconds). Keys come from the parent's environment (bench.fixtures)."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from app.db.budget import SharedBudgets
from app.settings import Environment
from app.sync.worker import Worker
from bench.fixtures import NOW, app_for, bench_settings


async def main() -> None:
    url, per_minute, window, worker_id = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    # Dev mode only for what the standalone sandbox needs: an http:// site on loopback.
    settings = bench_settings(url, cw_requests_per_minute=per_minute).model_copy(
        update={"app_env": Environment.dev, "cw_allow_private_sites": True, "cw_sandbox": False}
    )
    ctx = app_for(settings).state.ctx
    ctx.budgets = SharedBudgets(ctx.engine, per_minute, window=window)
    ctx.clock.freeze(NOW)
    worker = Worker(ctx, worker_id=worker_id, full_reconcile_every=None, batch_size=100, concurrency=8)
    started = time.time()
    handled = await worker.drain()
    finished = time.time()
    await ctx.aclose()
    await ctx.engine.dispose()
    print(json.dumps({"started": started, "finished": finished, "handled": handled}))


if __name__ == "__main__":
    asyncio.run(main())
