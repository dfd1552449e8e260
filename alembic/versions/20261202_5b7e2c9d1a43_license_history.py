"""license history, inbox intake, invoice-true billing periods

* The webhook inbox becomes a queue: the request stores a delivery (`status` pending) and the applier applies it
  (`applied`, with an `outcome`). The PL/pgSQL batch function goes: the rules live once, in Python.
* `license_change` is the license history: every change counts at its effective day (`status` accepted), the same
  sequence with other content is a `conflict`; a sequence is required (old rows without one take their row id).
* Price settings, billing status changes and agreement terms are kept as timelines (what a period owes depends on
  what was in force when it began); existing companies get a first entry from what they hold now.
* Tracked additions are keyed by agreement and marker (a company can move to another agreement); old base lines are
  kept as adopted lines under the new marker format, other old lines are retired.

Revision ID: 5b7e2c9d1a43
Revises: 8c1d2e7f4a90
Create Date: 2026-12-02 08:00:00
"""

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

import app.db.types
from alembic import op

revision: str = '5b7e2c9d1a43'
down_revision: str | None = '8c1d2e7f4a90'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS accept_webhook_batch(varchar[], varchar[], int[], varchar[], json[], "
            "timestamptz[], varchar[], varchar[], int[], int[], bigint[], timestamptz[], varchar[], varchar[], "
            "timestamptz)"
        )
    op.create_table('rejected_delivery',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('webhook_id', sa.String(length=200), nullable=False),
    sa.Column('received_at', app.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_rejected_delivery_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rejected_delivery'))
    )
    with op.batch_alter_table('rejected_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_rejected_delivery_tenant_received', ['tenant_id', 'received_at'], unique=False)

    op.create_table('cw_request_grant',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('granted_at', app.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_cw_request_grant_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cw_request_grant'))
    )
    with op.batch_alter_table('cw_request_grant', schema=None) as batch_op:
        batch_op.create_index('ix_cw_request_grant_tenant_at', ['tenant_id', 'granted_at'], unique=False)

    op.create_table('agreement_term',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('company_id', sa.String(length=36), nullable=False),
    sa.Column('from_day', app.db.types.CalendarDate(), nullable=False),
    sa.Column('cw_agreement_id', sa.Integer(), nullable=True),
    sa.Column('billing_cycle', sa.String(length=16), nullable=False),
    sa.Column('bill_start_date', app.db.types.CalendarDate(), nullable=False),
    sa.Column('ended_on', app.db.types.CalendarDate(), nullable=True),
    sa.Column('created_at', app.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_agreement_term_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_agreement_term_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agreement_term'))
    )
    with op.batch_alter_table('agreement_term', schema=None) as batch_op:
        batch_op.create_index('ix_agreement_term_company', ['company_id', 'from_day'], unique=False)

    op.create_table('billing_status_change',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('company_id', sa.String(length=36), nullable=False),
    sa.Column('changed_at', app.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_billing_status_change_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_billing_status_change_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_status_change'))
    )
    with op.batch_alter_table('billing_status_change', schema=None) as batch_op:
        batch_op.create_index('ix_billing_status_change_company', ['company_id', 'changed_at'], unique=False)

    op.create_table('price_setting',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=36), nullable=False),
    sa.Column('company_id', sa.String(length=36), nullable=True),
    sa.Column('set_at', app.db.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('unit_price', app.db.types.Money(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', app.db.types.Money(precision=18, scale=4), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_price_setting_company_id_company'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], name=op.f('fk_price_setting_tenant_id_tenant'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_price_setting'))
    )
    with op.batch_alter_table('price_setting', schema=None) as batch_op:
        batch_op.create_index('ix_price_setting_tenant_company', ['tenant_id', 'company_id', 'set_at'], unique=False)

    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.alter_column('object_id', existing_type=sa.String(length=100), type_=sa.String(length=128),
                              existing_nullable=True)

    with op.batch_alter_table('company', schema=None) as batch_op:
        batch_op.add_column(sa.Column('billing_active', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('count_day', app.db.types.CalendarDate(), nullable=True))
        batch_op.add_column(sa.Column('count_sequence', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('agreement_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('next_invoice_date', app.db.types.CalendarDate(), nullable=True))
        batch_op.add_column(sa.Column('agreement_checked_at', app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.drop_column('last_sequence')
        batch_op.alter_column('external_id', existing_type=sa.String(length=100), type_=sa.String(length=128),
                              existing_nullable=False)

    with op.batch_alter_table('license_change', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='accepted'))
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=False, server_default='portal'))
    op.execute("UPDATE license_change SET sequence = id WHERE sequence IS NULL")
    # Two rows of one sequence: the first stands, a later one with other content is a conflict.
    op.execute(
        "UPDATE license_change SET status = 'conflict' WHERE id NOT IN "
        "(SELECT MIN(id) FROM license_change GROUP BY company_id, sequence)"
    )
    with op.batch_alter_table('license_change', schema=None) as batch_op:
        batch_op.alter_column('sequence',
               existing_type=sa.BIGINT(),
               nullable=False)
        batch_op.create_index('uq_license_change_company_sequence', ['company_id', 'sequence'], unique=True, sqlite_where=sa.text("status = 'accepted'"), postgresql_where=sa.text("status = 'accepted'"))
        batch_op.drop_column('ignored_reason')

    with op.batch_alter_table('tracked_addition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='base'))
        batch_op.add_column(sa.Column('uncertain', sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column('delete_pending', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.drop_constraint(batch_op.f('uq_tracked_addition_tenant_id_marker'), type_='unique')
        batch_op.drop_index(batch_op.f('ix_tracked_addition_company'))
    _convert_tracked_additions()
    with op.batch_alter_table('tracked_addition', schema=None) as batch_op:
        batch_op.create_index('ix_tracked_addition_company', ['company_id', 'kind'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_tracked_addition_tenant_id_cw_agreement_id_marker'), ['tenant_id', 'cw_agreement_id', 'marker'])
        batch_op.drop_column('role')
        batch_op.drop_column('period_start')
        batch_op.drop_column('pending_write')

    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discrepancies', sa.Integer(), nullable=False, server_default='0'))

    with op.batch_alter_table('webhook_inbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), nullable=False, server_default='applied'))
        batch_op.add_column(sa.Column('detail', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('applied_at', app.db.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.alter_column('outcome',
               existing_type=sa.VARCHAR(length=32),
               nullable=True)
        batch_op.create_index('ix_webhook_inbox_pending', ['status', 'id'], unique=False)
    _backfill_timelines()


def _company_key(company_id: str) -> str:
    return base64.b32encode(uuid.UUID(company_id).bytes).decode().rstrip("=").lower()


def _convert_tracked_additions() -> None:
    """Old base lines stay tracked (as adopted lines, under a marker of the new format); other old lines retire."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    rows = bind.execute(
        sa.select(sa.column("id"), sa.column("company_id"), sa.column("role"), sa.column("last_written", sa.JSON()),
                  sa.column("retired_at", app.db.types.UTCDateTime())).select_from(sa.table("tracked_addition"))
    ).all()
    tracked = sa.table(
        "tracked_addition",
        sa.column("id"),
        sa.column("kind"),
        sa.column("marker"),
        sa.column("adopted"),
        sa.column("retired_at", app.db.types.UTCDateTime()),
    )
    for row_id, company_id, role, written, retired_at in rows:
        if role != "base" or retired_at is not None:
            bind.execute(tracked.update().where(tracked.c.id == row_id).values(
                kind=role, marker=f"retired:{row_id}", retired_at=retired_at or now))
            continue
        effective = None
        if isinstance(written, dict) and written.get("effective_date"):
            effective = date.fromisoformat(str(written["effective_date"])[:10])
        effective = effective or now.date()
        marker = f"cwbs:{_company_key(company_id)}:b{effective:%y%m%d}"
        bind.execute(
            tracked.update().where(tracked.c.id == row_id).values(kind="base", marker=marker, adopted=True)
        )


def _backfill_timelines() -> None:
    """Existing companies: what they hold now becomes the first entry of each timeline."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    price = sa.table(
        "price_setting",
        sa.column("tenant_id"),
        sa.column("company_id"),
        sa.column("set_at", app.db.types.UTCDateTime()),
        sa.column("unit_price", app.db.types.Money()),
        sa.column("unit_cost", app.db.types.Money()),
        sa.column("source"),
    )
    for tenant_id, unit_price, unit_cost in bind.execute(
        sa.select(sa.column("tenant_id"), sa.column("unit_price", app.db.types.Money()),
                  sa.column("unit_cost", app.db.types.Money())).select_from(sa.table("billing_product"))
    ):
        bind.execute(price.insert().values(
            tenant_id=tenant_id, company_id=None, set_at=now, unit_price=unit_price, unit_cost=unit_cost,
            source="migration"))
    companies = bind.execute(
        sa.select(
            sa.column("id"), sa.column("tenant_id"), sa.column("unit_price_override", app.db.types.Money()),
            sa.column("unit_cost_override", app.db.types.Money()), sa.column("billing_enabled"),
            sa.column("deleted_at", app.db.types.UTCDateTime()), sa.column("cw_agreement_id"),
            sa.column("billing_cycle"), sa.column("bill_start_date", app.db.types.CalendarDate()),
        ).select_from(sa.table("company"))
    ).all()
    status = sa.table(
        "billing_status_change", sa.column("tenant_id"), sa.column("company_id"),
        sa.column("changed_at", app.db.types.UTCDateTime()), sa.column("active"), sa.column("reason"),
    )
    term = sa.table(
        "agreement_term", sa.column("tenant_id"), sa.column("company_id"),
        sa.column("from_day", app.db.types.CalendarDate()), sa.column("cw_agreement_id"),
        sa.column("billing_cycle"), sa.column("bill_start_date", app.db.types.CalendarDate()),
        sa.column("created_at", app.db.types.UTCDateTime()),
    )
    for (company_id, tenant_id, over_price, over_cost, enabled, deleted_at, agreement_id, cycle,
         anchor) in companies:
        if over_price is not None or over_cost is not None:
            bind.execute(price.insert().values(
                tenant_id=tenant_id, company_id=company_id, set_at=now, unit_price=over_price,
                unit_cost=over_cost, source="migration"))
        if agreement_id is not None and cycle and anchor is not None:
            bind.execute(term.insert().values(
                tenant_id=tenant_id, company_id=company_id, from_day=anchor, cw_agreement_id=agreement_id,
                billing_cycle=cycle, bill_start_date=anchor, created_at=now))
            if enabled and deleted_at is None:
                bind.execute(status.insert().values(
                    tenant_id=tenant_id, company_id=company_id, changed_at=now, active=True, reason="migration"))
                bind.execute(sa.table("company", sa.column("id"), sa.column("billing_active")).update().where(
                    sa.column("id") == company_id).values(billing_active=True))


def downgrade() -> None:
    op.drop_table('cw_request_grant')
    with op.batch_alter_table('sync_state', schema=None) as batch_op:
        batch_op.drop_column('discrepancies')
    op.execute("UPDATE webhook_inbox SET outcome = 'applied' WHERE outcome IS NULL")
    with op.batch_alter_table('webhook_inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_inbox_pending')
        batch_op.alter_column('outcome',
               existing_type=sa.VARCHAR(length=32),
               nullable=False,
               server_default='applied')
        batch_op.drop_column('applied_at')
        batch_op.drop_column('detail')
        batch_op.drop_column('status')

    with op.batch_alter_table('tracked_addition', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending_write', sa.JSON().with_variant(sqlite.JSON(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('period_start', app.db.types.CalendarDate(), nullable=True))
        batch_op.add_column(sa.Column('role', sa.VARCHAR(length=16), nullable=False, server_default='base'))
        batch_op.drop_constraint(batch_op.f('uq_tracked_addition_tenant_id_cw_agreement_id_marker'), type_='unique')
        batch_op.drop_index('ix_tracked_addition_company')
        batch_op.create_index(batch_op.f('ix_tracked_addition_company'), ['company_id', 'role'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_tracked_addition_tenant_id_marker'), ['tenant_id', 'marker'])
        batch_op.drop_column('delete_pending')
        batch_op.drop_column('uncertain')
        batch_op.drop_column('kind')

    # The PL/pgSQL batch function is not restored: the intake it served is gone with this revision.
    with op.batch_alter_table('license_change', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ignored_reason', sa.VARCHAR(length=64), nullable=True))
        batch_op.drop_index('uq_license_change_company_sequence', sqlite_where=sa.text("status = 'accepted'"), postgresql_where=sa.text("status = 'accepted'"))
        batch_op.alter_column('sequence',
               existing_type=sa.BIGINT(),
               nullable=True)
        batch_op.drop_column('source')
        batch_op.drop_column('status')

    with op.batch_alter_table('company', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_sequence', sa.BIGINT(), nullable=True))
        # external_id stays 128 wide: narrowing it would fail on ids the portal already sent.
        batch_op.drop_column('billing_active')
        batch_op.drop_column('agreement_checked_at')
        batch_op.drop_column('next_invoice_date')
        batch_op.drop_column('agreement_status')
        batch_op.drop_column('count_sequence')
        batch_op.drop_column('count_day')

    with op.batch_alter_table('price_setting', schema=None) as batch_op:
        batch_op.drop_index('ix_price_setting_tenant_company')

    op.drop_table('price_setting')
    with op.batch_alter_table('billing_status_change', schema=None) as batch_op:
        batch_op.drop_index('ix_billing_status_change_company')

    op.drop_table('billing_status_change')
    with op.batch_alter_table('agreement_term', schema=None) as batch_op:
        batch_op.drop_index('ix_agreement_term_company')

    op.drop_table('agreement_term')
    with op.batch_alter_table('rejected_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_rejected_delivery_tenant_received')

    op.drop_table('rejected_delivery')
