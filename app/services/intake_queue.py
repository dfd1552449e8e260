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

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

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

    async def load(self, db: AsyncSession | AsyncConnection, *, tenant_id: str, secrets_version: int) -> list[str]:
        """Read and decrypt the tenant's secrets; `secrets_version` is the version read in the same transaction."""
        entries = await webhook_secret_entries(db, box=self._box(), tenant_id=tenant_id)
        self._entries[tenant_id] = (secrets_version, entries)
        return [secret for secret, _ in entries]


@dataclass(frozen=True, slots=True)
class _TenantRow:
    id: str
    secrets_version: int
    billing_enabled: bool


_SELECT_TENANTS = select(Tenant.id, Tenant.secrets_version, Tenant.billing_enabled).where(
    Tenant.id.in_(bindparam("ids", expanding=True))
)


@dataclass(frozen=True, slots=True)
class _Pending:
    delivery: Delivery
    signed: SignedParts
    secrets_version: int
    future: asyncio.Future[IntakeResult]


class IntakeQueue:
    def __init__(
        self,
        engine: AsyncEngine,
        secrets: WebhookSecretCache,
        metrics: Metrics,
        *,
        max_batch: int = 256,
        writers: int | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._secrets = secrets
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        # PostgreSQL: while one batch waits for the database the next one can be prepared and sent (row locks order
        # batches that touch the same company). SQLite has one writer at a time anyway.
        self._writers = writers or (2 if engine.dialect.name == "postgresql" else 1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, delivery: Delivery, signed: SignedParts, *, secrets_version: int) -> IntakeResult:
        """Apply the delivery in the next transaction and return its result once that transaction has committed.

        Raises `WebhookSignatureError` if the tenant's secrets rotated and the signature no longer matches, and
        whatever the database raised if even a transaction of its own could not take it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IntakeResult] = loop.create_future()
        self._pending.append(_Pending(delivery, signed, secrets_version, future))
        self._tasks = {t for t in self._tasks if not t.done() and t.get_loop() is loop}
        if len(self._tasks) < self._writers:
            self._tasks.add(loop.create_task(self._drain()))
        # Shielded: a request that goes away does not take its delivery out of a batch being written.
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Wait for the deliveries already submitted."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(t for t in self._tasks if not t.done() and t.get_loop() is loop))

    async def _drain(self) -> None:
        while self._pending:
            batch = self._take()
            try:
                # One connection for as long as batches keep coming (a checkout per batch would cost a round trip).
                async with self._engine.connect() as conn:
                    while True:
                        await self._write(conn, batch)
                        if not self._pending:
                            break
                        batch = self._take()
            except Exception:
                log.warning("intake.batch_failed", size=len(batch), exc_info=True)
                for pending in batch:  # each on its own: only a delivery that fails alone fails its request
                    await self._write_alone(pending)

    def _take(self) -> list[_Pending]:
        batch = self._pending[: self._max_batch]
        del self._pending[: len(batch)]
        return batch

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            async with self._engine.connect() as conn:
                await self._write(conn, [pending])
        except Exception as exc:
            log.exception("intake.failed", webhook_id=pending.delivery.webhook_id)
            _settle(pending, exception=exc)

    async def _write(self, conn: AsyncConnection, batch: list[_Pending]) -> None:
        """One transaction for the batch; the futures are settled only after it has committed."""
        started = time.perf_counter()
        async with conn.begin():
            ids = sorted({p.delivery.tenant_id for p in batch})
            tenants: dict[str, _TenantRow] = {
                row.id: _TenantRow(*row) for row in await conn.execute(_SELECT_TENANTS, {"ids": ids})
            }
            accepted: list[_Pending] = []
            rejected: list[_Pending] = []
            for pending in batch:
                ok = await self._still_signed(conn, tenants.get(pending.delivery.tenant_id), pending)
                (accepted if ok else rejected).append(pending)
            results = await accept_events(conn, [p.delivery for p in accepted], tenants)
        self._metrics.intake_batch_size.observe(len(batch))
        self._metrics.intake_batch_latency.observe(time.perf_counter() - started)
        for pending, result in zip(accepted, results, strict=True):
            _settle(pending, result=result)
        for pending in rejected:
            _settle(pending, exception=WebhookSignatureError("no signature matches"))

    async def _still_signed(self, conn: AsyncConnection, tenant: _TenantRow | None, pending: _Pending) -> bool:
        if tenant is None:
            return False
        if tenant.secrets_version == pending.secrets_version:
            return True
        cached = self._secrets.cached(tenant.id)
        secrets = cached[1] if cached and cached[0] == tenant.secrets_version else None
        if secrets is None:
            secrets = await self._secrets.load(conn, tenant_id=tenant.id, secrets_version=tenant.secrets_version)
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
