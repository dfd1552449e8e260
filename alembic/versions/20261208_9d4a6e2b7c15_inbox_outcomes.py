"""inbox outcomes from before the license history speak the new vocabulary

Deliveries stored before revision 5b7e2c9d1a43 carry the old intake's outcomes (`stale_sequence`,
`company_deleted`, …). The outcome column is now an enum (`app.db.models.DeliveryOutcome`): each old value becomes
the nearest new one, and the old word is kept in `detail` so nothing is lost. The old rows leave the inbox within
its 8-day retention anyway.

Revision ID: 9d4a6e2b7c15
Revises: 5b7e2c9d1a43
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9d4a6e2b7c15"
down_revision: str | None = "5b7e2c9d1a43"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here (a migration must not follow later code): the outcomes of app.db.models.DeliveryOutcome at this revision.
CURRENT = (
    "applied",
    "created",
    "duplicate_sequence",
    "conflict",
    "restored",
    "deleted",
    "unknown_company",
    "unknown_type",
    "invalid",
)
NEAREST = {"company_deleted": "deleted", "company_restored": "restored", "company_created": "created"}


def upgrade() -> None:
    inbox = sa.table("webhook_inbox", sa.column("outcome", sa.String), sa.column("detail", sa.Text))
    nearest = sa.case(
        *((inbox.c.outcome == old, new) for old, new in NEAREST.items()),
        else_="applied",  # the old intake had applied it (or set it aside) in its own way: it is not pending
    )
    op.execute(
        inbox.update()
        .where(inbox.c.outcome.is_not(None), inbox.c.outcome.not_in(CURRENT))
        .values(
            detail=sa.func.coalesce(inbox.c.detail, sa.literal("before the license history: ") + inbox.c.outcome),
            outcome=nearest,
        )
    )


def downgrade() -> None:
    """Nothing to undo: the old values are kept in `detail`, and the old code reads the new ones as text."""
