"""Group commit for webhook deliveries.

Each accepted delivery must be committed before its 202 goes out, and on a busy endpoint the commit — and the
statements before it — are the cost. So deliveries that arrive while a transaction is being written wait for the
next one and go in together: one transaction applies the whole batch (`accept_events`), and every request of the
batch gets its answer once that transaction has committed. A lone delivery is written at once (no timer, no added
latency); under load the batch grows by itself to what arrived during the previous commit.

Signatures are checked in the request against the process's cached secrets; the batch's transaction reads the
tenants anyway, and a delivery whose tenant rotated its secrets since (`secrets_version` moved) is checked again
against the fresh ones — a rotation without grace locks out the old secret at once.

If a batch fails as a whole (a deadlock, a lost connection, one delivery the database refuses), each of its
deliveries is tried again in a transaction of its own, so one bad delivery fails only its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.models import Tenant
from app.errors import WebhookSignatureError
from app.logging import get_logger
from app.metrics import Metrics
from app.security.encryption import SecretBox
from app.security.webhooks import SignatureError, verify
from app.services.tenants import webhook_secret_entries
from app.services.webhook_intake import Delivery, IntakeResult, accept_events

log = get_logger("app.intake")


@dataclass(frozen=True, slots=True)
class SignedParts:
    """What a signature covers, kept to check it again after a rotation."""

    webhook_id: str | None
    timestamp: str | None
    signature: str | None
    body: bytes

    def check(self, secrets: list[str]) -> None:
        verify(
            secrets=secrets,
            webhook_id=self.webhook_id,
            timestamp=self.timestamp,
            signature_header=self.signature,
            body=self.body,
        )


class WebhookSecretCache:
    """Decrypted portal secrets per tenant, valid while the tenant's `secrets_version` stays where it was when they
    were loaded (every rotation, in any process, bumps it)."""

    def __init__(self, box: Callable[[], SecretBox]) -> None:
        self._box = box
        self._entries: dict[str, tuple[int, list[tuple[str, datetime | None]]]] = {}

    def cached(self, tenant_id: str) -> tuple[int, list[str]] | None:
        """(secrets_version, secrets still valid now) as last loaded, or None if never loaded."""
        entry = self._entries.get(tenant_id)
        if entry is None:
            return None
        now = utcnow()
        return entry[0], [secret for secret, until in entry[1] if until is None or until > now]

    async def load(self, session: AsyncSession, tenant: Tenant) -> list[str]:
        entries = await webhook_secret_entries(session, box=self._box(), tenant_id=tenant.id)
        self._entries[tenant.id] = (tenant.secrets_version, entries)
        return [secret for secret, _ in entries]


@dataclass(frozen=True, slots=True)
class _Pending:
    delivery: Delivery
    signed: SignedParts
    secrets_version: int
    future: asyncio.Future[IntakeResult]


class IntakeQueue:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        secrets: WebhookSecretCache,
        metrics: Metrics,
        *,
        max_batch: int = 256,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._secrets = secrets
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, delivery: Delivery, signed: SignedParts, *, secrets_version: int) -> IntakeResult:
        """Apply the delivery in the next transaction and return its result once that transaction has committed.

        Raises `WebhookSignatureError` if the tenant's secrets rotated and the signature no longer matches, and
        whatever the database raised if even a transaction of its own could not take it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IntakeResult] = loop.create_future()
        self._pending.append(_Pending(delivery, signed, secrets_version, future))
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        # Shielded: a request that goes away does not take its delivery out of a batch being written.
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Wait for the deliveries already submitted."""
        if self._task is not None and not self._task.done() and self._task.get_loop() is asyncio.get_running_loop():
            await self._task

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            try:
                await self._write(batch)
            except Exception:
                log.warning("intake.batch_failed", size=len(batch), exc_info=True)
                for pending in batch:  # each on its own: only a delivery that fails alone fails its request
                    await self._write_alone(pending)

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            await self._write([pending])
        except Exception as exc:
            log.exception("intake.failed", webhook_id=pending.delivery.webhook_id)
            _settle(pending, exception=exc)

    async def _write(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; the futures are settled only after it has committed."""
        started = time.perf_counter()
        async with self._sessionmaker() as session, session.begin():
            tenant_ids = sorted({p.delivery.tenant_id for p in batch})
            tenants = {t.id: t for t in await session.scalars(select(Tenant).where(Tenant.id.in_(tenant_ids)))}
            accepted: list[_Pending] = []
            rejected: list[_Pending] = []
            for pending in batch:
                ok = await self._still_signed(session, tenants.get(pending.delivery.tenant_id), pending)
                (accepted if ok else rejected).append(pending)
            results = await accept_events(session, [p.delivery for p in accepted], tenants)
        self._metrics.intake_batch_size.observe(len(batch))
        self._metrics.intake_batch_latency.observe(time.perf_counter() - started)
        for pending, result in zip(accepted, results, strict=True):
            _settle(pending, result=result)
        for pending in rejected:
            _settle(pending, exception=WebhookSignatureError("no signature matches"))

    async def _still_signed(self, session: AsyncSession, tenant: Tenant | None, pending: _Pending) -> bool:
        if tenant is None:
            return False
        if tenant.secrets_version == pending.secrets_version:
            return True
        cached = self._secrets.cached(tenant.id)
        secrets = cached[1] if cached and cached[0] == tenant.secrets_version else None
        if secrets is None:
            secrets = await self._secrets.load(session, tenant)
        try:
            pending.signed.check(secrets)
        except SignatureError:
            return False
        return True


def _settle(pending: _Pending, *, result: IntakeResult | None = None, exception: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if exception is not None:
        pending.future.set_exception(exception)
    elif result is not None:
        pending.future.set_result(result)
