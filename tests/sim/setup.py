"""Worlds for simulations run outside the suite's event loop (each history in a loop of its own): the database,
made once per process, emptied for every world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.base import Base
from app.db.migrate import upgrade_to_head
from app.db.session import create_engine
from app.main import create_app
from app.settings import Environment, load_settings
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SIGNING_KEY
from tests.story import World

_prepared: set[str] = set()


async def prepare(url: str) -> None:
    """Make sure the database exists and is migrated (once per process; a no-op when the suite already did)."""
    if url in _prepared:
        return
    if url.startswith("postgresql"):
        parsed = make_url(url)
        admin = create_async_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database})
                if not exists:
                    await conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
        finally:
            await admin.dispose()
    engine = create_engine(url)
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()
    _prepared.add(url)


@asynccontextmanager
async def open_world(database_url: str, data_dir: Path) -> AsyncIterator[World]:
    """A fresh service (production settings, no background worker) on an emptied database, with its sandbox."""
    await prepare(database_url)
    settings = load_settings(
        app_env=Environment.production,
        database_url=database_url,
        data_dir=data_dir,
        jwt_signing_key=SecretStr(TEST_SIGNING_KEY),
        encryption_keys=[SecretStr(TEST_ENCRYPTION_KEY)],
        log_format="json",
        log_level="ERROR",
        run_worker=False,
    )
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f"DELETE FROM {table.name}"))  # noqa: S608 (names from the metadata)
    app = create_app(settings, engine=engine)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as http:
            yield World(app, http)
    finally:
        await app.state.ctx.aclose()
        await engine.dispose()
