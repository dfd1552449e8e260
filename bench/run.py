"""All benchmarks, each against a baseline measured in the same run: `python -m bench.run`.

Prints a table and writes bench/results/latest.json. PostgreSQL parts run when BENCH_POSTGRES_URL (default
postgresql+asyncpg://postgres@127.0.0.1:5432/cwbs_bench) is reachable; they are skipped, and said so, otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvloop

from app.connectwise.budget import BudgetRegistry
from app.connectwise.sandbox.app import Sandbox
from app.security.webhooks import sign
from app.sync.worker import Worker
from bench.fixtures import (
    ENCRYPTION_KEY,
    NOW,
    SIGNING_KEY,
    app_for,
    bench_settings,
    big_tenant,
    database_size,
    fresh_database,
    sqlite_url,
    store_and_apply,
)
from bench.load import encode_post, run_load

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/cwbs_bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def _postgres_available() -> bool:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(make_url(PG_URL).set(database="postgres"))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------------- ingest
class Server:
    """uvicorn in its own process on loopback, as in production (one process)."""

    def __init__(self, target: str, env: dict[str, str], *, factory: bool) -> None:
        self.port = _free_port()
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
        ] + (["--factory"] if factory else [])
        self.process = subprocess.Popen(  # noqa: S603 (our own server command)
            args,
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait(self) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    await http.get(self.url + "/healthz")
                    return
                await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


INGEST_COMPANIES = 1000


def _deliveries(
    tenant_id: str, secret: str, count: int, *, start: int, companies: int = INGEST_COMPANIES
) -> list[tuple[bytes, dict[str, str]]]:
    stamp = int(datetime.now(UTC).timestamp())
    out = []
    for i in range(start, start + count):
        company, sequence = i % companies, i // companies + 2  # the fleet starts at sequence 1
        body = json.dumps(
            {
                "type": "license.count_changed",
                "data": {"company_id": f"c-{company}", "license_count": 1 + (i % 50), "sequence": sequence},
            }
        ).encode()
        webhook_id = f"bench-{i}"
        out.append(
            (
                body,
                {
                    "webhook-id": webhook_id,
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": sign(secret=secret, webhook_id=webhook_id, timestamp=stamp, body=body),
                    "content-type": "application/json",
                },
            )
        )
    return out


# Requests per measured segment, by concurrency; every level is measured in ROUNDS segments per server.
LEVELS = {1: 400, 8: 2000, 32: 4000}
ROUNDS = 7


async def bench_ingest(url: str, label: str) -> dict[str, Any]:
    """Deliveries for 1,000 mapped, billing-enabled companies: each one is recorded, applied and schedules a
    reconcile — the path every license change of a configured MSP takes (the worker is off, so only intake runs).

    Both servers run side by side and the load alternates between them in short segments (bare, service, service,
    bare, …), so a slow spell of this shared VM lands on both: the ratio is the median of the ratios of segments
    measured back to back, the throughput of each the median of its segments, the latencies those of all of them.
    """
    await fresh_database(url)
    settings = bench_settings(url)
    app = app_for(settings)
    ctx = app.state.ctx
    tenant = (await big_tenant(ctx, None, companies=INGEST_COMPANIES, in_sync=False)).tenant
    await ctx.aclose()
    await ctx.engine.dispose()
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": url,
        "JWT_SIGNING_KEY": SIGNING_KEY,
        "ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "RUN_WORKER": "false",
        "CW_SANDBOX": "false",
    }
    servers = {
        "bare": Server("bench.bare:app", env, factory=False),
        "service": Server("app.main:create_app", env, factory=True),
    }
    offset = 0

    def batch(count: int) -> list[tuple[bytes, dict[str, str]]]:
        nonlocal offset
        offset += count
        return _deliveries(tenant.tenant_id, tenant.webhook_secret, count, start=offset - count)

    results: dict[str, Any] = {"bare": {}, "service": {}, "database": label, "rounds": ROUNDS}
    try:
        endpoints = {}
        for name, server in servers.items():
            await server.wait()
            endpoints[name] = f"{server.url}/webhooks/portal/{tenant.tenant_id}"
            await _segment(endpoints[name], batch(200), 8)  # warm: connections, caches, prepared statements
        for concurrency, count in LEVELS.items():
            segments: dict[str, list[_Segment]] = {"bare": [], "service": []}
            for round_ in range(ROUNDS):
                for name in ("bare", "service") if round_ % 2 == 0 else ("service", "bare"):
                    segments[name].append(await _segment(endpoints[name], batch(count), concurrency))
            failed = sum(s.errors for measured in segments.values() for s in measured)
            if failed:  # throughput of failing requests means nothing
                raise RuntimeError(f"{failed} requests at {concurrency} connections were not answered 200/202")
            ratios = [s.rps / b.rps for s, b in zip(segments["service"], segments["bare"], strict=True)]
            for name, measured in segments.items():
                results[name][str(concurrency)] = _summary(measured)
            results["service"][str(concurrency)]["ratio_to_bare"] = round(statistics.median(ratios), 3)
            results["service"][str(concurrency)]["ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    finally:
        for server in servers.values():
            server.stop()
    return results


@dataclass
class _Segment:
    rps: float
    latencies_s: list[float]
    errors: int


async def _segment(url: str, requests: list[tuple[bytes, dict[str, str]]], concurrency: int) -> _Segment:
    wire = [encode_post(url, body, headers) for body, headers in requests]
    result = await run_load(url, wire, concurrency)
    ok = sum(n for status, n in result.statuses.items() if status in (200, 202))
    return _Segment(len(requests) / result.elapsed_s, result.latencies_s, len(requests) - ok)


def _summary(segments: list[_Segment]) -> dict[str, Any]:
    latencies = [x for s in segments for x in s.latencies_s]
    return {
        "requests": sum(len(s.latencies_s) for s in segments),
        "rps": round(statistics.median(s.rps for s in segments), 1),
        "rps_segments": [round(s.rps, 1) for s in segments],
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
        "errors": sum(s.errors for s in segments),
    }


# ---------------------------------------------------------------------------------------------------- CW economy
async def _economy() -> dict[str, Any]:
    """CW calls per change, steady state and burst, vs. the naive read-agreement/read-additions/write per change."""
    url = sqlite_url()
    await fresh_database(url)
    sandbox = Sandbox()
    app = app_for(bench_settings(url), sandbox)
    ctx = app.state.ctx
    big = await big_tenant(ctx, sandbox, companies=20, in_sync=True)
    ctx.clock.freeze(NOW)
    worker = Worker(ctx, full_reconcile_every=None)

    async def change(company: int, count: int, sequence: int, day: int) -> None:
        await store_and_apply(
            ctx,
            big.tenant.tenant_id,
            {
                "type": "license.count_changed",
                "data": {
                    "company_id": f"c-{company}",
                    "license_count": count,
                    "sequence": sequence,
                    "effective_at": datetime(2026, 11, day, 10, tzinfo=UTC).isoformat(),
                },
            },
            webhook_id=f"e-{company}-{sequence}",
        )

    def calls() -> int:  # API calls; the codebase lookup is counted apart (once per tenant and hour)
        return sandbox.stats["requests"]

    # Steady state: single changes spread out, each synced before the next.
    before_calls, before_writes = calls(), sandbox.store.writes
    steady_changes = 0
    for company in range(10):
        for step in range(3):
            await change(company, 10 + company + step * 3, 2 + step, 5 + step * 6)
            await worker.drain()
            steady_changes += 1
    steady_calls, steady_writes = calls() - before_calls, sandbox.store.writes - before_writes
    # Burst: 50 changes to one company within a second, then the worker runs.
    before_calls, before_writes = calls(), sandbox.store.writes
    for sequence in range(2, 52):
        await change(15, 10 + sequence, sequence, 16)
    await worker.drain()
    burst_calls, burst_writes = calls() - before_calls, sandbox.store.writes - before_writes
    await ctx.aclose()
    await ctx.engine.dispose()
    naive_per_change = 3  # GET agreement, GET additions, PATCH/POST the addition
    return {
        "codebase_lookups": sandbox.stats["companyinfo"],
        "steady": {
            "changes": steady_changes,
            "calls": steady_calls,
            "writes": steady_writes,
            "calls_per_change": round(steady_calls / steady_changes, 2),
            "naive_calls_per_change": naive_per_change,
        },
        "burst": {
            "changes": 50,
            "calls": burst_calls,
            "writes": burst_writes,
            "naive_calls": 50 * naive_per_change,
            "naive_writes": 50,
        },
    }


# ---------------------------------------------------------------------------------------------------- full reconcile
BUDGET_WINDOW_S = 15.0


async def bench_full_reconcile(url: str, companies: int, per_minute: int) -> dict[str, Any]:
    """Every company reconciled once under a request budget that both the service and the sandbox count in
    15-second windows (the same rate as `per_minute`). Counted per minute, a run this short spends the first
    minute's allowance at once and beats "calls ÷ rate" (0.92× in a run), which is then no floor at all; in
    15-second windows it can beat it by at most that first window. Shorter windows leave the budget's margin (a
    sixtieth of the window) under the event loop's jitter between taking a slot and the sandbox counting the call:
    at 1 s and at 5 s, an occasional 429."""
    await fresh_database(url)
    sandbox = Sandbox(rate_limit_per_minute=per_minute, rate_window=BUDGET_WINDOW_S)
    app = app_for(bench_settings(url, cw_requests_per_minute=per_minute), sandbox)
    ctx = app.state.ctx
    ctx.budgets = BudgetRegistry(per_minute, window=BUDGET_WINDOW_S)
    await big_tenant(ctx, sandbox, companies=companies, in_sync=True)
    ctx.clock.freeze(NOW)
    worker = Worker(ctx, full_reconcile_every=None, batch_size=100, concurrency=8)
    await worker.schedule_full_reconcile()
    calls_before = sandbox.stats["requests"] + sandbox.stats["companyinfo"]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    await worker.drain()
    elapsed = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    calls = sandbox.stats["requests"] + sandbox.stats["companyinfo"] - calls_before
    floor = calls / (per_minute / 60)
    result = {
        "companies": companies,
        "budget_per_minute": per_minute,
        "calls": calls,
        "calls_per_company": round(calls / companies, 3),
        "elapsed_s": round(elapsed, 1),
        "budget_floor_s": round(floor, 1),
        "ratio_to_floor": round(elapsed / floor, 2),
        "throttled_429": sandbox.stats["throttled"],
        "peak_rss_mb": round(rss_after / 1024, 1),
        "peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        "writes": sandbox.store.writes - companies,
    }
    await ctx.aclose()
    await ctx.engine.dispose()
    return result


# ---------------------------------------------------------------------------------------------------- scale
async def bench_scale(url: str, sizes: list[int]) -> list[dict[str, Any]]:
    """Per-delivery ingest cost and per-company reconcile cost as the tenant grows."""
    from app.services.sync_schedule import schedule_sync

    out = []
    for size in sizes:
        await fresh_database(url)
        sandbox = Sandbox()
        app = app_for(bench_settings(url, cw_requests_per_minute=100_000), sandbox)
        ctx = app.state.ctx
        started = time.perf_counter()
        big = await big_tenant(ctx, sandbox, companies=size, in_sync=True)
        setup = time.perf_counter() - started
        deliveries = _deliveries(big.tenant.tenant_id, big.tenant.webhook_secret, 500, start=size * 10, companies=size)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            endpoint = f"/webhooks/portal/{big.tenant.tenant_id}"
            started = time.perf_counter()
            for body, headers in deliveries:
                response = await http.post(endpoint, content=body, headers=headers)
                assert response.status_code in (200, 202), response.text
            ingest = (time.perf_counter() - started) / len(deliveries)
        sample = min(size, 500)
        from sqlalchemy import select

        from app.db.models import Company

        async with ctx.sessionmaker() as session, session.begin():
            ids = list(await session.scalars(select(Company.id).limit(sample)))
            for company_id in ids:
                await schedule_sync(
                    session, tenant_id=big.tenant.tenant_id, company_id=company_id, reason="bench", at=NOW
                )
        ctx.clock.freeze(NOW)
        worker = Worker(
            ctx,
            full_reconcile_every=None,
            batch_size=100,
            concurrency=1 if url.startswith("sqlite") else 8,
        )
        started = time.perf_counter()
        await worker.drain()
        reconcile = (time.perf_counter() - started) / sample
        out.append(
            {
                "companies": size,
                "ledger_rows": size + len(deliveries),
                "db_bytes": await database_size(ctx),
                "setup_s": round(setup, 1),
                "ingest_ms_per_delivery": round(ingest * 1000, 2),
                "reconcile_ms_per_company": round(reconcile * 1000, 2),
            }
        )
        await ctx.aclose()
        await ctx.engine.dispose()
    return out


def _table(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']}", ""]
    for ingest in results["ingest"]:
        lines.append(
            f"Webhook ingest ({ingest['database']}; baseline: bare FastAPI endpoint, same server; medians of "
            f"{ingest['rounds']} interleaved segments)"
        )
        lines.append(
            f"  {'conns':>5} {'bare rps':>9} {'service rps':>12} {'ratio':>6} {'(range)':>13} "
            f"{'p50 ms':>7} {'p99 ms':>7}"
        )
        for level in LEVELS:
            bare, svc = ingest["bare"][str(level)], ingest["service"][str(level)]
            low, high = svc["ratio_range"]
            lines.append(
                f"  {level:>5} {bare['rps']:>9} {svc['rps']:>12} {svc['ratio_to_bare']:>6} {f'{low}–{high}':>13} "
                f"{svc['p50_ms']:>7} {svc['p99_ms']:>7}"
            )
        lines.append("")
    eco = results["economy"]
    lines.append("CW calls per license change (baseline: naive read agreement + read additions + write per change)")
    lines.append(
        f"  steady state: {eco['steady']['calls_per_change']} calls/change "
        f"(naive {eco['steady']['naive_calls_per_change']}), {eco['steady']['writes']} writes for "
        f"{eco['steady']['changes']} changes"
    )
    lines.append(
        f"  burst of 50:  {eco['burst']['calls']} calls, {eco['burst']['writes']} writes "
        f"(naive {eco['burst']['naive_calls']} calls, {eco['burst']['naive_writes']} writes)"
    )
    lines.append(
        f"  plus {eco['codebase_lookups']} codebase lookup(s) in the whole run (cached per tenant for an hour)"
    )
    lines.append("")
    full = results["full_reconcile"]
    lines.append(f"Full reconcile ({full['database']}; baseline: the floor set by the request budget)")
    lines.append(
        f"  {full['companies']} companies, budget {full['budget_per_minute']}/min: {full['elapsed_s']} s vs "
        f"floor {full['budget_floor_s']} s (ratio {full['ratio_to_floor']}), {full['calls_per_company']} "
        f"calls/company, {full['throttled_429']} × 429, peak RSS {full['peak_rss_mb']} MB"
    )
    lines.append("")
    lines.append(f"Scale ({results['scale_database']})")
    lines.append(
        f"  {'companies':>9} {'ledger rows':>11} {'DB MB':>7} {'ingest ms/delivery':>19} {'reconcile ms/company':>21}"
    )
    for row in results["scale"]:
        lines.append(
            f"  {row['companies']:>9} {row['ledger_rows']:>11} {row['db_bytes'] / 2**20:>7.1f} "
            f"{row['ingest_ms_per_delivery']:>19} {row['reconcile_ms_per_company']:>21}"
        )
    return "\n".join(lines)


async def main(quick: bool) -> int:
    started = time.perf_counter()
    has_pg = await _postgres_available()
    results: dict[str, Any] = {
        "machine": f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"{datetime.now(UTC):%Y-%m-%d}",
        "ingest": [],
    }
    if quick:
        LEVELS.update({1: 100, 8: 400, 32: 800})
    results["ingest"].append(await bench_ingest(sqlite_url(), "SQLite"))
    if has_pg:
        results["ingest"].append(await bench_ingest(PG_URL, "PostgreSQL"))
    results["economy"] = await _economy()
    reconcile_url = PG_URL if has_pg else sqlite_url()
    companies = 1_000 if quick else 10_000
    results["full_reconcile"] = await bench_full_reconcile(reconcile_url, companies, 6_000)
    results["full_reconcile"]["database"] = "PostgreSQL" if has_pg else "SQLite"
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    results["scale"] = await bench_scale(reconcile_url, sizes)
    results["scale_database"] = "PostgreSQL" if has_pg else "SQLite"
    results["total_s"] = round(time.perf_counter() - started, 1)
    results["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"\nTotal {results['total_s']} s; written to {RESULTS / 'latest.json'}")
    if not has_pg:
        print("PostgreSQL was not reachable: its ingest run was skipped and SQLite was used for the rest.")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    # uvloop, as the server runs: the load generator must not add latency of its own to the closed loop it measures.
    raise SystemExit(uvloop.run(main(parser.parse_args().quick)))
