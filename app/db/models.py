"""Tables only. API shapes live in `app/api/schemas/`; rules live in `app/domain/`."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, TimestampMixin, new_id, utcnow
from app.db.types import CalendarDate, Money, UTCDateTime


def _tenant_fk() -> ForeignKey:
    return ForeignKey("tenant.id", ondelete="CASCADE")


class Tenant(TimestampMixin, Base):
    """An MSP. Billing settings live on the tenant row: one set per MSP."""

    __tablename__ = "tenant"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    billing_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", nullable=False)
    currency: Mapped[str] = mapped_column(String(3), default="USD", nullable=False)
    proration_mode: Mapped[str] = mapped_column(String(16), default="line", nullable=False)
    decrease_policy: Mapped[str] = mapped_column(String(16), default="no_credit", nullable=False)
    sync_mode: Mapped[str] = mapped_column(String(16), default="auto", nullable=False)
    drift_policy: Mapped[str] = mapped_column(String(16), default="hold", nullable=False)
    # Bumped by every webhook secret rotation: processes caching decrypted secrets reload when it moves.
    secrets_version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class ApiClient(TimestampMixin, Base):
    __tablename__ = "api_client"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False, index=True)
    client_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="default")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookSecret(TimestampMixin, Base):
    """A portal signing secret, encrypted. `expires_at` null = current; set = kept valid until then (rotation)."""

    __tablename__ = "webhook_secret"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False, index=True)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(100), nullable=False)
    object_type: Mapped[str] = mapped_column(String(50), nullable=False)
    object_id: Mapped[str | None] = mapped_column(String(100))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Company(TimestampMixin, Base):
    """A portal-managed company of one tenant, keyed by the portal's id (`external_id`)."""

    __tablename__ = "company"
    # (tenant_id, id) is unique anyway; as a key it lets the ledger reference a company and its tenant in one.
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"), UniqueConstraint("tenant_id", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    external_id: Mapped[str] = mapped_column(String(100), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    identifier: Mapped[str | None] = mapped_column(String(100))
    license_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_sequence: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)
    billing_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    unit_price_override: Mapped[Decimal | None] = mapped_column(Money())
    unit_cost_override: Mapped[Decimal | None] = mapped_column(Money())
    cw_company_id: Mapped[int | None] = mapped_column(Integer)
    cw_agreement_id: Mapped[int | None] = mapped_column(Integer)
    # What the agreement looked like when mapped (refreshed by every reconcile): the billing period's source.
    agreement_name: Mapped[str | None] = mapped_column(String(200))
    billing_cycle: Mapped[str | None] = mapped_column(String(16))
    bill_start_date: Mapped[date | None] = mapped_column(CalendarDate())
    agreement_prorate: Mapped[bool | None] = mapped_column(Boolean)
    mapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebhookInbox(Base):
    """Every accepted delivery, unique per (tenant, webhook-id): the idempotency record for redeliveries."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (UniqueConstraint("tenant_id", "webhook_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    webhook_id: Mapped[str] = mapped_column(String(200), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class LicenseChange(Base):
    """The license ledger: one row per `license.count_changed` event, stale ones included (flagged)."""

    __tablename__ = "license_change"
    __table_args__ = (
        Index("ix_license_change_company_effective", "company_id", "effective_at"),
        # One key for the company and its tenant: the row's tenant is the company's, checked once per insert.
        ForeignKeyConstraint(["tenant_id", "company_id"], ["company.tenant_id", "company.id"], ondelete="CASCADE"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), nullable=False)
    webhook_id: Mapped[str | None] = mapped_column(String(200))
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    license_count: Mapped[int] = mapped_column(Integer, nullable=False)
    previous_count: Mapped[int | None] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    ignored_reason: Mapped[str | None] = mapped_column(String(64))


class SyncState(Base):
    """One row per company: whether CW must be reconciled, and how the last attempts went.

    Scheduling sets `due_at` and bumps `generation`, so any number of changes before the worker gets to the company
    coalesce into one reconcile; a worker holds `claimed_by` until `claimed_until` (a lease), so one company is never
    worked on by two workers at once.
    """

    __tablename__ = "sync_state"
    __table_args__ = (Index("ix_sync_state_due", "due_at"),)

    company_id: Mapped[str] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False, index=True)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="pending")
    reason: Mapped[str | None] = mapped_column(String(64))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    drift: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    pending_plan: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True)
    )  # review mode: the change set to approve
    approved_generation: Mapped[int | None] = mapped_column(Integer)
    cw_snapshot: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True)
    )  # what CW held at the last reconcile


class CwConnection(Base):
    """A tenant's ConnectWise connection. The private key and clientId are encrypted (tenant-bound)."""

    __tablename__ = "cw_connection"

    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), primary_key=True)
    site_url: Mapped[str] = mapped_column(String(300), nullable=False)
    login_company_id: Mapped[str] = mapped_column(String(100), nullable=False)
    public_key: Mapped[str] = mapped_column(String(200), nullable=False)
    private_key_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    client_id_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class BillingProduct(Base):
    """The CW catalog item the vendor's licenses are billed as, with the tenant's default price and cost."""

    __tablename__ = "billing_product"

    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), primary_key=True)
    cw_catalog_item_id: Mapped[int] = mapped_column(Integer, nullable=False)
    identifier: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    unit_price: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    unit_cost: Mapped[Decimal] = mapped_column(Money(), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class TrackedAddition(Base):
    """An agreement addition this service owns (created or adopted), with what it last wrote to it.

    `marker` is a stable key also written into the addition's serial number, so a create whose outcome is unknown
    can be looked up in CW before anything is created again. `last_written` is compared with CW before every
    write: a difference is drift (a hand edit) and is never silently overwritten.
    """

    __tablename__ = "tracked_addition"
    __table_args__ = (
        UniqueConstraint("tenant_id", "marker"),
        Index("ix_tracked_addition_company", "company_id", "role"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"), nullable=False)
    cw_agreement_id: Mapped[int] = mapped_column(Integer, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # base | proration | delta
    marker: Mapped[str] = mapped_column(String(50), nullable=False)
    period_start: Mapped[date | None] = mapped_column(CalendarDate())
    cw_addition_id: Mapped[int | None] = mapped_column(Integer)
    adopted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Set (and committed) before a create is sent: a later run looks the marker up before creating again.
    create_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # The values a write in flight is about to set: if CW holds them on the next run, it was our write, not drift.
    pending_write: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    last_written: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    last_written_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
