"""A small closed-loop HTTP/1.1 load generator for the ingest benchmark.

Every request is signed and serialized to bytes before the clock starts, and each connection sends one request,
reads its answer and sends the next (keep-alive). Nothing but the socket work happens while measuring (run it on
uvloop, as `bench.run` does), so the generator takes a small share of the two cores the server also needs and adds
little latency of its own: httpx took about as much CPU per request as the bare endpoint it was measuring, and its
pool degraded at 32 connections — the old baseline measured the client more than the server.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def encode_post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one keep-alive POST request."""
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
        "",
        "",
    ]
    return "\r\n".join(lines).encode("latin-1") + body


@dataclass
class LoadResult:
    requests: int
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


async def run_load(url: str, requests: list[bytes], concurrency: int) -> LoadResult:
    """Send every request once over `concurrency` connections; latency per request, status counts, errors."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = itertools.count()
    result = LoadResult(requests=len(requests), elapsed_s=0.0)

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := next(counter)) < len(requests):
                started = time.perf_counter()
                try:
                    writer.write(requests[i])
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    result.transport_errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies_s.append(time.perf_counter() - started)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


async def run_paced(url: str, requests: list[bytes], rate: float, connections: int) -> LoadResult:
    """Open loop: request i is due `i / rate` seconds after the start, whatever the answers before it took; its
    latency counts from when it was due (a slow server cannot hide its queue by slowing the sender down)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    counter = itertools.count()
    result = LoadResult(requests=len(requests), elapsed_s=0.0)
    start = time.perf_counter()

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (i := next(counter)) < len(requests):
                due = start + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                try:
                    writer.write(requests[i])
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    result.transport_errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies_s.append(time.perf_counter() - due)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    result.elapsed_s = time.perf_counter() - start
    return result
