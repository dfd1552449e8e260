"""Portal webhooks: signatures on the raw body, strict validation, idempotency, the inbox, and what the applier makes
of each delivery in the license history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.webhooks import WebhookFastPath
from app.context import AppContext
from app.db.models import AuditEvent, Company, LicenseChange, RejectedDelivery, SyncState, WebhookInbox
from app.main import create_app
from app.security.webhooks import sign
from app.services.deliveries import purge_inbox
from app.services.tenants import NewTenant, rotate_webhook_secret
from app.settings import Settings
from tests.conftest import TenantFactory, bearer
from tests.webhook_helpers import apply_deliveries, deliver, license_event, signed_headers


@pytest.fixture
async def tenant(make_tenant: TenantFactory) -> NewTenant:
    return await make_tenant("Acme MSP")


async def _count(ctx: AppContext, model: type, **where: object) -> int:
    async with ctx.sessionmaker() as s:
        statement = select(func.count()).select_from(model)
        for key, value in where.items():
            statement = statement.where(getattr(model, key) == value)
        return int(await s.scalar(statement) or 0)


async def _company(ctx: AppContext, tenant_id: str, external_id: str) -> Company | None:
    async with ctx.sessionmaker() as s:
        return await s.scalar(select(Company).where(Company.tenant_id == tenant_id, Company.external_id == external_id))


async def test_a_delivery_is_stored_then_applied_and_its_outcome_shown(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    event = license_event("c-42", 9, sequence=17, previous=1, name="Contoso", effective_at="2026-11-16T14:03:00Z")
    response = await deliver(client, tenant.tenant_id, tenant.webhook_secret, event, webhook_id="m-17", apply=False)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted"}  # stored: the 202 promises no outcome
    headers = await bearer(client, tenant)
    pending = (await client.get("/api/v1/webhook-deliveries/m-17", headers=headers)).json()
    assert (pending["status"], pending["outcome"], pending["company_id"]) == ("pending", None, "c-42")
    assert await _count(ctx, LicenseChange) == 0  # nothing applied in the request
    assert await apply_deliveries(ctx) == 1
    shown = (await client.get("/api/v1/webhook-deliveries/m-17", headers=headers)).json()
    assert (shown["status"], shown["outcome"], shown["detail"]) == ("applied", "applied", "company created")
    company = await _company(ctx, tenant.tenant_id, "c-42")
    assert company is not None
    assert company.name == "Contoso"
    async with ctx.sessionmaker() as s:
        entry = (await s.scalars(select(LicenseChange))).one()
        audit = (await s.scalars(select(AuditEvent).where(AuditEvent.actor == "portal"))).one()
    assert (entry.license_count, entry.previous_count, entry.sequence) == (9, 1, 17)
    assert entry.effective_at == datetime(2026, 11, 16, 14, 3, tzinfo=UTC)
    assert (audit.action, audit.object_id) == ("webhook.license.count_changed", "c-42")
    assert audit.after is not None
    assert (audit.after["webhook_id"], audit.after["outcome"], audit.after["license_count"]) == ("m-17", "applied", 9)
    other = await bearer(client, await _other_tenant(ctx))
    assert (await client.get("/api/v1/webhook-deliveries/m-17", headers=other)).status_code == 404


async def test_the_longest_company_id_the_contract_allows_is_applied_and_readable(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    longest = "c." + "x" * 126  # DESIGN §4: 1–128 characters
    response = await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event(longest, 4))
    assert response.status_code == 202
    company = await _company(ctx, tenant.tenant_id, longest)
    assert company is not None
    assert company.license_count == 4
    headers = await bearer(client, tenant)
    assert (await client.get(f"/api/v1/companies/{longest}", headers=headers)).json()["license_count"] == 4
    billing = await client.patch(f"/api/v1/companies/{longest}/billing", headers=headers, json={"enabled": True})
    assert billing.status_code == 200, billing.text  # audited under the whole id
    async with ctx.sessionmaker() as s:
        audited = set(await s.scalars(select(AuditEvent.object_id).where(AuditEvent.object_type == "company")))
    assert audited == {longest}
    too_long = await client.get(f"/api/v1/companies/{longest}x", headers=headers)
    assert too_long.status_code == 422  # a clear refusal, not a database error


async def _other_tenant(ctx: AppContext) -> NewTenant:
    from app.services.tenants import create_tenant

    async with ctx.sessionmaker() as s, s.begin():
        return await create_tenant(s, box=ctx.secrets, name="Other MSP")


async def test_effective_at_defaults_to_the_delivery_time(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    before = ctx.now()
    assert (await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-1", 3))).status_code == 202
    async with ctx.sessionmaker() as s:
        entry = (await s.scalars(select(LicenseChange))).one()
    assert before - timedelta(seconds=1) <= entry.effective_at <= ctx.now()


async def test_one_hundred_concurrent_deliveries_of_one_id_have_one_effect(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    body = json.dumps(license_event("c-7", 12, sequence=3))
    headers = signed_headers(tenant.webhook_secret, body, webhook_id="msg_same")
    responses = await asyncio.gather(
        *[client.post(f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=headers) for _ in range(100)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1
    assert statuses.count(200) == 99
    assert await apply_deliveries(ctx) == 1
    assert await _count(ctx, LicenseChange) == 1
    assert await _count(ctx, WebhookInbox) == 1


async def test_the_same_webhook_id_with_another_body_is_a_duplicate(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    first = await deliver(
        client, tenant.tenant_id, tenant.webhook_secret, license_event("c-7", 12, sequence=3), webhook_id="w1"
    )
    second = await deliver(
        client, tenant.tenant_id, tenant.webhook_secret, license_event("c-7", 99, sequence=4), webhook_id="w1"
    )
    assert (first.status_code, second.status_code, second.json()) == (202, 200, {"status": "duplicate"})
    async with ctx.sessionmaker() as s:
        assert [c.license_count for c in await s.scalars(select(LicenseChange))] == [12]  # the first one stands


async def test_redelivery_72_hours_later_has_no_second_effect(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    event = license_event("c-9", 5, sequence=1)
    assert (
        await deliver(client, tenant.tenant_id, tenant.webhook_secret, event, webhook_id="msg_1")
    ).status_code == 202
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(update(WebhookInbox).values(received_at=ctx.now() - timedelta(hours=72)))
        # The inbox keeps at least 7 days: a purge now must not drop a 72-hour-old delivery.
        assert await purge_inbox(s, now=ctx.now()) == 0
    again = await deliver(client, tenant.tenant_id, tenant.webhook_secret, event, webhook_id="msg_1")
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert await _count(ctx, LicenseChange) == 1


async def test_inbox_purge_drops_only_applied_deliveries_older_than_the_retention(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    for i in range(3):
        await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-1", i, sequence=i + 1))
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-1", 9, sequence=9), apply=False)
    async with ctx.sessionmaker() as s, s.begin():
        await s.execute(update(WebhookInbox).values(received_at=ctx.now() - timedelta(days=9)))
        oldest = (await s.scalars(select(WebhookInbox).order_by(WebhookInbox.id))).first()
        assert oldest is not None
        oldest.received_at = ctx.now() - timedelta(days=9)
    async with ctx.sessionmaker() as s, s.begin():
        assert await purge_inbox(s, now=ctx.now()) == 3
    assert await _count(ctx, WebhookInbox) == 1  # the one still pending stays until applied
    assert await _count(ctx, LicenseChange) == 3  # the history is never purged


async def test_out_of_order_deliveries_both_count(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    # Sequence 3 (9 from 10 Nov) arrives before sequence 2 (4 from 5 Nov): both are in the history.
    newer = license_event("c-5", 9, sequence=3, effective_at="2026-11-10T09:00:00Z")
    older = license_event("c-5", 4, sequence=2, effective_at="2026-11-05T09:00:00Z")
    assert (await deliver(client, tenant.tenant_id, tenant.webhook_secret, newer)).status_code == 202
    assert (await deliver(client, tenant.tenant_id, tenant.webhook_secret, older)).status_code == 202
    async with ctx.sessionmaker() as s:
        rows = sorted((r.sequence, r.license_count, r.status) for r in await s.scalars(select(LicenseChange)))
    assert rows == [(2, 4, "accepted"), (3, 9, "accepted")]


async def test_a_conflicting_sequence_is_recorded_not_applied_and_sequence_0_counts(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    zero = license_event("c-5", 3, sequence=0, effective_at="2026-11-05T09:00:00Z")
    assert (await deliver(client, tenant.tenant_id, tenant.webhook_secret, zero, webhook_id="z1")).status_code == 202
    same = await deliver(client, tenant.tenant_id, tenant.webhook_secret, zero, webhook_id="z2")
    other = license_event("c-5", 8, sequence=0, effective_at="2026-11-05T09:00:00Z")
    clash = await deliver(client, tenant.tenant_id, tenant.webhook_secret, other, webhook_id="z3")
    assert (same.status_code, clash.status_code) == (202, 202)
    headers = await bearer(client, tenant)
    outcomes = [
        (await client.get(f"/api/v1/webhook-deliveries/{w}", headers=headers)).json() for w in ("z1", "z2", "z3")
    ]
    assert [o["outcome"] for o in outcomes] == ["applied", "duplicate_sequence", "conflict"]
    assert "sequence 0 already says 3 licenses" in outcomes[2]["detail"]
    async with ctx.sessionmaker() as s:
        rows = sorted((r.license_count, r.status) for r in await s.scalars(select(LicenseChange)))
    assert rows == [(3, "accepted"), (8, "conflict")]


def _reject_cases(tenant: NewTenant, other: NewTenant) -> dict[str, tuple[str, dict[str, str]]]:
    body = json.dumps(license_event("c-1", 2, sequence=1))
    good = signed_headers(tenant.webhook_secret, body)
    now = datetime.now(UTC)
    cases: dict[str, tuple[str, dict[str, str]]] = {
        "stale timestamp": (body, signed_headers(tenant.webhook_secret, body, at=now - timedelta(minutes=6))),
        "future timestamp": (body, signed_headers(tenant.webhook_secret, body, at=now + timedelta(minutes=6))),
        "tampered body": (body.replace('"license_count": 2', '"license_count": 200'), good),
        "another tenant's secret": (body, signed_headers(other.webhook_secret, body)),
        "garbage signature": (body, {**good, "webhook-signature": "garbage"}),
        "bad base64 signature": (body, {**good, "webhook-signature": "v1,!!!not-base64!!!"}),
        "unknown version": (body, {**good, "webhook-signature": "v2," + good["webhook-signature"][3:]}),
        "garbage timestamp": (body, {**good, "webhook-timestamp": "yesterday"}),
        "negative timestamp": (body, {**good, "webhook-timestamp": "-5"}),
        "huge timestamp": (body, {**good, "webhook-timestamp": "9" * 40}),
        "twelve-digit timestamp": (body, {**good, "webhook-timestamp": "9" * 12}),
        "non-ASCII digit timestamp": (body, {**good, "webhook-timestamp": "²" * 10}),
        "non-JSON body, signed differently": ("\x00\xff not json", good),
    }
    for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        cases[f"missing {header}"] = (body, {k: v for k, v in good.items() if k != header})
    return cases


async def test_every_bad_delivery_is_401_and_changes_nothing(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    tenant, other = await make_tenant("A"), await make_tenant("B")
    for name, (body, headers) in _reject_cases(tenant, other).items():
        response = await client.post(
            f"/webhooks/portal/{tenant.tenant_id}",
            content=body.encode("utf-8", "replace"),
            headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        )
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
    body = json.dumps(license_event("c-1", 2))
    unknown_tenant = await client.post(
        "/webhooks/portal/no-such-tenant", content=body, headers=signed_headers(tenant.webhook_secret, body)
    )
    assert unknown_tenant.status_code == 401
    assert await _count(ctx, WebhookInbox) == 0
    assert await _count(ctx, LicenseChange) == 0


async def test_oversize_bodies_are_413(client: httpx.AsyncClient, tenant: NewTenant) -> None:
    big = json.dumps({"type": "company.upserted", "data": {"company_id": "c", "name": "x" * (70 * 1024)}})
    response = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}", content=big, headers=signed_headers(tenant.webhook_secret, big)
    )
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is cut off while reading
        for _ in range(80):
            yield b"x" * 1024

    streamed = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}", content=chunks(), headers=signed_headers(tenant.webhook_secret, "x")
    )
    assert streamed.status_code == 413


async def test_several_signatures_and_rotation_grace(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    url = f"/webhooks/portal/{tenant.tenant_id}"
    # This process has the old secret cached; then the secret is rotated (as the CLI does, from another process).
    warm = await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-0", 1, sequence=1))
    assert warm.status_code == 202
    async with ctx.sessionmaker() as s, s.begin():
        new_secret = await rotate_webhook_secret(
            s, box=ctx.secrets, tenant_id=tenant.tenant_id, grace=timedelta(seconds=2)
        )
    body = json.dumps(license_event("c-1", 2, sequence=1))
    old_headers = signed_headers(tenant.webhook_secret, body, webhook_id="m1")
    new_headers = signed_headers(new_secret, body, webhook_id="m1")
    # The portal sends both signatures during rotation; the new secret is known at once.
    both = {**new_headers, "webhook-signature": f"v1,AAAA {old_headers['webhook-signature']}"}
    assert (await client.post(url, content=body, headers=both)).status_code == 202
    body2 = json.dumps(license_event("c-1", 3, sequence=2))
    old_only = await client.post(url, content=body2, headers=signed_headers(tenant.webhook_secret, body2))
    assert old_only.status_code == 202  # still inside the grace period
    await asyncio.sleep(2.2)  # the grace period ends
    body3 = json.dumps(license_event("c-1", 4, sequence=3))
    expired = await client.post(url, content=body3, headers=signed_headers(tenant.webhook_secret, body3))
    assert expired.status_code == 401
    ok = await client.post(url, content=body3, headers=signed_headers(new_secret, body3))
    assert ok.status_code == 202


async def test_an_immediate_rotation_locks_the_old_secret_out_at_once(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    url = f"/webhooks/portal/{tenant.tenant_id}"
    warm = await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-0", 1, sequence=1))
    assert warm.status_code == 202
    async with ctx.sessionmaker() as s, s.begin():  # a leaked secret: rotate with no grace
        await rotate_webhook_secret(s, box=ctx.secrets, tenant_id=tenant.tenant_id, grace=timedelta(0))
    body = json.dumps(license_event("c-0", 2, sequence=2))
    assert (
        await client.post(url, content=body, headers=signed_headers(tenant.webhook_secret, body))
    ).status_code == 401


async def test_an_invalid_event_with_a_valid_signature_is_422_and_kept_as_rejected(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    response = await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "license.count_changed", "data": {"company_id": "c-1", "license_count": -3, "sequence": 1}},
        webhook_id="bad-1",
    )
    assert response.status_code == 422
    assert "license_count" in response.json()["detail"]
    not_json = "definitely not json"
    response = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}",
        content=not_json,
        headers=signed_headers(tenant.webhook_secret, not_json),
    )
    assert response.status_code == 422
    # JSON in UTF-16 (which Python's json.loads would take from bytes): not what JSON over HTTP is.
    utf16 = json.dumps(license_event("c-1", 3)).encode("utf-16")
    stamp = int(datetime.now(UTC).timestamp())
    signature = sign(secret=tenant.webhook_secret, webhook_id="u16", timestamp=stamp, body=utf16)
    response = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}",
        content=utf16,
        headers={"webhook-id": "u16", "webhook-timestamp": str(stamp), "webhook-signature": signature},
    )
    assert response.status_code == 422
    assert "UTF-8" in response.json()["detail"]
    assert await _count(ctx, WebhookInbox) == 0  # none takes its webhook-id: a corrected event may reuse it
    async with ctx.sessionmaker() as s:
        kept = list(await s.scalars(select(RejectedDelivery).order_by(RejectedDelivery.id)))
    assert kept[0].webhook_id == "bad-1"
    assert len(kept) == 3
    assert "license_count" in kept[0].detail


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"company_id": "c-1", "license_count": "9", "sequence": 1}, "license_count"),
        ({"company_id": "c-1", "license_count": True, "sequence": 1}, "license_count"),
        ({"company_id": "c-1", "license_count": 1_000_001, "sequence": 1}, "license_count"),
        ({"company_id": "c-1", "license_count": 1}, "sequence"),
        ({"company_id": "c-1", "license_count": 1, "sequence": 2**63}, "sequence"),
        ({"company_id": "c-1", "license_count": 1, "sequence": -1}, "sequence"),
        ({"company_id": "a/b", "license_count": 1, "sequence": 1}, "company_id"),
        ({"company_id": "a\nb", "license_count": 1, "sequence": 1}, "company_id"),
        ({"company_id": " ", "license_count": 1, "sequence": 1}, "company_id"),
        ({"company_id": "a\u202eb", "license_count": 1, "sequence": 1}, "company_id"),
        ({"company_id": "x" * 129, "license_count": 1, "sequence": 1}, "company_id"),
        (
            {"company_id": "c-1", "license_count": 1, "sequence": 1, "effective_at": "0001-01-01T00:00:00Z"},
            "effective_at",
        ),
        (
            {"company_id": "c-1", "license_count": 1, "sequence": 1, "effective_at": "0999-06-01T00:00:00Z"},
            "effective_at",
        ),
        (
            {"company_id": "c-1", "license_count": 1, "sequence": 1, "effective_at": "9999-12-31T23:59:59Z"},
            "effective_at",
        ),
        (
            {"company_id": "c-1", "license_count": 1, "sequence": 1, "effective_at": "2026-11-16T14:03:00"},
            "effective_at",
        ),
    ],
)
async def test_the_event_schema_coerces_nothing_and_keeps_its_bounds(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext, data: dict[str, object], problem: str
) -> None:
    body = json.dumps({"type": "license.count_changed", "data": data})
    response = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=signed_headers(tenant.webhook_secret, body)
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert problem in response.json()["detail"]
    assert await _count(ctx, WebhookInbox) == 0


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"type": "license.count_changed", "data": {"company_id": "c", "license_count": ' + "9" * 5000 + "}}",
        '{"type": "x", "data": ' + '{"a":' * 2000 + "1" + "}" * 2000 + "}",
    ],
)
async def test_hostile_json_is_422_never_500(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext, body: str
) -> None:
    response = await client.post(
        f"/webhooks/portal/{tenant.tenant_id}", content=body, headers=signed_headers(tenant.webhook_secret, body)
    )
    assert response.status_code == 422
    assert await _count(ctx, WebhookInbox) == 0


async def test_unknown_event_types_are_acknowledged_not_applied(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    response = await deliver(
        client, tenant.tenant_id, tenant.webhook_secret, {"type": "license.renamed", "data": {}}, webhook_id="u1"
    )
    assert response.status_code == 202
    shown = (await client.get("/api/v1/webhook-deliveries/u1", headers=await bearer(client, tenant))).json()
    assert shown["outcome"] == "unknown_type"
    assert await _count(ctx, Company) == 0


async def test_company_upsert_delete_and_restore(client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext) -> None:
    headers = await bearer(client, tenant)

    async def outcome(payload: Mapping[str, Any], webhook_id: str) -> str:
        sent = await deliver(client, tenant.tenant_id, tenant.webhook_secret, dict(payload), webhook_id=webhook_id)
        assert sent.status_code == 202
        return str((await client.get(f"/api/v1/webhook-deliveries/{webhook_id}", headers=headers)).json()["outcome"])

    upsert = {"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso", "identifier": "CONTOSO"}}
    assert await outcome(upsert, "u1") == "created"
    company = await _company(ctx, tenant.tenant_id, "c-42")
    assert company is not None
    assert (company.name, company.identifier, company.deleted_at) == ("Contoso", "CONTOSO", None)
    renamed = {"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso Ltd"}}
    assert await outcome(renamed, "u2") == "applied"
    company = await _company(ctx, tenant.tenant_id, "c-42")
    assert company is not None
    assert (company.name, company.identifier) == ("Contoso Ltd", "CONTOSO")  # absent: unchanged
    cleared = {"type": "company.upserted", "data": {"company_id": "c-42", "name": "Contoso Ltd", "identifier": None}}
    assert await outcome(cleared, "u3") == "applied"
    company = await _company(ctx, tenant.tenant_id, "c-42")
    assert company is not None
    assert company.identifier is None  # null: cleared
    delete = {"type": "company.deleted", "data": {"company_id": "c-42"}}
    assert await outcome(delete, "d1") == "deleted"
    assert await outcome(delete, "d2") == "unknown_company"
    assert await outcome({"type": "company.deleted", "data": {"company_id": "nobody"}}, "d3") == "unknown_company"
    assert await outcome(license_event("c-42", 5, sequence=4), "l1") == "applied"  # a deleted company's history
    assert await outcome(upsert, "u4") == "restored"
    company = await _company(ctx, tenant.tenant_id, "c-42")
    assert company is not None
    assert company.deleted_at is None
    assert company.license_count == 5


async def test_change_of_an_unmapped_company_waits_in_the_history(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    await deliver(client, tenant.tenant_id, tenant.webhook_secret, license_event("c-1", 7, sequence=1))
    async with ctx.sessionmaker() as s:
        state = (await s.scalars(select(SyncState))).one()
    assert state.due_at is None  # nothing to sync until the company is mapped
    assert await _count(ctx, LicenseChange) == 1


async def test_same_company_id_in_two_tenants_stays_separate(
    client: httpx.AsyncClient, make_tenant: TenantFactory, ctx: AppContext
) -> None:
    a, b = await make_tenant("A"), await make_tenant("B")
    await deliver(client, a.tenant_id, a.webhook_secret, license_event("c-1", 3, sequence=5))
    await deliver(client, b.tenant_id, b.webhook_secret, license_event("c-1", 8, sequence=1))
    company_a = await _company(ctx, a.tenant_id, "c-1")
    company_b = await _company(ctx, b.tenant_id, "c-1")
    assert company_a is not None
    assert company_b is not None
    assert (company_a.license_count, company_b.license_count) == (3, 8)


async def test_a_signed_event_with_nul_characters_is_422(
    client: httpx.AsyncClient, tenant: NewTenant, ctx: AppContext
) -> None:
    response = await deliver(
        client,
        tenant.tenant_id,
        tenant.webhook_secret,
        {"type": "company.upserted", "data": {"company_id": "c\u0000", "name": "x"}},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_event"
    assert await _count(ctx, WebhookInbox) == 0


async def test_each_delivery_leaves_one_log_line_with_its_outcome_and_no_secret(
    settings: Settings, engine: AsyncEngine, make_tenant: TenantFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    tenant = await make_tenant("Logged MSP")
    app = create_app(settings.model_copy(update={"log_level": "INFO"}), engine=engine)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            capfd.readouterr()
            ok = await deliver(http, tenant.tenant_id, tenant.webhook_secret, license_event("c-1", 3), webhook_id="a1")
            bad = await deliver(http, tenant.tenant_id, "whsec_" + "A" * 32, license_event("c-1", 4), webhook_id="a2")
    finally:
        await app.state.ctx.aclose()
    assert (ok.status_code, bad.status_code) == (202, 401)
    output = capfd.readouterr()
    lines = [json.loads(line) for line in (output.out + output.err).splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "http.request"]
    assert [(r["status"], r["webhook_id"], r["outcome"]) for r in requests] == [
        (202, "a1", "stored"),
        (401, "a2", "rejected"),
    ]
    assert all(r["tenant_id"] == tenant.tenant_id and r["route"] == "/webhooks/portal/{tenant_id}" for r in requests)
    assert len({r["request_id"] for r in requests}) == 2
    assert tenant.webhook_secret not in output.out + output.err


async def test_the_routed_handler_answers_as_the_fast_path_does(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient, tenant: NewTenant
) -> None:
    without_fast_path = create_app(settings, engine=engine)
    without_fast_path.user_middleware = [
        m
        for m in without_fast_path.user_middleware
        if not (isinstance(m.cls, type) and issubclass(m.cls, WebhookFastPath))
    ]
    try:
        transport = httpx.ASGITransport(app=without_fast_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as routed:
            answers = []
            for name, http in (("fast", client), ("routed", routed)):
                sends = [
                    license_event("c-5", 2, sequence=1),
                    license_event("c-5", 2, sequence=1),
                    {"type": "license.count_changed"},
                ]
                responses = [
                    await deliver(http, tenant.tenant_id, tenant.webhook_secret, payload, webhook_id=f"{name}-{i // 2}")
                    for i, payload in enumerate(sends)
                ]
                responses.append(await deliver(http, tenant.tenant_id, "whsec_" + "B" * 32, sends[0]))
                answers.append(
                    [(r.status_code, r.headers["content-type"], {**r.json(), "instance": None}) for r in responses]
                )
    finally:
        await without_fast_path.state.ctx.aclose()
    assert answers[0] == answers[1]
    assert [status for status, _, _ in answers[0]] == [202, 200, 422, 401]
