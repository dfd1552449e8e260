"""Tracked additions: the CW lines this service owns. "Live" (not retired) is defined here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import TrackedAddition
from app.domain.markers import Kind


def live() -> ColumnElement[bool]:
    """A tracked addition that is not retired: the line exists in CW as far as the service knows."""
    return TrackedAddition.retired_at.is_(None)


def is_live(row: TrackedAddition) -> bool:
    return row.retired_at is None


def retire(row: TrackedAddition, now: datetime) -> None:
    """The line is gone from CW (deleted by the service): kept for the record, no longer live."""
    row.retired_at, row.delete_pending, row.uncertain = now, False, None


def revive(row: TrackedAddition) -> None:
    """A retired line's marker is written again: a new CW line under the old row."""
    row.retired_at, row.cw_addition_id, row.last_written, row.uncertain = None, None, None, None


async def live_additions(
    session: AsyncSession, company_ids: Sequence[str], *, kind: Kind | None = None
) -> list[TrackedAddition]:
    """The live lines of these companies, oldest first (ids grow with creation)."""
    if not company_ids:
        return []
    statement = select(TrackedAddition).where(TrackedAddition.company_id.in_(company_ids), live())
    if kind is not None:
        statement = statement.where(TrackedAddition.kind == kind.value)
    return list(await session.scalars(statement.order_by(TrackedAddition.id)))


def newest_base_of(lines: Sequence[TrackedAddition], *, agreement_id: int | None = None) -> TrackedAddition | None:
    """The base line billing now or next among a company's live lines: the newest by marker (markers sort by the
    period they start), on `agreement_id` when given."""
    bases = [
        t for t in lines if t.kind == Kind.base.value and (agreement_id is None or t.cw_agreement_id == agreement_id)
    ]
    return max(bases, key=lambda t: t.marker) if bases else None


async def current_base(session: AsyncSession, company_id: str, agreement_id: int | None) -> TrackedAddition | None:
    """The base line billing now or next on the company's current agreement."""
    if agreement_id is None:
        return None
    return await session.scalar(
        select(TrackedAddition)
        .where(
            TrackedAddition.company_id == company_id,
            TrackedAddition.kind == Kind.base.value,
            TrackedAddition.cw_agreement_id == agreement_id,
            live(),
        )
        .order_by(TrackedAddition.marker.desc())
        .limit(1)
    )
