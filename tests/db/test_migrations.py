"""The migrations are the schema: on a fresh database they build exactly what the models declare, and the newest
one can be rolled back and applied again (an operator's way out of a bad deploy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alembic import command
from app.db.base import Base
from app.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from app.db.session import create_engine


@pytest.fixture
async def fresh(database_url: str, tmp_path: Any) -> AsyncIterator[AsyncEngine]:
    """An empty database of the suite's kind, apart from the one the other tests use."""
    if database_url.startswith("postgresql"):
        url = make_url(database_url)
        name = f"{url.database}_migrations"
        admin = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(url.set(database=name).render_as_string(hide_password=False))
        yield engine
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        await engine.dispose()


async def _differences(engine: AsyncEngine) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
    config = alembic_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(run)


async def test_the_migrations_build_what_the_models_declare(fresh: AsyncEngine) -> None:
    await upgrade_to_head(fresh)
    assert await current_revision(fresh) == head_revision()
    assert await _differences(fresh) == []


async def test_the_newest_migration_rolls_back_and_forward(fresh: AsyncEngine) -> None:
    await upgrade_to_head(fresh)
    await _run(fresh, "downgrade", "-1")
    assert await current_revision(fresh) != head_revision()
    await _run(fresh, "upgrade", "head")
    assert await current_revision(fresh) == head_revision()
    assert await _differences(fresh) == []


async def test_inbox_outcomes_of_the_old_intake_are_translated_and_kept(fresh: AsyncEngine) -> None:
    """A delivery the old intake stored as `company_deleted` (or `stale_sequence`) reads as a `DeliveryOutcome` after
    the upgrade — no 500 on GET /webhook-deliveries — and keeps the old word in its detail."""
    from app.db.models import DeliveryOutcome, WebhookInbox
    from app.db.session import create_sessionmaker

    await _run(fresh, "upgrade", "5b7e2c9d1a43")
    async with fresh.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenant (id, name, billing_enabled, timezone, currency, proration_mode, "
                "decrease_policy, sync_mode, drift_policy, secrets_version, created_at) "
                "VALUES ('t-1', 'T', false, 'UTC', 'USD', 'line', 'no_credit', 'auto', 'hold', 1, "
                "'2026-12-01T00:00:00.000000Z')"
            )
        )
        for webhook_id, outcome in (("w-1", "company_deleted"), ("w-2", "stale_sequence"), ("w-3", "applied")):
            await conn.execute(
                text(
                    "INSERT INTO webhook_inbox (tenant_id, webhook_id, event_type, received_at, status, outcome, "
                    "payload) VALUES ('t-1', :w, 'license.count_changed', '2026-12-01T00:00:00.000000Z', 'applied', "
                    ":o, '{}')"
                ),
                {"w": webhook_id, "o": outcome},
            )
    await upgrade_to_head(fresh)
    async with create_sessionmaker(fresh)() as session:
        rows = {r.webhook_id: r for r in (await session.scalars(select(WebhookInbox))).all()}
    assert {k: r.outcome for k, r in rows.items()} == {
        "w-1": DeliveryOutcome.deleted,
        "w-2": DeliveryOutcome.applied,
        "w-3": DeliveryOutcome.applied,
    }
    assert rows["w-2"].detail == "before the license history: stale_sequence"
    assert rows["w-3"].detail is None
