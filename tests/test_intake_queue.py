"""Group commit of webhook deliveries into the inbox: shared transactions, isolation of a bad delivery, rotation
between the check in the request and the commit, duplicates inside one batch, both stores giving the same answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.context import AppContext
from app.db.base import utcnow
from app.db.inbox import Entry, Stored, store_on_core, store_on_postgres
from app.db.models import Company, LicenseChange, Tenant, WebhookInbox
from app.services import intake_queue
from app.services.intake_queue import BatchWriter, OpenWriter, asyncpg_connect_args
from app.services.tenants import NewTenant, rotate_webhook_secret
from tests.conftest import TenantFactory
from tests.webhook_helpers import apply_deliveries, license_event, signed_headers


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> NewTenant:
    return await make_tenant("Batch MSP")


def wrapped_writer(queue: intake_queue.IntakeQueue, wrap: Callable[[BatchWriter], BatchWriter]) -> OpenWriter:
    """The queue's own way to the database, with each batch passed through `wrap` first (a failing or hanging
    database), injected through the queue's `open_writer` seam."""
    real = queue.open_writer

    @contextlib.asynccontextmanager
    async def open_writer() -> AsyncIterator[BatchWriter]:
        async with real() as write:
            yield wrap(write)

    return open_writer


def pg_dsn(ctx: AppContext) -> str:
    return ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _batch_count(ctx: AppContext) -> float:
    return ctx.metrics.registry.get_sample_value("cwbs_intake_batch_size_count") or 0.0


async def _post(client: httpx.AsyncClient, tenant: NewTenant, payload: dict[str, Any], webhook_id: str) -> int:
    body = json.dumps(payload)
    headers = signed_headers(tenant.webhook_secret, body, webhook_id=webhook_id)
    return (await client.post(f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=headers)).status_code


async def test_concurrent_deliveries_share_transactions_and_every_one_lands(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    # 20 companies, 3 changes each, all sent at once and in scrambled order.
    sends = [(f"c-{c}", seq, 10 * c + seq) for seq in (3, 1, 2) for c in range(20)]
    statuses = await asyncio.gather(
        *(
            _post(client, tenant, license_event(company, count, sequence=seq), f"{company}-{seq}")
            for company, seq, count in sends
        )
    )
    assert statuses == [202] * 60
    assert _batch_count(ctx) < 60  # fewer transactions than deliveries
    assert await apply_deliveries(ctx) == 60
    async with ctx.sessionmaker() as s:
        companies = {c.external_id: c for c in await s.scalars(select(Company))}
        history = list(await s.scalars(select(LicenseChange)))
    assert len(history) == 60
    # Whatever order they arrived in, the highest sequence of each company (all dated now) is in force.
    assert {ext: c.license_count for ext, c in companies.items()} == {f"c-{c}": 10 * c + 3 for c in range(20)}


async def test_a_delivery_the_database_refuses_fails_alone(
    app: FastAPI, tenant: NewTenant, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned_batches: list[int] = []

    def refusing(write: BatchWriter) -> BatchWriter:
        async def store(entries: list[Entry]) -> list[Stored]:
            if any(e.webhook_id == "poison" for e in entries):
                poisoned_batches.append(len(entries))
                raise RuntimeError("the database refused this batch")
            return await write(entries)

        return store

    ctx.intake.open_writer = wrapped_writer(ctx.intake, refusing)
    ids = [f"ok-{i}" for i in range(10)] + ["poison"]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # see the 500 as a client would
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert await _post(client, tenant, license_event("c-0", 1, sequence=1), "warm-up") == 202  # secrets cached
        statuses = await asyncio.gather(
            *(_post(client, tenant, license_event(f"c-{i}", 5, sequence=2), wid) for i, wid in enumerate(ids))
        )
    assert max(poisoned_batches) > 1  # it did share a batch with good deliveries, which still went through
    assert statuses == [202] * 10 + [500]
    async with ctx.sessionmaker() as s:
        recorded = set(await s.scalars(select(WebhookInbox.webhook_id)))
    assert recorded == {"warm-up", *ids[:10]}


@pytest.mark.parametrize("grace_hours", [0, 1])
async def test_a_rotation_after_the_request_check_is_seen_by_the_write(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext, grace_hours: int
) -> None:
    # The process has checked deliveries with the first secret and keeps it cached ...
    assert await _post(client, tenant, license_event("c-1", 1, sequence=1), "warm-up") == 202
    # ... when another process rotates it. The cache still accepts the old secret: the batch must see the rotation.
    async with ctx.sessionmaker() as s, s.begin():
        new_secret = await rotate_webhook_secret(
            s, box=ctx.secrets, tenant_id=tenant.tenant_id, grace=timedelta(hours=grace_hours)
        )
    old = await _post(client, tenant, license_event("c-1", 4, sequence=2), "old")
    assert old == (202 if grace_hours else 401)  # checked again against the secrets now valid
    assert (
        await _post(client, replace(tenant, webhook_secret=new_secret), license_event("c-1", 5, sequence=3), "new")
        == 202
    )
    async with ctx.sessionmaker() as s:
        recorded = set(await s.scalars(select(WebhookInbox.webhook_id)))
    assert recorded == {"warm-up", "new"} | ({"old"} if grace_hours else set())


async def test_a_delivery_whose_secrets_keep_rotating_is_refused_with_503(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    submissions: list[int] = []

    async def always_rotated(entry: Entry) -> Stored:
        submissions.append(entry.secrets_version)
        return Stored.recheck

    monkeypatch.setattr(ctx.intake, "submit", always_rotated)
    status = await _post(client, tenant, license_event("c-1", 2, sequence=2), "spinning")
    assert status == 503  # the sender retries later; it was checked against fresh secrets between attempts
    assert len(submissions) == 3
    async with ctx.sessionmaker() as s:
        assert list(await s.scalars(select(WebhookInbox.webhook_id))) == []


async def test_the_same_id_twice_in_one_batch_has_one_effect(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    first, second = license_event("c-9", 7, sequence=5), license_event("c-9", 8, sequence=6)
    statuses = await asyncio.gather(
        _post(client, tenant, first, "same"), _post(client, tenant, second, "same"), _post(client, tenant, first, "x")
    )
    assert sorted(statuses) == [200, 202, 202]
    await apply_deliveries(ctx)
    async with ctx.sessionmaker() as s:
        assert len(list(await s.scalars(select(LicenseChange).where(LicenseChange.webhook_id == "same")))) == 1


async def test_both_stores_answer_every_batch_alike(ctx: AppContext, make_tenant: TenantFactory) -> None:
    """PostgreSQL stores a batch in one statement of its own; the Core store applies the same rule. A batch with
    new deliveries, one already stored, one twice in the batch, a stale secrets version and an unknown tenant."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("the one-statement store is PostgreSQL's")
    a, b = await make_tenant("A"), await make_tenant("B")
    async with ctx.sessionmaker() as s, s.begin():
        version = (await s.get(Tenant, a.tenant_id)).secrets_version  # type: ignore[union-attr]

    def entry(tenant: str, webhook_id: str, v: int = version) -> Entry:
        payload = {"type": "company.deleted", "data": {"company_id": webhook_id}}
        return Entry(tenant, webhook_id, "company.deleted", utcnow(), json.dumps(payload), payload, v)

    def batch(prefix: str) -> list[Entry]:
        return [
            entry(a.tenant_id, f"{prefix}1"),
            entry(b.tenant_id, f"{prefix}1"),
            entry(a.tenant_id, "seen"),
            entry(a.tenant_id, f"{prefix}2"),
            entry(a.tenant_id, f"{prefix}2"),
            entry(a.tenant_id, f"{prefix}3", v=version + 7),
            entry("no-such-tenant", f"{prefix}4"),
        ]

    async with ctx.engine.connect() as conn:
        assert await store_on_core(conn, [entry(a.tenant_id, "seen")]) == [Stored.stored]
        core = await store_on_core(conn, batch("core"))
    raw = await asyncpg.connect(pg_dsn(ctx))
    try:
        function = await store_on_postgres(raw, batch("pg"))
    finally:
        await raw.close()
    expected = [
        Stored.stored,
        Stored.stored,
        Stored.duplicate,
        Stored.stored,
        Stored.duplicate,
        Stored.recheck,
        Stored.unknown_tenant,
    ]
    assert core == function == expected
    async with ctx.sessionmaker() as s:
        stored = sorted(await s.scalars(select(WebhookInbox.webhook_id)))
    assert stored == sorted(["seen", "core1", "core1", "core2", "pg1", "pg1", "pg2"])


async def test_a_connection_back_in_the_intake_pool_is_never_left_in_a_transaction(ctx: AppContext) -> None:
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("the intake pool is PostgreSQL's")
    raw = await asyncpg.connect(pg_dsn(ctx))
    try:
        await raw.execute("BEGIN")
        await intake_queue.keep_session(raw)
        assert not raw.is_in_transaction()
        await intake_queue.keep_session(raw)  # and one that is not in a transaction is left as it is
        assert await raw.fetchval("SELECT 1") == 1
    finally:
        await raw.close()


def test_the_intake_pool_connects_as_database_url_says() -> None:
    engine = create_async_engine(
        "postgresql+asyncpg://app:s3cret@db.internal:6432/billing?ssl=require&prepared_statement_cache_size=0"
    )
    assert asyncpg_connect_args(engine) == {
        "host": "db.internal",
        "port": 6432,
        "user": "app",
        "password": "s3cret",
        "database": "billing",
        "ssl": "require",
    }


async def test_a_second_batch_waits_until_it_is_as_large_as_the_one_in_the_database(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers; each batch is held in a fake database until released. A lone delivery goes at once; a writer
    that frees up while a batch of three is being written does not start one of two, but one of three."""
    written: list[list[str]] = []
    gates: dict[str, asyncio.Event] = {}

    async def held(batch: list[Entry]) -> list[Stored]:
        ids = [e.webhook_id for e in batch]
        written.append(ids)
        gate = gates.setdefault(ids[0], asyncio.Event())
        await gate.wait()
        return [Stored.stored for _ in batch]

    @contextlib.asynccontextmanager
    async def fake_database() -> AsyncIterator[BatchWriter]:
        yield held

    queue = intake_queue.IntakeQueue(ctx.engine, ctx.metrics, writers=2, open_writer=fake_database)

    def submit(webhook_id: str) -> asyncio.Task[Stored]:
        entry = Entry("t", webhook_id, "x", utcnow(), "{}", {"type": "x"}, 1)
        return asyncio.ensure_future(queue.submit(entry))

    async def settle() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    first = submit("a")
    await settle()
    assert written == [["a"]]  # alone: written at once
    second = [submit(f"b{i}") for i in range(3)]
    await settle()
    assert written == [["a"], ["b0", "b1", "b2"]]  # the second writer takes what arrived meanwhile
    third = [submit(f"c{i}") for i in range(2)]
    await settle()
    gates["a"].set()
    await settle()
    assert first.done()
    assert written == [["a"], ["b0", "b1", "b2"]]  # two pending, three in the database: it waits
    third.append(submit("c2"))
    await settle()
    assert written == [["a"], ["b0", "b1", "b2"], ["c0", "c1", "c2"]]
    for gate in ("b0", "c0"):
        gates.setdefault(gate, asyncio.Event()).set()
    results = await asyncio.gather(*second, *third)
    assert results == [Stored.stored] * 6
    await queue.aclose()


async def test_nothing_waits_without_bound_when_the_database_hangs(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    def hanging(write: BatchWriter) -> BatchWriter:
        async def store(entries: list[Entry]) -> list[Stored]:
            await release.wait()  # a database that stopped answering
            return await write(entries)

        return store

    ctx.intake.open_writer = wrapped_writer(ctx.intake, hanging)
    ctx.intake.wait_seconds, ctx.intake.max_pending = 0.3, 1

    async def post(webhook_id: str) -> httpx.Response:
        body = json.dumps(license_event("c-1", 2, sequence=int(webhook_id[-1])))
        headers = signed_headers(tenant.webhook_secret, body, webhook_id=webhook_id)
        return await client.post(f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=headers)

    first = asyncio.create_task(post("hang-1"))  # its batch is stuck in the database
    await asyncio.sleep(0.05)
    second = asyncio.create_task(post("hang-2"))  # waits for the next batch
    await asyncio.sleep(0.05)
    full = await post("hang-3")  # one is already waiting: refused at once
    assert (full.status_code, full.headers["retry-after"]) == (503, "5")
    timed_out = await first
    assert timed_out.status_code == 503  # answered within wait_seconds, not never
    assert "same webhook-id" in timed_out.json()["detail"]
    release.set()
    await second
    for _ in range(200):  # the stuck batch commits once the database answers again (however busy the machine)
        async with ctx.sessionmaker() as s:
            if await s.scalar(select(WebhookInbox.id).where(WebhookInbox.webhook_id == "hang-1")):
                break
        await asyncio.sleep(0.05)
    again = await post("hang-1")  # the sender's retry: the first delivery did land meanwhile
    assert again.status_code == 200
