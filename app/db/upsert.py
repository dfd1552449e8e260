"""Dialect helpers: insert-or-ignore (`ON CONFLICT DO NOTHING`) on both engines, and which engine a session is on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return bind.dialect.name


def is_postgres(session: AsyncSession) -> bool:
    return dialect_name(session) == "postgresql"


async def insert_ignore(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any], *, conflict: Sequence[str]
) -> bool:
    """Insert a row unless one with the same `conflict` columns exists. True if this call inserted it."""
    builder = pg_insert if is_postgres(session) else sqlite_insert
    statement = builder(model).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]
