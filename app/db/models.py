"""Tables only. API shapes live in `app/schemas/`; rules live in `app/domain/`."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
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
from sqlalchemy.sql import expression

from app.db.base import Base, TimestampMixin, new_id, utcnow
from app.db.types import CalendarDate, EnumText, Money, UTCDateTime


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
    object_id: Mapped[str | None] = mapped_column(String(128))  # a portal company id is up to 128
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Company(TimestampMixin, Base):
    """A portal-managed company of one tenant, keyed by the portal's id (`external_id`).

    `license_count` is the license history's count today (kept by the applier and the reconcile; the history in
    `license_change` is the truth), `count_day` / `count_sequence` the change that decided it. The mapping columns
    are the current agreement (its history: `agreement_term`); `agreement_status` and `next_invoice_date` are what
    ConnectWise showed of it when last read (`agreement_checked_at`).
    """

    __tablename__ = "company"
    # (tenant_id, id) is unique anyway; as a key it lets the ledger reference a company and its tenant in one.
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"), UniqueConstraint("tenant_id", "id"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    external_id: Mapped[str] = mapped_column(String(128), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    identifier: Mapped[str | None] = mapped_column(String(100))
    license_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    count_day: Mapped[date | None] = mapped_column(CalendarDate())
    count_sequence: Mapped[int | None] = mapped_column(BigInteger)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)
    billing_enabled: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Billing applies (enabled, mapped, not deleted): the latest entry of its `billing_status_change` timeline.
    billing_active: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    unit_price_override: Mapped[Decimal | None] = mapped_column(Money())
    unit_cost_override: Mapped[Decimal | None] = mapped_column(Money())
    cw_company_id: Mapped[int | None] = mapped_column(Integer)
    cw_agreement_id: Mapped[int | None] = mapped_column(Integer)
    # What the agreement looked like when mapped (refreshed by every reconcile): the billing period's source.
    agreement_name: Mapped[str | None] = mapped_column(String(200))
    billing_cycle: Mapped[str | None] = mapped_column(String(16))
    bill_start_date: Mapped[date | None] = mapped_column(CalendarDate())
    agreement_prorate: Mapped[bool | None] = mapped_column(Boolean)
    agreement_status: Mapped[str | None] = mapped_column(String(16))
    next_invoice_date: Mapped[date | None] = mapped_column(CalendarDate())
    agreement_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    mapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DeliveryStatus(StrEnum):
    pending = "pending"  # stored, not applied yet
    applied = "applied"  # applied to the license history (its `outcome` says how)


class DeliveryOutcome(StrEnum):
    """What applying a stored delivery did."""

    applied = "applied"
    created = "created"  # company.upserted of a new company
    duplicate_sequence = "duplicate_sequence"
    conflict = "conflict"
    restored = "restored"
    deleted = "deleted"
    unknown_company = "unknown_company"
    unknown_type = "unknown_type"
    invalid = "invalid"


class WebhookInbox(Base):
    """Every accepted delivery, unique per (tenant, webhook-id): stored by the request (202), applied by the applier.
    Kept 8 days after it was received (redeliveries within 7 days have no second effect)."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        UniqueConstraint("tenant_id", "webhook_id"),
        Index("ix_webhook_inbox_pending", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    webhook_id: Mapped[str] = mapped_column(String(200), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    status: Mapped[DeliveryStatus] = mapped_column(
        EnumText(DeliveryStatus, 16), nullable=False, default=DeliveryStatus.pending
    )
    outcome: Mapped[DeliveryOutcome | None] = mapped_column(EnumText(DeliveryOutcome, 32))
    detail: Mapped[str | None] = mapped_column(Text)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class RejectedDelivery(Base):
    """A signed delivery refused as invalid (422), kept for inspection (it takes no webhook-id: a corrected event
    may come under the same one)."""

    __tablename__ = "rejected_delivery"
    __table_args__ = (Index("ix_rejected_delivery_tenant_received", "tenant_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    webhook_id: Mapped[str] = mapped_column(String(200), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    detail: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # the first 4 KiB, as text


class ChangeStatus(StrEnum):
    accepted = "accepted"  # part of the history
    conflict = "conflict"  # the same sequence as an accepted change, with other content: recorded, not applied


class ChangeSource(StrEnum):
    portal = "portal"
    adopted = "adopted"  # the opening count of an adopted ConnectWise line


class LicenseChange(Base):
    """The license history: every change the portal reported, at its effective time (DESIGN §5)."""

    __tablename__ = "license_change"
    __table_args__ = (
        Index("ix_license_change_company_effective", "company_id", "effective_at"),
        Index(
            "uq_license_change_company_sequence",
            "company_id",
            "sequence",
            unique=True,
            sqlite_where=expression.text("status = 'accepted'"),
            postgresql_where=expression.text("status = 'accepted'"),
        ),
        # One key for the company and its tenant: the row's tenant is the company's, checked once per insert.
        ForeignKeyConstraint(["tenant_id", "company_id"], ["company.tenant_id", "company.id"], ondelete="CASCADE"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), nullable=False)
    webhook_id: Mapped[str | None] = mapped_column(String(200))
    sequence: Mapped[int] = mapped_column(BigInteger, nullable=False)
    license_count: Mapped[int] = mapped_column(Integer, nullable=False)
    previous_count: Mapped[int | None] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    status: Mapped[ChangeStatus] = mapped_column(
        EnumText(ChangeStatus, 16), nullable=False, default=ChangeStatus.accepted
    )
    source: Mapped[ChangeSource] = mapped_column(
        EnumText(ChangeSource, 16), nullable=False, default=ChangeSource.portal
    )


class PriceSetting(Base):
    """A unit price and cost set at `set_at`: the product default (`company_id` null) or a company's override (where
    null means "the default"). A period is billed at the price in force when it began."""

    __tablename__ = "price_setting"
    __table_args__ = (Index("ix_price_setting_tenant_company", "tenant_id", "company_id", "set_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    company_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    unit_price: Mapped[Decimal | None] = mapped_column(Money())
    unit_cost: Mapped[Decimal | None] = mapped_column(Money())
    source: Mapped[str] = mapped_column(String(32), nullable=False, default="setting")


class BillingStatusChange(Base):
    """Billing started (`active`) or stopped for a company at `changed_at`: enabled and mapped and not deleted."""

    __tablename__ = "billing_status_change"
    __table_args__ = (Index("ix_billing_status_change_company", "company_id", "changed_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)


class AgreementTerm(Base):
    """From `from_day` on, the company is billed on this agreement, in its periods (`billing_cycle`, anchored on
    `bill_start_date`); `cw_agreement_id` null: on none (unmapped)."""

    __tablename__ = "agreement_term"
    __table_args__ = (Index("ix_agreement_term_company", "company_id", "from_day"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"), nullable=False)
    from_day: Mapped[date] = mapped_column(CalendarDate(), nullable=False)
    cw_agreement_id: Mapped[int | None] = mapped_column(Integer)
    billing_cycle: Mapped[str] = mapped_column(String(16), nullable=False)
    bill_start_date: Mapped[date] = mapped_column(CalendarDate(), nullable=False)
    # The agreement ended in CW (cancelled or expired) on this day, as last read: no period after it is billed there.
    ended_on: Mapped[date | None] = mapped_column(CalendarDate())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class SyncStatus(StrEnum):
    in_sync = "in_sync"
    pending = "pending"
    retrying = "retrying"
    failed = "failed"  # parked: retrying cannot fix it (CW answered 400, …); visible until fixed and re-synced
    drift = "drift"  # a hand edit in CW is held (not overwritten)
    awaiting_approval = "awaiting_approval"
    needs_attention = "needs_attention"  # the agreement is cancelled, expired or gone: remap the company
    paused = "paused"  # billing is off for the tenant or the company, or it is not mapped
    dismissed = "dismissed"


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
    status: Mapped[SyncStatus] = mapped_column(EnumText(SyncStatus, 32), nullable=False, default=SyncStatus.pending)
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
    # Periods whose lines did not add up to what they owe after the last reconcile (a held hand edit, a failure).
    discrepancies: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CwRequestGrant(Base):
    """A CW request granted to a tenant within the budget's window (PostgreSQL, shared by all processes;
    `app/db/budget.py`). Rows older than the window are dropped as new ones are granted."""

    __tablename__ = "cw_request_grant"
    __table_args__ = (Index("ix_cw_request_grant_tenant_at", "tenant_id", "granted_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


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

    `marker` (`app/domain/markers.py`) is also written into the addition's serial number, so a create whose outcome
    is unknown (`create_pending`) is looked up in CW before anything is created again. `last_written` is compared with
    CW before every write: a difference is drift (a hand edit) and is never silently overwritten. `uncertain` holds
    the values of writes whose outcome the service never learned: CW holding one of them is the service's own write.
    """

    __tablename__ = "tracked_addition"
    __table_args__ = (
        UniqueConstraint("tenant_id", "cw_agreement_id", "marker"),
        Index("ix_tracked_addition_company", "company_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(36), _tenant_fk(), nullable=False)
    company_id: Mapped[str] = mapped_column(String(36), ForeignKey("company.id", ondelete="CASCADE"), nullable=False)
    cw_agreement_id: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # app.domain.markers.Kind
    marker: Mapped[str] = mapped_column(String(50), nullable=False)
    cw_addition_id: Mapped[int | None] = mapped_column(Integer)
    adopted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Set (and committed) before a create is sent: a later run looks the marker up before creating again.
    create_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # Set (and committed) before a delete is sent: a later run that no longer finds the addition retires the row.
    delete_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    uncertain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    last_written: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    last_written_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
