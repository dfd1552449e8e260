"""Where a company's sync stands, said the same way everywhere (`/companies/{id}/sync`, `/companies`,
`/reconciliation`, the 409 of `POST …/sync`): one status from a fixed vocabulary, why, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.db.models import Company, SyncState, SyncStatus, Tenant
from app.schemas.common import SyncCondition

_BLOCKED_AGREEMENT = {"Cancelled", "Expired", "Gone"}


@dataclass(frozen=True, slots=True)
class Condition:
    status: SyncCondition
    cause: str | None = None  # why it is not in sync (None when it is)
    action: str | None = None  # what would move it on
    blocks_sync: bool = False  # a reconcile asked for now would do nothing (refused with 409)


def condition(tenant: Tenant, company: Company, state: SyncState | None) -> Condition:
    """Work in flight or a problem the last run met comes first; otherwise what keeps the company from billing."""
    ref = company.external_id
    status = state.status if state is not None else None
    if not tenant.billing_enabled:
        return Condition(
            SyncCondition.billing_off_for_tenant,
            "billing is off for the tenant: nothing is written to ConnectWise",
            'turn it on: PATCH /api/v1/billing/settings {"enabled": true}',
            blocks_sync=True,
        )
    if status is SyncStatus.needs_attention or (
        company.cw_agreement_id is not None and company.agreement_status in _BLOCKED_AGREEMENT
    ):
        what = (company.agreement_status or "no longer usable").lower()
        return Condition(
            SyncCondition.needs_attention,
            (state.last_error if state and state.last_error else None)
            or f"agreement {company.cw_agreement_id} is {what} in ConnectWise; nothing is written to it",
            f"map the company to an active agreement: PUT /api/v1/companies/{ref}/mapping",
        )
    if status is SyncStatus.awaiting_approval:
        return Condition(
            SyncCondition.awaiting_approval,
            "review mode: a change set waits for approval",
            f'approve it: POST /api/v1/companies/{ref}/sync {{"approve": true}} (or dismiss it)',
        )
    if status is SyncStatus.drift:
        return Condition(
            SyncCondition.drift,
            "a line was edited by hand in ConnectWise; the edit is kept, not overwritten",
            f'keep it, or overwrite it: POST /api/v1/companies/{ref}/sync {{"overwrite_drift": true}}',
        )
    if status is SyncStatus.failed:
        return Condition(
            SyncCondition.failed,
            (state.last_error if state else None) or "the last reconcile failed and retrying cannot fix it",
            f"fix the cause, then retry: POST /api/v1/companies/{ref}/sync",
        )
    if status is SyncStatus.retrying:
        return Condition(
            SyncCondition.retrying,
            (state.last_error if state else None) or "ConnectWise could not be reached",
            "nothing: it retries by itself with back-off",
        )
    if state is not None and state.due_at is not None and status is SyncStatus.pending:
        return Condition(SyncCondition.pending, "changes wait for the worker", "nothing: it runs shortly")
    if status is SyncStatus.dismissed:
        return Condition(
            SyncCondition.dismissed,
            "the last change set was dismissed; ConnectWise keeps what it held",
            f"reconcile again when ready: POST /api/v1/companies/{ref}/sync",
        )
    if company.deleted_at is not None:
        return Condition(
            SyncCondition.deleted,
            "deleted in the portal: billed through the period it was deleted in, nothing after",
            "nothing; a company.upserted webhook for it restores it",
        )
    if company.cw_agreement_id is None:
        return Condition(
            SyncCondition.not_mapped,
            "not mapped to a ConnectWise agreement"
            + ("" if company.mapped_at is None else ": billed through the period it was unmapped in, nothing after"),
            f"map it: PUT /api/v1/companies/{ref}/mapping",
            blocks_sync=company.mapped_at is None,  # never mapped: there is nothing to write
        )
    if not company.billing_enabled:
        return Condition(
            SyncCondition.billing_disabled,
            "billing is disabled for this company: the current period stays billed, nothing after",
            f'enable it: PATCH /api/v1/companies/{ref}/billing {{"enabled": true}}',
        )
    return Condition(SyncCondition.in_sync)


def summary(tenant: Tenant, company: Company, state: SyncState | None) -> dict[str, Any]:
    """The fields every view of a company's sync shares (`/companies`' summary, `/companies/{id}/sync`)."""
    where = condition(tenant, company, state)
    return {
        "status": where.status,
        "cause": where.cause,
        "action": where.action,
        "reason": state.reason if state else None,
        "due": bool(state and state.due_at is not None),
        "attempts": state.attempts if state else 0,
        "last_error": state.last_error if state else None,
        "last_success_at": state.last_success_at if state else None,
    }
