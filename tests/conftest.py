"""Test harness. The database is chosen by TEST_DATABASE_URL (SQLite file by default, PostgreSQL in CI's second
run), created fresh, migrated once with Alembic, and emptied after every test so no test sees another's rows."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.connectwise.client import DEFAULT_TIMEOUT
from app.connectwise.network import guarded_client
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE
from app.context import AppContext
from app.db.base import Base
from app.db.migrate import upgrade_to_head
from app.db.session import create_engine, create_sessionmaker
from app.main import create_app
from app.security.encryption import generate_key
from app.services.tenants import NewTenant, create_tenant
from app.settings import Environment, Settings, load_settings
from tests.spec_validation import SpecValidator, ValidatingTransport

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
TEST_SIGNING_KEY = "test-signing-key-" + os.urandom(24).hex()
TEST_ENCRYPTION_KEY = generate_key()


def _database_url(tmp_dir: Path) -> str:
    url = os.environ.get("TEST_DATABASE_URL", "")
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # under pytest-xdist (-n): a database of each worker's own
    if url and worker:
        parsed = make_url(url)
        return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)
    if url:
        return url
    return f"sqlite+aiosqlite:///{tmp_dir / 'test.db'}"


async def _recreate_postgres_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
def tmp_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="cwbs-test-"))


@pytest.fixture(scope="session")
def database_url(tmp_dir: Path) -> str:
    return _database_url(tmp_dir)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    if database_url.startswith("postgresql"):
        await _recreate_postgres_database(database_url)
    eng = create_engine(database_url)
    await upgrade_to_head(eng)
    yield eng
    await eng.dispose()


async def _truncate_all(engine: AsyncEngine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                await conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608 (table names from metadata)


@pytest.fixture(autouse=True)
async def _isolate(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table after each test that touched the database."""
    yield
    if "engine" in request.fixturenames:
        await _truncate_all(request.getfixturevalue("engine"))


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_dir: Path) -> Settings:
    return load_settings(
        app_env=Environment.production,
        database_url=database_url,
        data_dir=tmp_dir,
        jwt_signing_key=SecretStr(TEST_SIGNING_KEY),
        encryption_keys=[SecretStr(TEST_ENCRYPTION_KEY)],
        log_format="json",
        log_level="WARNING",
        run_worker=False,  # tests drive the worker directly
    )


@pytest.fixture
async def app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The app, with its in-process sandbox traffic checked against ConnectWise's OpenAPI (when ../shared exists):
    any request the service sends to CW, or answer it gets, that breaks the spec fails the test."""
    application = create_app(settings, engine=engine)
    ctx: AppContext = application.state.ctx
    validator = (
        SpecValidator(SHARED_DIR / "connectwise" / "openapi-subset.lenient.json") if SHARED_DIR.exists() else None
    )
    sandbox: Sandbox | None = application.state.sandbox
    if sandbox is not None:  # mounted again, behind the validator
        await ctx.cw_http.aclose()
        ctx.cw_http = guarded_client(
            allow_private=settings.cw_allow_private_sites,
            timeout=DEFAULT_TIMEOUT,
            mounts={IN_PROCESS_SITE: ValidatingTransport(SandboxTransport(sandbox), validator)},
        )
    yield application
    await ctx.aclose()
    if validator is not None:
        assert validator.problems == [], "\n".join(validator.problems[:20])


@pytest.fixture
def ctx(app: FastAPI) -> AppContext:
    context: AppContext = app.state.ctx
    return context


@pytest.fixture
def sandbox(app: FastAPI) -> Sandbox:
    """The fake ConnectWise the app's CW site is mounted on (the settings turn it on)."""
    fake: Sandbox = app.state.sandbox
    return fake


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with create_sessionmaker(engine)() as s:
        yield s


TenantFactory = Callable[[str], Awaitable[NewTenant]]


@pytest.fixture
def make_tenant(ctx: AppContext) -> TenantFactory:
    async def make(name: str = "Acme MSP") -> NewTenant:
        async with ctx.sessionmaker() as s, s.begin():
            return await create_tenant(s, box=ctx.secrets, name=name)

    return make


async def bearer(client: httpx.AsyncClient, tenant: NewTenant) -> dict[str, str]:
    response = await client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
        },
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def shared_spec(name: str) -> Path:
    """Path of a file in ../shared/connectwise; skips only when ../shared is absent (CI refuses such skips)."""
    path = SHARED_DIR / "connectwise" / name
    if not SHARED_DIR.exists():
        pytest.skip("../shared is absent (needs_shared)")
    assert path.exists(), f"{path} is missing although ../shared exists"
    return path
