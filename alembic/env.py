"""Alembic environment. Runs on a connection handed in by `app.db.migrate` (the app, the CLI, the tests) or,
when called as `alembic upgrade head`, on an engine built from the application's DATABASE_URL."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Connection

from alembic import context
from app.db import models  # noqa: F401  (registers the tables)
from app.db.base import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_settings() -> None:
    from app.db.session import create_engine
    from app.settings import Settings

    engine = create_engine(Settings().database_url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `cw-billing-sync migrate`")

existing = config.attributes.get("connection")
if existing is not None:
    _run(existing)
else:
    asyncio.run(_run_from_settings())
