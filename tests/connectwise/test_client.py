"""The ConnectWise client against the sandbox: shapes, paging, errors, retries, budget, secrets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
import stamina
import stamina._core
import stamina.instrumentation
from pydantic import SecretStr

from app.connectwise.budget import BudgetRegistry, RequestBudget
from app.connectwise.client import ConnectWiseClient, CWCredentials, replace
from app.connectwise.conditions import F
from app.connectwise.errors import (
    CWAuthError,
    CWConfigurationError,
    CWForbiddenError,
    CWNetworkError,
    CWNotFoundError,
    CWThrottledError,
    CWValidationError,
)
from app.connectwise.sandbox.app import Sandbox, SandboxTransport
from app.connectwise.sandbox.credentials import SANDBOX_CREDENTIALS
from tests.conftest import SHARED_DIR
from tests.spec_validation import SpecValidator, ValidatingTransport


def _addition_body(product_id: int = 1, quantity: int = 3) -> dict[str, object]:
    return {
        "product": {"id": product_id},
        "billCustomer": "Billable",
        "quantity": quantity,
        "unitPrice": 3.0,
        "unitCost": 1.25,
        "effectiveDate": "2026-11-01T00:00:00Z",
        "lessIncluded": 0,
        "invoiceDescription": "Vendor EDR",
        "serialNumber": "cwbs:test",
    }


async def test_connects_with_codebase_lookup_and_reads_system_info(
    cw: ConnectWiseClient, transport: ValidatingTransport
) -> None:
    info = await cw.system_info()
    assert info.version == "v2025.16.101234"
    assert await cw.base_url() == "https://sandbox.connectwise.invalid/v4_6_release/apis/3.0"
    api_request = transport.requests[-1]
    expected = base64.b64encode(b"sandbox+sandbox-public:sandbox-private").decode()
    assert api_request.headers["authorization"] == f"Basic {expected}"
    assert api_request.headers["clientid"]
    assert api_request.headers["accept"] == "application/vnd.connectwise.com+json; version=2025.16"


async def test_cloud_codebase_gets_the_api_prefix() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if "/login/companyinfo/" in request.url.path:
            return httpx.Response(200, json={"Codebase": "v2025_1/", "IsCloud": "True", "CompanyName": "X"})
        return httpx.Response(200, json={"version": "v2025.1", "isCloud": True})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        creds = CWCredentials(
            site_url="https://na.myconnectwise.net",
            company_id="acme",
            public_key="p",
            private_key=SecretStr("k"),
            client_id=SecretStr("c"),
        )
        info = await ConnectWiseClient(http, creds).system_info()
    assert info.is_cloud is True
    assert seen == [
        "https://na.myconnectwise.net/login/companyinfo/acme",
        "https://api-na.myconnectwise.net/v2025_1/apis/3.0/system/info",
    ]


async def test_unknown_login_company_is_a_configuration_error(transport: ValidatingTransport) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        creds = CWCredentials(
            site_url=SANDBOX_CREDENTIALS.site_url,
            company_id="nobody",
            public_key="p",
            private_key=SecretStr("k"),
            client_id=SecretStr("c"),
        )
        with pytest.raises(CWConfigurationError, match="nobody"):
            await ConnectWiseClient(http, creds).system_info()


async def test_wrong_keys_are_an_auth_error_without_the_secret_in_it(
    transport: ValidatingTransport, fast_retries: None
) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        creds = CWCredentials(
            site_url=SANDBOX_CREDENTIALS.site_url,
            company_id="sandbox",
            public_key="sandbox-public",
            private_key=SecretStr("wrong-private-key-xyz"),
            client_id=SecretStr("client-guid-123"),
        )
        client = ConnectWiseClient(http, creds)
        with pytest.raises(CWAuthError) as caught:
            await client.system_info()
    rendered = f"{caught.value} {caught.value.describe()} {caught.value!r} {client!r} {creds!r}"
    assert "wrong-private-key-xyz" not in rendered
    assert "client-guid-123" not in rendered
    assert caught.value.status == 401


async def test_sandbox_requires_client_id(sandbox: Sandbox) -> None:
    async with sandbox.http_client() as http:
        auth = base64.b64encode(b"sandbox+sandbox-public:sandbox-private").decode()
        response = await http.get(
            "https://sandbox.connectwise.invalid/v4_6_release/apis/3.0/system/info",
            headers={"Authorization": f"Basic {auth}"},
        )
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidClientId"


async def test_paging_follows_link_headers(
    cw: ConnectWiseClient, sandbox: Sandbox, transport: ValidatingTransport
) -> None:
    for i in range(33):
        sandbox.store.companies.insert({"identifier": f"BULK{i:03}", "name": f"Bulk {i:03}", "deletedFlag": False})
    await cw.base_url()
    before = len(transport.requests)
    rows = await cw.list_pages(
        "/company/companies", conditions=F("identifier").starts_with("BULK"), page_size=10, order_by="identifier desc"
    )
    assert [r["identifier"] for r in rows] == [f"BULK{i:03}" for i in reversed(range(33))]
    assert len(transport.requests) - before == 4


async def test_forward_only_sweep_visits_every_row_once(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    for i in range(25):
        sandbox.store.companies.insert({"identifier": f"SW{i}", "name": f"Sweep {i}", "deletedFlag": False})
    seen: list[int] = []
    async for page in cw.sweep("/company/companies", page_size=7):
        seen += [row["id"] for row in page]
    assert seen == sorted(sandbox.store.companies.rows)


async def test_additions_create_read_patch_cancel(cw: ConnectWiseClient) -> None:
    created = await cw.create_addition(1, _addition_body())
    assert created.quantity == Decimal(3)
    assert created.ext_price == Decimal("9")
    first_update = created.last_updated
    patched = await cw.patch_addition(1, created.id, [replace("quantity", 9), replace("unitPrice", 3.125)])
    assert (patched.quantity, patched.unit_price, patched.ext_price) == (
        Decimal(9),
        Decimal("3.125"),
        Decimal("28.125"),
    )
    assert patched.last_updated is not None
    assert first_update is not None
    found = await cw.list_additions(1, conditions=F("serialNumber") == "cwbs:test")
    assert [a.id for a in found] == [created.id]
    cancelled = await cw.cancel_addition(1, created.id, on=datetime(2026, 11, 30, tzinfo=UTC))
    assert cancelled.cancelled_date == datetime(2026, 11, 30, tzinfo=UTC)


async def test_validation_errors_name_the_field_and_are_not_retried(
    cw: ConnectWiseClient, sandbox: Sandbox, spec_validator: SpecValidator | None
) -> None:
    with pytest.raises(CWValidationError) as caught:
        await cw.create_addition(1, {"billCustomer": "Billable", "quantity": 1})
    if spec_validator:  # this request breaks the spec on purpose; the validator must have said so
        expected = "POST /finance/agreements/1/additions request body : 'product' is a required property"
        assert spec_validator.problems == [expected]
        spec_validator.problems.clear()
    assert caught.value.status == 400
    assert any(e.field == "product" for e in caught.value.errors)
    assert "product" in caught.value.describe()
    with pytest.raises(CWValidationError, match="invalid"):
        await cw.patch_addition(1, (await cw.create_addition(1, _addition_body())).id, [replace("quantity", "twelve")])
    assert sandbox.stats["POST /finance/agreements/{id}/additions"] == 2  # one call each, no retry
    assert sandbox.stats["PATCH /finance/agreements/{id}/additions/{id}"] == 1


async def test_bundle_products_cannot_be_additions(cw: ConnectWiseClient) -> None:
    bundle = (await cw.find_catalog_items(F("identifier") == "VEND-BUNDLE"))[0]
    with pytest.raises(CWValidationError) as caught:
        await cw.create_addition(1, _addition_body(product_id=bundle.id))
    assert "bundle cannot be added" in caught.value.describe()


async def test_not_found_and_forbidden(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    with pytest.raises(CWNotFoundError):
        await cw.get_agreement(9999)
    sandbox.forbidden.add(("POST", "addition"))
    with pytest.raises(CWForbiddenError, match="permission"):
        await cw.create_addition(1, _addition_body())


async def test_bad_conditions_get_a_clear_400(cw: ConnectWiseClient) -> None:
    with pytest.raises(CWValidationError, match="position"):
        await cw.get("/company/companies", params={"conditions": 'name = "unterminated'})


async def test_throttling_uses_the_rate_limit_body(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    sandbox.inject("429", method="GET", times=20, retry_after=3)
    with pytest.raises(CWThrottledError) as caught:
        await cw.system_info()
    assert caught.value.retry_after == 3
    assert caught.value.code == "ConnectWiseAPI"
    assert "Too many requests" in caught.value.message


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """A fake clock for stamina: its public retry hook records each planned wait, and the sleep itself only
    advances a counter (so the test takes no real time)."""
    planned: list[float] = []
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    previous = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([lambda details: planned.append(details.wait_for)])
    monkeypatch.setattr(stamina._core, "_smart_sleep", fake_sleep)
    try:
        with stamina.set_testing(False):
            yield planned
    finally:
        stamina.instrumentation.set_on_retry_hooks(previous)
    assert slept == planned


async def test_retry_after_7_delays_the_next_attempt_by_at_least_7_seconds(
    transport: ValidatingTransport, sandbox: Sandbox, recorded_sleeps: list[float]
) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        client = ConnectWiseClient(http, SANDBOX_CREDENTIALS)
        await client.base_url()
        sandbox.inject("429", method="GET", path="/system/info", retry_after=7)
        info = await client.system_info()
    assert info.version
    assert len(recorded_sleeps) == 1
    assert recorded_sleeps[0] >= 7


async def test_a_huge_retry_after_is_clamped(
    transport: ValidatingTransport, sandbox: Sandbox, recorded_sleeps: list[float]
) -> None:
    async with httpx.AsyncClient(transport=transport) as http:
        client = ConnectWiseClient(http, SANDBOX_CREDENTIALS)
        await client.base_url()
        sandbox.inject("429", method="GET", path="/system/info", retry_after=86400)
        await client.system_info()
    assert recorded_sleeps == [60.0]


async def test_reads_and_patches_survive_30_percent_faults(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    created = await cw.create_addition(1, _addition_body())
    sandbox.faults.rate = 0.3
    sandbox.faults.seed = 1234
    sandbox.faults.__post_init__()
    for i in range(60):
        assert (await cw.get_agreement(1)).id == 1
        patched = await cw.patch_addition(1, created.id, [replace("quantity", i)])
        assert patched.quantity == Decimal(i)
    faults = sum(v for k, v in sandbox.stats.items() if k.startswith("fault:"))
    assert faults >= 20  # the faults really happened
    assert sandbox.store.additions.get(created.id)["quantity"] == 59


async def test_a_create_whose_response_is_lost_is_not_resent(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    await cw.base_url()
    sandbox.inject("lost_response", method="POST")
    with pytest.raises(CWNetworkError) as caught:
        await cw.create_addition(1, _addition_body())
    assert caught.value.outcome_unknown is True
    assert len(sandbox.store.additions_of(1)) == 1  # applied once, never duplicated by a blind retry


async def test_a_throttled_create_is_retried_and_created_once(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    await cw.base_url()
    sandbox.inject("429", method="POST", times=2)
    created = await cw.create_addition(1, _addition_body())
    assert [a["id"] for a in sandbox.store.additions_of(1)] == [created.id]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def _max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_budget_never_exceeds_its_rate_in_any_minute() -> None:
    clock = FakeClock()
    budget = RequestBudget(1000, window=60.0, clock=clock, sleep=clock.sleep)
    granted: list[float] = []

    async def call() -> None:
        await budget.acquire()
        granted.append(clock.now)

    await asyncio.gather(*(call() for _ in range(2000)))
    assert len(granted) == 2000
    assert _max_in_any_window(granted, 60.0) <= 1000
    assert max(granted) >= 60.0  # the second thousand had to wait


@pytest.mark.parametrize("window", [60.0, 1.0])
async def test_client_budget_keeps_the_sandbox_from_throttling(
    spec_validator: SpecValidator | None, fast_retries: None, window: float
) -> None:
    """120 requests a minute, counted per minute (as CW does) or in one-second windows (as the benchmark does): 250
    requests are never throttled and take as long as the budget makes them — in one-second windows the rate, not a
    minute's burst, sets the pace."""
    clock = FakeClock()
    sandbox = Sandbox(rate_limit_per_minute=120, rate_window=window, clock=clock)
    budgets = BudgetRegistry(120, window=window, clock=clock, sleep=clock.sleep)
    transport = ValidatingTransport(SandboxTransport(sandbox), spec_validator)
    async with httpx.AsyncClient(transport=transport) as http:
        client = ConnectWiseClient(http, SANDBOX_CREDENTIALS, budget=budgets.for_tenant("t"))
        await asyncio.gather(*(client.get_agreement(1) for _ in range(250)))
    assert sandbox.stats["throttled"] == 0
    assert sandbox.stats["GET /finance/agreements/{id}"] == 250
    per_window = 120 * window / 60
    # The budget's window is a sixtieth longer than the sandbox's; the last window's calls all go at its start.
    assert clock.now == pytest.approx(window * 61 / 60 * ((250 - 1) // per_window), rel=0.01)
    if spec_validator:
        assert spec_validator.problems == []


def test_spec_validation_is_active(spec_validator: SpecValidator | None) -> None:
    if not SHARED_DIR.exists():
        pytest.skip("../shared is absent (needs_shared)")
    assert spec_validator is not None
    assert len(spec_validator.operations) >= 80
