"""Building a synced tenant in tests and reading what the sandbox's agreement holds."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.connectwise.sandbox.app import Sandbox
from app.context import AppContext
from app.sync.worker import Worker

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def worker(ctx: AppContext, *, now: datetime = NOW, **kwargs: Any) -> Worker:
    return Worker(ctx, billing_now=lambda: now, full_reconcile_every=None, **kwargs)


def additions(sandbox: Sandbox, agreement_id: int, *, product_id: int = 1) -> list[dict[str, Any]]:
    return [
        sandbox.store.render_addition(a)
        for a in sandbox.store.additions_of(agreement_id)
        if a["product"]["id"] == product_id
    ]


def by_role(sandbox: Sandbox, agreement_id: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"base": [], "proration": [], "delta": [], "other": []}
    for a in additions(sandbox, agreement_id):
        serial = a.get("serialNumber") or ""
        role = (
            "base"
            if serial.endswith(":base")
            else "proration"
            if ":p" in serial
            else "delta"
            if ":d" in serial
            else "other"
        )
        out[role].append(a)
    return out


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))
