"""Group commit for webhook deliveries.

Each accepted delivery must be committed before its 202 goes out, and on a busy endpoint the commit — and the
statements before it — are the cost. So deliveries that arrive while a batch is being written wait for the next one
and go in together, and every request of a batch gets its answer once that batch has committed. A lone delivery is
written at once (no timer, no added latency); under load batches grow by themselves to what arrived meanwhile.

On PostgreSQL two batches can be in the database at once, and a second one starts only when it has at least as many
deliveries as the one being written (or when that one has committed): the open requests settle into two batches of
about equal size that alternate, one being answered and refilled by this process while the other is in the
database. (Taking whatever is pending the moment a writer is free instead gathers nearly all of them into one batch,
and the process waits idle while it is written.) A batch only stores deliveries in the inbox (`app/db/inbox.py`):
one statement on PostgreSQL, one transaction through SQLAlchemy Core on SQLite. The applier applies them afterwards;
every committed batch wakes it (`on_stored`).

Signatures are checked in the request against the process's cached secrets; a delivery whose tenant rotated its
secrets since is handed back untouched (`Stored.recheck`): the request checks it again against the fresh secrets and
submits it anew — a rotation without grace locks out the old secret at once.

If a batch fails as a whole (a deadlock, a lost connection, one delivery the database refuses), each of its
deliveries is tried again in a transaction of its own, so one bad delivery fails only its own request.

Nothing waits without bound: at most `max_pending` deliveries wait for a batch (more is `IntakeFullError`, a 503 the
sender retries), a request waits at most `wait_seconds` for its batch to commit (`IntakeTimeoutError`, a 503; the
delivery may still land, and the sender's retry with the same webhook-id is then a duplicate), and every statement
on the intake's own PostgreSQL connections has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.inbox import Entry, Stored, store_on_core, store_on_postgres
from app.logging import get_logger
from app.metrics import Metrics

log = get_logger("app.intake")


class IntakeFullError(Exception):
    """Too many deliveries are waiting for a batch: the sender should retry shortly."""


class IntakeTimeoutError(Exception):
    """The delivery's batch did not commit in time (it may still): the sender should retry, same webhook-id."""


COMMAND_TIMEOUT_S = 10.0  # one intake statement on PostgreSQL


@dataclass(frozen=True, slots=True)
class _Pending:
    entry: Entry
    future: asyncio.Future[Stored]


BatchWriter = Callable[[list[Entry]], Awaitable[list[Stored]]]  # stores one batch and commits it
OpenWriter = Callable[[], contextlib.AbstractAsyncContextManager[BatchWriter]]


class IntakeQueue:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        max_batch: int = 256,
        max_pending: int = 10_000,
        wait_seconds: float = 30.0,
        writers: int | None = None,
        on_stored: Callable[[], None] | None = None,
        open_writer: OpenWriter | None = None,
    ) -> None:
        """`open_writer`: how a batch reaches the database (a context that yields a function storing one batch and
        committing it); the engine's own by default. Tests inject a slow, failing or fake database here."""
        self._engine = engine
        self.open_writer: OpenWriter = open_writer or self._connect
        self._metrics = metrics
        self.on_stored = on_stored
        self._max_batch = max_batch
        self.max_pending = max_pending
        self.wait_seconds = wait_seconds
        self._pending: list[_Pending] = []
        # PostgreSQL: while one batch waits for the database the next one can be prepared and sent (row locks order
        # batches that touch the same company). SQLite has one writer at a time anyway.
        self._writers = writers or (2 if engine.dialect.name == "postgresql" else 1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: asyncio.Future[asyncpg.Pool] | None = None  # PostgreSQL: the intake's own driver connections
        self._in_flight: list[int] = []  # the sizes of the batches being written
        self._waiting: list[asyncio.Future[None]] = []  # writers waiting for the pending batch to grow

    async def submit(self, entry: Entry) -> Stored:
        """Store the delivery in the next batch and return once that batch has committed.

        Raises whatever the database raised if even a transaction of its own could not take the delivery;
        `IntakeFullError` when too many wait already, `IntakeTimeoutError` when the batch takes too long.
        """
        if len(self._pending) >= self.max_pending:
            raise IntakeFullError(f"{len(self._pending)} deliveries are waiting to be stored")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Stored] = loop.create_future()
        self._pending.append(_Pending(entry, future))
        self._wake()
        self._tasks = {t for t in self._tasks if not t.done() and t.get_loop() is loop}
        if len(self._tasks) < self._writers:
            self._tasks.add(loop.create_task(self._drain()))
        # Not shielded, and need not be: a request that goes away (or times out) cancels only its own wait; its
        # delivery stays in the batch being written (settling skips a future that is done).
        try:
            return await asyncio.wait_for(future, timeout=self.wait_seconds)
        except TimeoutError:
            raise IntakeTimeoutError(f"not stored within {self.wait_seconds:g} s") from None

    async def aclose(self) -> None:
        """Wait for the deliveries already submitted."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(t for t in self._tasks if not t.done() and t.get_loop() is loop))
        if self._pool is not None and self._pool.get_loop() is loop:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):  # a pool that never connected has nothing to close
                await (await pool).close()

    async def _drain(self) -> None:
        while self._pending:
            if not self._may_start():
                await self._wait()
                continue
            batch = self._start_batch()
            try:
                # One connection for as long as batches keep coming (a checkout per batch would cost a round trip).
                async with self.open_writer() as write:
                    while True:
                        await self._write(write, batch)
                        self._end_batch(batch)
                        batch = []
                        while self._pending and not self._may_start():
                            await self._wait()
                        if not self._pending:
                            break
                        batch = self._start_batch()
            except Exception:
                log.warning("intake.batch_failed", size=len(batch), exc_info=True)
                for pending in batch:  # each on its own: only a delivery that fails alone fails its request
                    await self._write_alone(pending)
            finally:
                if batch:
                    self._end_batch(batch)

    def _start_batch(self) -> list[_Pending]:
        batch = self._pending[: self._max_batch]
        del self._pending[: len(batch)]
        self._in_flight.append(len(batch))
        return batch

    def _end_batch(self, batch: list[_Pending]) -> None:
        self._in_flight.remove(len(batch))
        self._wake()

    def _may_start(self) -> bool:
        """Whether a free writer takes the pending deliveries now: when no batch is being written, or when they are
        at least as many as the smallest batch being written. Otherwise it waits for more, or for that batch to
        commit — never longer (see the module's docstring)."""
        return not self._in_flight or len(self._pending) >= min(self._in_flight)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        await waiter

    def _wake(self) -> None:
        if self._waiting:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            async with self.open_writer() as write:
                await self._write(write, [pending])
        except Exception as exc:
            log.exception("intake.failed", webhook_id=pending.entry.webhook_id)
            _settle(pending, exception=exc)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[BatchWriter]:
        """A function that applies one batch and commits it, on a connection held for as long as this is open."""
        if self._engine.dialect.name != "postgresql":
            async with self._engine.connect() as conn:
                yield functools.partial(store_on_core, conn)
            return
        if self._pool is None or (self._pool.done() and self._pool.exception() is not None):
            # One task makes the pool; every writer waits for it (a failed attempt is retried by the next batch).
            self._pool = asyncio.ensure_future(
                asyncpg.create_pool(
                    **asyncpg_connect_args(self._engine),
                    min_size=1,
                    max_size=self._writers,
                    reset=keep_session,
                    command_timeout=COMMAND_TIMEOUT_S,
                )
            )
        pool = await asyncio.shield(self._pool)
        async with pool.acquire() as conn:
            yield functools.partial(store_on_postgres, conn)

    async def _write(self, write: BatchWriter, batch: list[_Pending]) -> None:
        """Store the batch; the futures are settled only after it has committed."""
        started = time.perf_counter()
        results = await write([p.entry for p in batch])
        self._metrics.intake_batch_size.observe(len(batch))
        self._metrics.intake_batch_latency.observe(time.perf_counter() - started)
        for pending, result in zip(batch, results, strict=True):
            _settle(pending, result=result)
        if self.on_stored is not None and Stored.stored in results:
            self.on_stored()


async def keep_session(conn: asyncpg.Connection) -> None:
    """How the intake's pool takes a connection back. Its connections only ever run one autocommit statement, so
    there is no session state to reset, and asyncpg's reset query would cost a round trip each time a writer goes
    idle, which under bursty load is after most batches. One left inside a transaction is rolled back, as asyncpg's
    reset would."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def asyncpg_connect_args(engine: AsyncEngine) -> dict[str, Any]:
    """What the engine would pass to asyncpg for DATABASE_URL (host, credentials, database, ssl, …), without the
    options only SQLAlchemy's adapter understands."""
    _, params = engine.dialect.create_connect_args(engine.url)
    return {k: v for k, v in params.items() if not k.startswith("prepared_statement_")}


def _settle(pending: _Pending, *, result: Stored | None = None, exception: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if exception is not None:
        pending.future.set_exception(exception)
    elif result is not None:
        pending.future.set_result(result)
