"""Group commit of webhook deliveries: shared transactions, isolation of a bad delivery, rotation between the check
in the request and the commit, duplicates inside one batch, and the `mark_due` rule applied in SQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.api.schemas.webhooks import LicenseCountChanged
from app.context import AppContext
from app.db.base import utcnow
from app.db.intake_store import Changes, CoreIntakeStore, DueRow, accept_batch_on_postgres
from app.db.models import Company, LicenseChange, SyncState, Tenant, WebhookInbox
from app.services import intake_queue, webhook_intake
from app.services.intake_queue import asyncpg_connect_args
from app.services.sync_schedule import mark_due
from app.services.tenants import NewTenant, rotate_webhook_secret
from app.services.webhook_intake import Delivery, batch_columns
from tests.conftest import TenantFactory
from tests.webhook_helpers import license_event, signed_headers


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> NewTenant:
    return await make_tenant("Batch MSP")


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
    async with ctx.sessionmaker() as s:
        companies = {c.external_id: c for c in await s.scalars(select(Company))}
        ledger = list(await s.scalars(select(LicenseChange)))
    assert len(ledger) == 60
    # Whatever order they were applied in, the newest sequence of each company is in force.
    assert {ext: (c.license_count, c.last_sequence) for ext, c in companies.items()} == {
        f"c-{c}": (10 * c + 3, 3) for c in range(20)
    }


async def test_a_delivery_the_database_refuses_fails_alone(
    app: FastAPI, tenant: NewTenant, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    poisoned_batches: list[int] = []

    def refusing(real: Any) -> Any:
        async def apply(conn: Any, batch: list[Any]) -> Any:
            if any(p.delivery.webhook_id == "poison" for p in batch):
                poisoned_batches.append(len(batch))
                raise RuntimeError("the database refused this batch")
            return await real(conn, batch)

        return apply

    for name in ("_apply_on_core", "_apply_on_postgres"):  # whichever this database uses
        monkeypatch.setattr(intake_queue, name, refusing(getattr(intake_queue, name)))
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

    async def always_rotated(delivery: Delivery, *, body: str, secrets_version: int) -> webhook_intake.IntakeResult:
        submissions.append(secrets_version)
        return webhook_intake.IntakeResult(False, intake_queue.RECHECK)

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
    async with ctx.sessionmaker() as s:
        assert len(list(await s.scalars(select(LicenseChange).where(LicenseChange.webhook_id == "same")))) == 1


STATUSES = ["in_sync", "pending", "retrying", "failed", "drift", "paused", "awaiting_approval"]


@pytest.mark.parametrize("store_kind", ["core", "function"])
@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("due", ["none", "earlier", "later"])
async def test_the_sql_mark_due_matches_the_python_rule(
    ctx: AppContext, tenant: NewTenant, status: str, due: str, store_kind: str
) -> None:
    _skip_function_off_postgres(ctx, store_kind)
    now = utcnow()
    due_at = {"none": None, "earlier": now - timedelta(hours=1), "later": now + timedelta(hours=1)}[due]
    company_id = await _mapped_company(ctx, tenant)
    async with ctx.sessionmaker() as s, s.begin():
        s.add(SyncState(company_id=company_id, tenant_id=tenant.tenant_id, status=status, generation=4, attempts=3))
        await s.flush()
        await s.execute(update(SyncState).values(due_at=due_at, reason="before"))
    async with ctx.sessionmaker() as s:
        expected = await s.get(SyncState, company_id)
        assert expected is not None
        mark_due(expected, reason="license_change", due=now, changes=2)
        want = (expected.status, expected.generation, expected.attempts, expected.reason, expected.due_at)
    await _two_changes_due(ctx, tenant, store_kind, company_id, now)
    async with ctx.sessionmaker() as s:
        got = await s.get(SyncState, company_id)
        assert got is not None
        assert (got.status, got.generation, got.attempts, got.reason, got.due_at) == want


@pytest.mark.parametrize("store_kind", ["core", "function"])
async def test_a_company_without_sync_state_gets_one_when_due(
    ctx: AppContext, tenant: NewTenant, store_kind: str
) -> None:
    _skip_function_off_postgres(ctx, store_kind)
    company_id = await _mapped_company(ctx, tenant)
    now = utcnow()
    await _two_changes_due(ctx, tenant, store_kind, company_id, now)
    async with ctx.sessionmaker() as s:
        got = await s.get(SyncState, company_id)
        assert got is not None
        assert (got.status, got.generation, got.attempts, got.due_at) == ("pending", 2, 0, now)


def _skip_function_off_postgres(ctx: AppContext, store_kind: str) -> None:
    if store_kind == "function" and ctx.engine.dialect.name != "postgresql":
        pytest.skip("the batch function is PostgreSQL's")


async def _mapped_company(ctx: AppContext, tenant: NewTenant) -> str:
    """A company whose license changes schedule a reconcile (billing on for it and its tenant, an agreement)."""
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(update(Tenant).where(Tenant.id == tenant.tenant_id).values(billing_enabled=True))
        company = Company(
            tenant_id=tenant.tenant_id,
            external_id="c-1",
            name="C",
            license_count=1,
            billing_enabled=True,
            cw_company_id=7,
            cw_agreement_id=70,
        )
        s.add(company)
    return company.id


async def _two_changes_due(ctx: AppContext, tenant: NewTenant, store_kind: str, company_id: str, now: Any) -> None:
    """Mark the company due for two changes: the Core statement directly, or two license changes through the
    function (which applies the same rule in its own SQL)."""
    if store_kind == "core":
        async with ctx.engine.begin() as conn:
            await CoreIntakeStore(conn).write(Changes(now=now, due=[DueRow(company_id, tenant.tenant_id, 2)]))
        return
    async with ctx.sessionmaker() as s:
        version = (await s.get(Tenant, tenant.tenant_id)).secrets_version  # type: ignore[union-attr]
    deliveries = [
        Delivery(tenant.tenant_id, f"w{seq}", LicenseCountChanged.model_validate(event), event)
        for seq in (2, 3)
        for event in [license_event("c-1", seq, sequence=seq)]
    ]
    raw = await asyncpg.connect(pg_dsn(ctx))
    try:
        columns = batch_columns((d, version, json.dumps(d.payload)) for d in deliveries)
        assert await accept_batch_on_postgres(raw, columns, now=now) == ["applied", "applied"]
    finally:
        await raw.close()


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

    async def held(batch: list[Any]) -> list[webhook_intake.IntakeResult]:
        ids = [p.delivery.webhook_id for p in batch]
        written.append(ids)
        gate = gates.setdefault(ids[0], asyncio.Event())
        await gate.wait()
        return [webhook_intake.IntakeResult(False, "applied") for _ in batch]

    @contextlib.asynccontextmanager
    async def fake_connect(self: intake_queue.IntakeQueue) -> Any:
        yield held

    monkeypatch.setattr(intake_queue.IntakeQueue, "_connect", fake_connect)
    queue = intake_queue.IntakeQueue(ctx.engine, ctx.metrics, writers=2)

    def submit(webhook_id: str) -> asyncio.Task[webhook_intake.IntakeResult]:
        delivery = Delivery("t", webhook_id, None, {"type": "x"})
        return asyncio.ensure_future(queue.submit(delivery, body="{}", secrets_version=1))

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
    assert [r.outcome for r in results] == ["applied"] * 6
    await queue.aclose()
