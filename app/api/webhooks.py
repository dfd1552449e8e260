"""`POST /webhooks/portal/{tenant_id}`: Standard Webhooks verified on the raw body, the event validated, the delivery
stored in the inbox (one group commit), then 202. Nothing is applied here: the applier does that (DESIGN §4)."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from typing import Literal

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import openapi_components
from app.api.problems import error_responses
from app.context import AppContext
from app.db.inbox import Stored
from app.domain.events import PortalEvent
from app.errors import AppError, PayloadTooLargeError, WebhookSignatureError
from app.schemas.webhooks import WebhookAck
from app.security.webhooks import SignedParts
from app.services.webhook_intake import IntakeBusyError, InvalidEventError, take_delivery

MAX_BODY_BYTES = 64 * 1024

router = APIRouter(tags=["webhooks"])


async def read_limited_body(receive: Receive, declared_length: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refused (413) as soon as it is known to be over `limit`: by its Content-Length, or while
    streaming when there is none."""
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise PayloadTooLargeError(f"Webhook bodies are limited to {limit} bytes")
    size, chunks = 0, []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"Webhook bodies are limited to {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


WEBHOOK_PATH = "/webhooks/portal/{tenant_id}"


@router.post(
    WEBHOOK_PATH,
    status_code=202,
    response_model=WebhookAck,
    summary="Receive a signed portal event (Standard Webhooks)",
    description="Verifies the signature on the raw body, validates the event and stores the delivery once per "
    "`webhook-id`; answers 202 once it is durably stored (200 for a delivery already received). The event is applied "
    "to the license history afterwards: `GET /api/v1/webhook-deliveries/{webhook_id}` shows its outcome. See "
    "docs/webhooks.md.",
    responses={
        200: {"model": WebhookAck, "description": "Already received (same webhook-id): no second effect"},
        **error_responses(WebhookSignatureError, PayloadTooLargeError, InvalidEventError, IntakeBusyError),
    },
    openapi_extra={
        "parameters": [
            {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
            for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": openapi_components.register(PortalEvent)}},
        },
    },
)
async def receive_portal_webhook(request: Request, tenant_id: str) -> Response:
    status, body = await accept_webhook(request.app.state.ctx, tenant_id, request.headers, request.receive)
    return Response(body, status_code=status, media_type="application/json")


async def accept_webhook(
    ctx: AppContext, tenant_id: str, headers: Mapping[str, str], receive: Receive
) -> tuple[int, bytes]:
    """The whole webhook answer as (status, JSON body); problems are raised as `AppError`s.

    Body limit, then signature — before anything is parsed — then the event goes into the next intake transaction
    and the answer waits for its commit. It works on the ASGI pieces rather than on a Request so that the fast path
    below can serve it without building one (this is the one route that sees bulk traffic).
    """
    signed = SignedParts(
        webhook_id=headers.get("webhook-id"),
        timestamp=headers.get("webhook-timestamp"),
        signature=headers.get("webhook-signature"),
        body=await read_limited_body(receive, headers.get("content-length")),
    )
    structlog.contextvars.bind_contextvars(tenant_id=tenant_id[:64], webhook_id=(signed.webhook_id or "")[:100])
    try:
        result, event_type = await take_delivery(ctx, tenant_id, signed)
    except WebhookSignatureError as exc:
        ctx.metrics.webhook_outcome("rejected")
        structlog.contextvars.bind_contextvars(outcome="rejected", reason=exc.detail)
        raise
    except InvalidEventError:
        ctx.metrics.webhook_outcome("invalid")
        structlog.contextvars.bind_contextvars(outcome="invalid")
        raise
    ctx.metrics.webhook_outcome(result.value)
    # No line of its own: the request's canonical log line carries these.
    structlog.contextvars.bind_contextvars(event_type=event_type, outcome=result.value)
    if result is Stored.duplicate:
        return 200, _ack("duplicate")
    return 202, _ack("accepted")


@functools.lru_cache(maxsize=4)
def _ack(status: Literal["accepted", "duplicate"]) -> bytes:
    return WebhookAck(status=status).model_dump_json().encode()


_WEBHOOK_PATH = re.compile(r"/webhooks/portal/([^/]+)")


class WebhookFastPath:
    """Serves `POST /webhooks/portal/{tenant_id}` from the middleware stack: the handler FastAPI routes to, called
    without the router's matching and dependency solving in front of it (the one route that sees bulk traffic).
    It sits inside the request-id, logging, metrics and NUL middlewares, and answers errors with the app's own
    exception handlers, so nothing about the answer differs from the routed one."""

    def __init__(self, app: ASGIApp, *, api: FastAPI) -> None:
        self.app = app
        self.api = api
        # The routed twin: its path template labels the metrics and logs.
        self.route = next(r for r in router.routes if isinstance(r, APIRoute) and r.path == WEBHOOK_PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _WEBHOOK_PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        scope["path_params"] = {"tenant_id": match.group(1)}
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # the first of a repeated header, as Starlette's Headers.get
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        try:
            status, body = await accept_webhook(self.api.state.ctx, match.group(1), headers, receive)
        except AppError as exc:
            answer = self.api.exception_handlers[AppError](Request(scope, receive), exc)
            response = await answer if inspect.isawaitable(answer) else answer
            await response(scope, receive, send)
            return
        length = str(len(body)).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [*_JSON_HEADERS, (b"content-length", length)]}
        )
        await send({"type": "http.response.body", "body": body})


_JSON_HEADERS = [(b"content-type", b"application/json")]
