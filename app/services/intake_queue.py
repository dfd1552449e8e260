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
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.db.base import utcnow
from app.db.intake_store import AsyncpgIntakeStore, CoreIntakeStore, IntakeStore, TenantRow
from app.errors import WebhookSignatureError
from app.logging import get_logger
from app.metrics import Metrics
from app.security.encryption import SecretBox
from app.security.webhooks import SignatureError, SignedParts
from app.services.tenants import webhook_secret_entries
from app.services.webhook_intake import Delivery, IntakeResult, accept_events

log = get_logger("app.intake")
GATHER_TURNS = 3


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


class _Connection(Protocol):
    store: IntakeStore

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]: ...

    async def load_secrets(self, cache: WebhookSecretCache, tenant: TenantRow) -> list[str]: ...


class _CoreConnection:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.store: IntakeStore = CoreIntakeStore(conn)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.conn.begin()

    async def load_secrets(self, cache: WebhookSecretCache, tenant: TenantRow) -> list[str]:
        # On this connection: on SQLite another one would wait for this transaction's write lock.
        return await cache.load(self.conn, tenant_id=tenant.id, secrets_version=tenant.secrets_version)


class _PgConnection:
    def __init__(self, conn: asyncpg.Connection, engine: AsyncEngine) -> None:
        self.conn = conn
        self.engine = engine
        self.store: IntakeStore = AsyncpgIntakeStore(conn)

    async def load_secrets(self, cache: WebhookSecretCache, tenant: TenantRow) -> list[str]:
        async with self.engine.connect() as conn:  # a plain read beside the batch's transaction
            return await cache.load(conn, tenant_id=tenant.id, secrets_version=tenant.secrets_version)

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        transaction: contextlib.AbstractAsyncContextManager[Any] = self.conn.transaction()
        return transaction


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
        self._pool: asyncio.Future[asyncpg.Pool] | None = None  # PostgreSQL: the intake's own driver connections

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
        if self._pool is not None and self._pool.get_loop() is loop:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):  # a pool that never connected has nothing to close
                await (await pool).close()

    async def _drain(self) -> None:
        # A writer that starts lets the event loop turn a few times first (no timer: microseconds when idle), so the
        # requests of the same burst that are already being read join its first batch instead of starting their own.
        for _ in range(GATHER_TURNS):
            await asyncio.sleep(0)
        while self._pending:
            batch = self._take()
            try:
                # One connection for as long as batches keep coming (a checkout per batch would cost a round trip).
                async with self._connect() as conn:
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
            async with self._connect() as conn:
                await self._write(conn, [pending])
        except Exception as exc:
            log.exception("intake.failed", webhook_id=pending.delivery.webhook_id)
            _settle(pending, exception=exc)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[_Connection]:
        if self._engine.dialect.name != "postgresql":
            async with self._engine.connect() as conn:
                yield _CoreConnection(conn)
            return
        if self._pool is None or (self._pool.done() and self._pool.exception() is not None):
            # One task makes the pool; every writer waits for it (a failed attempt is retried by the next batch).
            self._pool = asyncio.ensure_future(
                asyncpg.create_pool(**asyncpg_connect_args(self._engine), min_size=1, max_size=self._writers)
            )
        pool = await asyncio.shield(self._pool)
        async with pool.acquire() as conn:
            yield _PgConnection(conn, self._engine)

    async def _write(self, conn: _Connection, batch: list[_Pending]) -> None:
        """One transaction for the batch; the futures are settled only after it has committed."""
        started = time.perf_counter()
        async with conn.transaction():
            tenants = await conn.store.tenants(sorted({p.delivery.tenant_id for p in batch}))
            accepted: list[_Pending] = []
            rejected: list[_Pending] = []
            for pending in batch:
                ok = await self._still_signed(conn, tenants.get(pending.delivery.tenant_id), pending)
                (accepted if ok else rejected).append(pending)
            results = await accept_events(conn.store, [p.delivery for p in accepted], tenants)
        self._metrics.intake_batch_size.observe(len(batch))
        self._metrics.intake_batch_latency.observe(time.perf_counter() - started)
        for pending, result in zip(accepted, results, strict=True):
            _settle(pending, result=result)
        for pending in rejected:
            _settle(pending, exception=WebhookSignatureError("no signature matches"))

    async def _still_signed(self, conn: _Connection, tenant: TenantRow | None, pending: _Pending) -> bool:
        if tenant is None:
            return False
        if tenant.secrets_version == pending.secrets_version:
            return True
        cached = self._secrets.cached(tenant.id)
        secrets = cached[1] if cached and cached[0] == tenant.secrets_version else None
        if secrets is None:  # rare: a rotation since the request was checked
            secrets = await conn.load_secrets(self._secrets, tenant)
        try:
            pending.signed.check(secrets)
        except SignatureError:
            return False
        return True


def asyncpg_connect_args(engine: AsyncEngine) -> dict[str, Any]:
    """What the engine would pass to asyncpg for DATABASE_URL (host, credentials, database, ssl, …), without the
    options only SQLAlchemy's adapter understands."""
    _, params = engine.dialect.create_connect_args(engine.url)
    return {k: v for k, v in params.items() if not k.startswith("prepared_statement_")}


def _settle(pending: _Pending, *, result: IntakeResult | None = None, exception: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if exception is not None:
        pending.future.set_exception(exception)
    elif result is not None:
        pending.future.set_result(result)
