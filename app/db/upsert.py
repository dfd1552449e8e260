"""Insert-or-ignore on both engines (`ON CONFLICT DO NOTHING`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_ignore(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any], *, conflict: Sequence[str]
) -> bool:
    """Insert a row unless one with the same `conflict` columns exists. True if this call inserted it."""
    dialect = session.bind.dialect.name
    builder = pg_insert if dialect == "postgresql" else sqlite_insert
    table = model.__table__
    statement = builder(table).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]
