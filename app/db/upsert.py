"""Dialect helpers: insert-or-ignore (`ON CONFLICT DO NOTHING`) on both engines, and which engine a session is on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def dialect_name(session: AsyncSession) -> str:
    bind = session.bind
    if bind is None:
        raise RuntimeError("session is not bound to an engine")
    return bind.dialect.name


def upsert_insert(dialect: str) -> Callable[[Any], PgInsert | SqliteInsert]:
    """The dialect's `insert` construct, the one with `on_conflict_do_nothing` / `on_conflict_do_update`."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def is_postgres(session: AsyncSession) -> bool:
    return dialect_name(session) == "postgresql"


async def insert_ignore(
    session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any], *, conflict: Sequence[str]
) -> bool:
    """Insert a row unless one with the same `conflict` columns exists. True if this call inserted it."""
    statement = (
        upsert_insert(dialect_name(session))(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict))
    )
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]
