"""Is the database there, and is its schema the one this code expects? (`/readyz`)"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import current_revision, head_revision
from app.db.session import READ_ONLY


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    error: str | None  # why it cannot be reached (an exception's type name), or None
    current: str | None = None  # the schema revision the database is at
    head: str | None = None  # the revision the code expects

    @property
    def at_head(self) -> bool:
        return self.error is None and self.current == self.head


async def database_health(engine: AsyncEngine) -> DatabaseHealth:
    reader = engine.execution_options(**{READ_ONLY: True})  # never waits for a writer (SQLite)
    try:
        async with reader.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return DatabaseHealth(error=None, current=await current_revision(reader), head=head_revision())
    except (SQLAlchemyError, OSError) as exc:
        return DatabaseHealth(error=type(exc).__name__)
