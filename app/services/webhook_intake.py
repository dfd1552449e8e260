"""Taking a portal delivery in (DESIGN §4): the signature checked against the tenant's secrets, the event validated
strictly, the delivery handed to the intake's next group commit. Nothing is applied here: the applier does that."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from app.context import AppContext
from app.db.inbox import Entry, Stored
from app.db.models import Tenant
from app.domain.events import KNOWN_TYPES, Event, PortalEvent, out_of_window
from app.errors import AppError, UnprocessableError, WebhookSignatureError
from app.security.webhooks import SignatureError, SignedParts
from app.services.deliveries import record_rejected
from app.services.intake_queue import IntakeFullError, IntakeTimeoutError

TENANT_ID_MAX = 64


class InvalidEventError(UnprocessableError):
    code = "invalid_event"
    title = "The event does not match the webhook contract"


class IntakeBusyError(AppError):
    status = 503
    code = "try_again"
    title = "The delivery could not be written now; send it again"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": "5"})
        super().__init__(detail, **kwargs)


RECHECKS = 3  # submissions of one delivery when its tenant's secrets rotate in between (one rotation needs two)


async def verify_delivery(ctx: AppContext, tenant_id: str, signed: SignedParts, *, fresh: bool = False) -> int:
    """Check the signature; the `secrets_version` of the secrets that matched (the intake compares it with the
    tenant's when it writes the delivery). Every failure is a `WebhookSignatureError` (401).

    The cached secrets of this process are tried first, without touching the database; only a tenant not seen yet,
    a signature the cached secrets refuse, or `fresh` (the intake saw the secrets rotate) costs a read.
    """
    cached = None if fresh else ctx.webhook_secrets.cached(tenant_id)
    if cached is not None:
        with contextlib.suppress(SignatureError):
            signed.check(cached[1])
            return cached[0]
    tenant = None
    async with ctx.sessionmaker() as session:
        if len(tenant_id) <= TENANT_ID_MAX:
            tenant = await session.get(Tenant, tenant_id)
        try:
            signed.check(
                []
                if tenant is None
                else await ctx.webhook_secrets.load(
                    session, tenant_id=tenant.id, secrets_version=tenant.secrets_version
                )
            )
        except SignatureError as exc:
            raise WebhookSignatureError(str(exc) if tenant else "no signature matches") from None
    if tenant is None:  # check([]) has already refused it; keep the types honest
        raise WebhookSignatureError("no signature matches")
    return tenant.secrets_version


def parse_event(body: bytes, *, now: datetime) -> tuple[Event | None, dict[str, Any], str]:
    """The event (None for a type this service does not know), the payload as parsed, and its text. Strict: a count
    is an integer, nesting is bounded (orjson refuses more than 1,024 levels and integers past 64 bits), and
    `effective_at` lies within 400 days of `now`."""
    try:
        text = body.decode("utf-8")  # JSON over HTTP is UTF-8 (RFC 8259); PostgreSQL keeps this text in the inbox
        payload = orjson.loads(body)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise InvalidEventError(
            "The body is not UTF-8 JSON (or nests too deep, or holds a number out of range)"
        ) from None
    if "\x00" in text or "\\u0000" in text:
        raise InvalidEventError("NUL characters are not allowed")
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise InvalidEventError("The body must be an object with a string `type`")
    if payload["type"] not in KNOWN_TYPES:
        return None, payload, text
    try:
        event = PortalEvent.model_validate(payload).root
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidEventError(
            problems,
            extra={
                "errors": [
                    {"loc": [str(p) for p in e["loc"][1:]], "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors()[:20]
                ]
            },
        ) from None
    refused = out_of_window(event, now)
    if refused is not None:
        raise InvalidEventError(refused)
    return event, payload, text


async def take_delivery(ctx: AppContext, tenant_id: str, signed: SignedParts) -> tuple[Stored, str]:
    """Verify, validate and store one delivery; how it was stored and its event type. Raises `WebhookSignatureError`
    (401), `InvalidEventError` (422; the delivery is kept as rejected) or `IntakeBusyError` (503)."""
    secrets_version = await verify_delivery(ctx, tenant_id, signed)
    received_at = ctx.now()
    try:
        _event, payload, text = parse_event(signed.body, now=received_at)
    except InvalidEventError as exc:
        await record_rejected(
            ctx,
            tenant_id=tenant_id,
            webhook_id=signed.webhook_id or "",
            body=signed.body,
            detail=exc.detail,
            received_at=received_at,
        )
        raise
    entry = Entry(
        tenant_id=tenant_id,
        webhook_id=signed.webhook_id or "",
        event_type=str(payload["type"])[:64],
        received_at=received_at,
        text=text,
        payload=payload,
        secrets_version=secrets_version,
    )
    for _ in range(RECHECKS):
        try:
            result = await ctx.intake.submit(entry)
        except IntakeFullError:
            raise IntakeBusyError("Too many deliveries are waiting to be stored; send it again shortly") from None
        except IntakeTimeoutError:
            raise IntakeBusyError("The delivery was not stored in time; send it again (same webhook-id)") from None
        if result is not Stored.recheck:
            break
        # The tenant's secrets rotated after this request checked the signature: check it against the new ones.
        entry = dataclasses.replace(entry, secrets_version=await verify_delivery(ctx, tenant_id, signed, fresh=True))
    else:
        raise IntakeBusyError("The tenant's webhook secrets kept changing while this delivery was written")
    if result is Stored.unknown_tenant:
        raise WebhookSignatureError("no signature matches")
    return result, entry.event_type
