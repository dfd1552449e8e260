"""Foundation: app shape, problem+json, health, readiness, metrics, schema made by Alembic, isolation."""

from __future__ import annotations

import ast
import asyncio
import multiprocessing
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import middleware
from app.context import AppContext
from app.db.base import Base
from app.db.migrate import current_revision, head_revision
from app.db.models import Tenant
from app.db.types import CalendarDate, Money, UTCDateTime
from app.main import create_app
from app.services.tenants import create_tenant
from app.settings import Environment, Settings
from tests.conftest import TEST_SIGNING_KEY, TenantFactory, bearer

APP_DIR = Path(__file__).resolve().parents[1] / "app"
FRAMEWORKS = {
    "fastapi",
    "starlette",
    "sqlalchemy",
    "httpx",
    "alembic",
    "pydantic_settings",
    "structlog",
    "jose",
}


def test_domain_imports_no_framework() -> None:
    offenders = []
    for path in (APP_DIR / "domain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert list((APP_DIR / "domain").rglob("*.py")), "app/domain has no modules to check"
    assert offenders == []


def test_only_the_token_module_imports_jose() -> None:
    importers = sorted(
        str(p.relative_to(APP_DIR))
        for p in APP_DIR.rglob("*.py")
        if any(
            (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "jose")
            or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "jose" for a in n.names))
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert importers == ["security/tokens.py"]


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]


async def test_readyz_reports_database_and_migrations(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {c["name"]: c["ok"] for c in body["checks"]} == {"database": True, "migrations": True}


async def test_readyz_is_503_when_migrations_are_behind(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    head = head_revision()
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'stale'"))
    try:
        response = await client.get("/readyz")
        assert response.status_code == 503
        migrations = next(c for c in response.json()["checks"] if c["name"] == "migrations")
        assert migrations["ok"] is False
        assert "stale" in migrations["detail"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})


async def test_schema_was_made_by_alembic(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    async with engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
    assert {t.name for t in Base.metadata.sorted_tables} <= names


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["code"] == "not_found"
    assert body["instance"] == "/api/v1/nothing-here"


async def test_wrong_method_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.delete("/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"


async def test_metrics_expose_request_counts(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'cwbs_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in response.text


async def test_request_id_is_echoed_when_safe(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz", headers={"x-request-id": "abc-123"})).headers["x-request-id"] == "abc-123"
    unsafe = (await client.get("/healthz", headers={"x-request-id": "a b\tc"})).headers["x-request-id"]
    assert unsafe != "a b\tc"
    assert len(unsafe) == 32
    assert (await client.get("/healthz")).headers["x-request-id"] not in (unsafe, "abc-123")


def _request_id_prefix() -> str:
    return middleware._ID_PREFIX


def test_a_forked_worker_draws_request_ids_of_its_own() -> None:
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_request_id_prefix)
    assert child != middleware._ID_PREFIX  # or two workers forked from one app would number requests alike


money_values = ["0", "0.0001", "3.00", "12345678901234.9999", "-12.5", "0.3333"]


@pytest.mark.parametrize("raw", money_values)
async def test_money_round_trips_exactly(engine: AsyncEngine, raw: str) -> None:
    table = Table("money_probe", MetaData(), Column("v", Money()), Column("k", String(10)))
    async with engine.begin() as conn:
        await conn.run_sync(table.create)
        try:
            await conn.execute(insert(table).values(v=Decimal(raw), k="x"))
            value = (await conn.execute(select(table.c.v))).scalar_one()
            total = await conn.execute(select(func.count()).select_from(table).where(table.c.v == Decimal(raw)))
            assert total.scalar_one() == 1
        finally:
            await conn.run_sync(table.drop)
    assert isinstance(value, Decimal)
    assert value == Decimal(raw)


async def test_money_refuses_float_and_excess_precision(engine: AsyncEngine) -> None:
    table = Table("money_probe2", MetaData(), Column("v", Money()))
    async with engine.begin() as conn:
        await conn.run_sync(table.create)
        try:
            with pytest.raises(Exception, match="Decimal"):
                await conn.execute(insert(table).values(v=0.1))
            with pytest.raises(Exception, match="4 decimal places"):
                await conn.execute(insert(table).values(v=Decimal("0.00001")))
        finally:
            await conn.run_sync(table.drop)


async def test_datetimes_round_trip_aware_in_utc(engine: AsyncEngine) -> None:
    table = Table("dt_probe", MetaData(), Column("at", UTCDateTime()), Column("day", CalendarDate()))
    moment = datetime(2026, 11, 16, 23, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    async with engine.begin() as conn:
        await conn.run_sync(table.create)
        try:
            await conn.execute(insert(table).values(at=moment, day=moment.date()))
            row = (await conn.execute(select(table.c.at, table.c.day))).one()
            with pytest.raises(Exception, match="naive"):
                await conn.execute(insert(table).values(at=datetime(2026, 1, 1)))  # noqa: DTZ001
        finally:
            await conn.run_sync(table.drop)
    assert row.at == moment
    assert row.at.tzinfo == UTC
    assert row.day == moment.date()


async def test_isolation_first_writes_a_row(session: AsyncSession) -> None:
    session.add(Tenant(name="leftover-probe"))
    await session.commit()
    assert await session.scalar(select(func.count()).select_from(Tenant)) == 1


async def test_isolation_second_sees_no_leftovers(session: AsyncSession) -> None:
    # Runs after the test above (file order); fails if rows leak between tests.
    for table in Base.metadata.sorted_tables:
        assert await session.scalar(select(func.count()).select_from(table)) == 0, table.name


async def test_nul_characters_are_refused_with_422_not_500(client: httpx.AsyncClient) -> None:
    # PostgreSQL cannot store NUL; it must never reach a query.
    for response in (
        await client.post("/api/v1/auth/token", json={"client_id": "a\u0000b", "client_secret": "x"}),
        await client.post("/api/v1/auth/token", data={"client_id": "a\x00b", "client_secret": "x"}),
        await client.get("/api/v1/companies/a%00b"),
        await client.get("/api/v1/companies", params={"search": "x\x00"}),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_characters"
    assert (await client.post("/api/v1/auth/token", json={"client_id": "ab", "client_secret": "x"})).status_code == 401


async def test_a_500_in_dev_mode_logs_a_plain_traceback_without_secrets(
    settings: Settings, engine: AsyncEngine, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = settings.model_copy(update={"app_env": Environment.dev, "log_format": "console", "log_level": "INFO"})
    application = create_app(dev, engine=engine)
    ctx: AppContext = application.state.ctx
    async with ctx.sessionmaker() as session, session.begin():
        tenant = await create_tenant(session, box=ctx.secrets, name="Acme")

    def broken(secret: str, stored: str) -> bool:
        webhook_secret = tenant.webhook_secret  # a secret in a local variable of the failing frame
        raise RuntimeError(f"boom after {len(webhook_secret)} characters")

    monkeypatch.setattr("app.api.auth.verify_client_secret", broken)
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.post(
            "/api/v1/auth/token", data={"client_id": tenant.client_id, "client_secret": tenant.client_secret}
        )
    await ctx.aclose()
    assert response.status_code == 500
    assert tenant.client_secret not in response.text
    logged = capfd.readouterr().err
    assert "RuntimeError: boom after" in logged  # the error is logged, with its traceback
    for secret in (tenant.webhook_secret, tenant.client_secret, TEST_SIGNING_KEY, TEST_SIGNING_KEY[:16]):
        assert secret not in logged
    assert len(logged) < 20_000  # no frame dumps
    assert TEST_SIGNING_KEY not in repr(ctx.tokens)


async def test_reads_do_not_queue_behind_a_writer(
    client: httpx.AsyncClient, make_tenant: TenantFactory, engine: AsyncEngine
) -> None:
    headers = await bearer(client, await make_tenant("Acme"))
    async with engine.connect() as writer:
        await writer.begin()  # a long write transaction (SQLite: it holds the database's write lock)
        await writer.execute(update(Tenant).values(name="Renamed meanwhile"))
        async with asyncio.timeout(5):  # SQLite would otherwise wait out its 30 s busy timeout, then answer 500
            listed = await client.get("/api/v1/companies", headers=headers)
            status = await client.get("/readyz")
        assert listed.status_code == 200
        assert status.status_code == 200
        await writer.rollback()


SQL_BUILDERS = {"select", "insert", "update", "delete", "text", "func", "or_", "and_"}


def test_routers_hold_no_sql() -> None:
    """Routers parse, call a use case and shape the answer: no query is written in app/api (repositories and
    services hold them)."""
    offenders = []
    for path in (APP_DIR / "api").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name in SQL_BUILDERS]
            if isinstance(node, ast.Attribute) and node.attr in {"execute", "scalar", "scalars"}:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}(…)")
    assert list((APP_DIR / "api").rglob("*.py")), "app/api has no modules to check"
    assert offenders == []


async def test_the_docs_page_needs_no_internet(client: httpx.AsyncClient) -> None:
    """`/docs` loads Swagger UI from the service itself: every script and stylesheet it names is served here."""
    page = await client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets, "the docs page names no assets"
    assert [a for a in assets if "://" in a or a.startswith("//")] == []  # nothing from a CDN
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert served.content, asset
    spec = (await client.get("/openapi.json")).json()
    assert "Money" in spec["info"]["description"]  # the document opens with an introduction
