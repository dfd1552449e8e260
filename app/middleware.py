"""Request ids, one canonical log line per request, and HTTP metrics — as a plain ASGI middleware."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logging import get_logger
from app.metrics import Metrics

log = get_logger("app.http")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Request ids: unique, not secret — a random prefix per process and a counter (32 hex digits, like a UUID's), with
# no system call per request. A forked worker draws a prefix of its own.
_ID_PREFIX = secrets.token_hex(10)
_ID_COUNTER = itertools.count()


def _new_id_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = secrets.token_hex(10)


os.register_at_fork(after_in_child=_new_id_prefix)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Bound once, when the app builds its middleware (after it configured logging): the module's lazy logger
        # would rebuild itself for every line, which cost a fifth of a webhook's CPU time.
        self.log = log.bind()
        # The labelled series of each (method, route, status), looked up once: label resolution on every request
        # costs more than the increment.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"
        # Cleared when the request ends (below), so a request starts with nothing bound but its id.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            key = (scope["method"], template, status)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = (
                    self.metrics.http_requests.labels(scope["method"], template, str(status)),
                    self.metrics.http_latency.labels(scope["method"], template),
                )
            series[0].inc()
            series[1].observe(elapsed)
            self.log.info(
                "http.request",
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


MAX_BODY = 1024 * 1024  # REST request bodies


class RejectNulMiddleware:
    """Bodies of the REST API are at most 1 MiB (413 before more is read), and NUL characters — which PostgreSQL
    cannot store and never belong in this API's input — are refused with 422 anywhere in the path, query or body (raw
    or as JSON's \\u0000 escape), before the request reaches a handler. Webhooks have their own, smaller limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = raw_path + b"?" + scope.get("query_string", b"")
        if b"%00" in target or b"\x00" in target or "\x00" in scope["path"]:
            await _reject(scope, send, "NUL characters are not allowed in the URL")
            return
        if scope["path"].startswith("/webhooks/"):
            # Signature first (a bad one is a 401 whatever the body holds); the webhook parser checks NUL after.
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        form = headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY:
            await _reject(scope, send, f"Request bodies are limited to {MAX_BODY} bytes", status=413)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            size += len(body)
            chunks.append(body)
            if size > MAX_BODY:
                await _reject(scope, send, f"Request bodies are limited to {MAX_BODY} bytes", status=413)
                return
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if b"\x00" in body or b"\\u0000" in body or (form and b"%00" in body):
            await _reject(scope, send, "NUL characters are not allowed in the body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect

        await self.app(scope, replay, send)


async def _reject(scope: Scope, send: Send, detail: str, *, status: int = 422) -> None:
    code, title = (
        ("payload_too_large", "Payload too large") if status == 413 else ("invalid_characters", "Invalid characters")
    )
    payload = json.dumps(
        {
            "type": f"https://cw-billing-sync.dev/problems/{code}",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": scope.get("path", ""),
            "code": code,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
