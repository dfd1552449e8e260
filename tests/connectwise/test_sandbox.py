"""Sandbox behaviours the rest of the suite relies on."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.connectwise.client import ConnectWiseClient, CWCredentials, _retry_after, replace
from app.connectwise.errors import CWAuthError, CWNotFoundError, CWThrottledError, CWValidationError
from app.connectwise.sandbox.app import Sandbox
from app.connectwise.sandbox.credentials import IN_PROCESS_SITE, SANDBOX_CREDENTIALS
from app.connectwise.sandbox.store import SandboxError
from app.connectwise.schemas import CatalogItemCreate
from tests.conftest import shared_spec


async def test_patch_of_a_sub_path_is_a_false_200_like_cw(cw: ConnectWiseClient, sandbox: Sandbox) -> None:
    addition = await cw.create_addition(1, {"product": {"id": 1}, "billCustomer": "Billable", "quantity": 2})
    after = await cw.patch(
        f"/finance/agreements/1/additions/{addition.id}",
        [{"op": "replace", "path": "product/identifier", "value": "OTHER"}],
    )
    assert after["product"]["identifier"] == "VEND-EDR"
    assert sandbox.ignored_patch_paths == ["product/identifier"]


async def test_addition_defaults_and_computed_fields(cw: ConnectWiseClient) -> None:
    addition = await cw.create_addition(
        1, {"product": {"identifier": "VEND-EDR"}, "billCustomer": "Billable", "quantity": 4}
    )
    assert (addition.unit_price, addition.unit_cost) == (Decimal("3"), Decimal("1.25"))  # from the catalog item
    assert addition.ext_price == Decimal("12")
    assert addition.agreement_id == 1


async def test_catalog_identifiers_are_unique(cw: ConnectWiseClient) -> None:
    item = (await cw.search_catalog("VEND-EDR"))[0]
    duplicate = CatalogItemCreate(
        identifier="vend-edr",
        description="dup",
        customer_description="dup",
        subcategory_id=(item.subcategory.id if item.subcategory else None) or 0,
        type_id=(item.type.id if item.type else None) or 0,
        unit_price=Decimal(1),
        unit_cost=Decimal(0),
        taxable=False,
    )
    with pytest.raises(CWValidationError) as caught:
        await cw.create_catalog_item(duplicate)
    assert caught.value.errors[0].code == "ObjectExists"


async def test_search_and_lookups(cw: ConnectWiseClient) -> None:
    companies = await cw.search_companies("contoso")
    assert [c.identifier for c in companies] == ["CONTOSO"]
    agreements = await cw.list_agreements(companies[0].id)
    assert [a.name for a in agreements] == ["Managed Services"]
    assert agreements[0].billing_cycle is not None
    assert agreements[0].billing_cycle.name == "Monthly"
    cycles = {c.name: c.billing_options for c in await cw.list_billing_cycles()}
    assert cycles["One Time"] == "NotRecurring"
    assert [u.name for u in await cw.list_units_of_measure()] == ["License", "Each"]
    assert await cw.list_categories()
    assert await cw.list_subcategories()
    assert await cw.list_product_types()
    assert await cw.list_agreement_types()


async def test_patch_validates_types(cw: ConnectWiseClient) -> None:
    addition = await cw.create_addition(1, {"product": {"id": 1}, "billCustomer": "Billable", "quantity": 1})
    with pytest.raises(CWValidationError) as caught:
        await cw.patch_addition(1, addition.id, [replace("billCustomer", "Maybe")])
    assert caught.value.errors[0].field == "billCustomer"


# ---------------------------------------------------------------------------------------------- what CW refuses
def _max_lengths(schema: dict[str, Any]) -> dict[str, int]:
    """Field → limit, from the spec's `Max length: N;` descriptions (CW's own way of stating them)."""
    limits = {}
    for name, prop in schema["properties"].items():
        found = re.search(r"Max length: (\d+);", prop.get("description", ""))
        if found and prop.get("type") == "string":
            limits[name] = int(found.group(1))
    return limits


async def test_every_string_limit_the_spec_states_is_enforced(sandbox: Sandbox) -> None:
    spec = json.loads(shared_spec("openapi-subset.json").read_text())["components"]["schemas"]
    store = sandbox.store
    checked = 0
    for schema_name, collection in (
        ("Addition", store.additions),
        ("Agreement", store.agreements),
        ("Company", store.companies),
        ("CatalogItem", store.catalog),
    ):
        limits = _max_lengths(spec[schema_name])
        assert limits, schema_name
        for field_name, limit in limits.items():
            collection.validate({field_name: "x" * limit}, partial=True)  # at the limit: accepted
            with pytest.raises(SandboxError) as refused:
                collection.validate({field_name: "x" * (limit + 1)}, partial=True)
            assert refused.value.errors
            assert refused.value.errors[0]["code"] == "OutOfRange", f"{schema_name}.{field_name}"
            checked += 1
    assert checked >= 30


async def test_keys_are_compared_exactly(sandbox: Sandbox, fast_retries: None) -> None:
    async with sandbox.http_client() as http:
        for company, public, private in (
            ("SANDBOX", "sandbox-public", "sandbox-private"),  # the login company is case-insensitive
            ("sandbox", "sandbox-public", "SANDBOX-PRIVATE"),
            ("sandbox", "Sandbox-Public", "sandbox-private"),
        ):
            credentials = CWCredentials(
                site_url=IN_PROCESS_SITE,
                company_id=company,
                public_key=public,
                private_key=SecretStr(private),
                client_id=SecretStr("id"),
            )
            client = ConnectWiseClient(http, credentials, attempts=1)
            if company == "SANDBOX":
                assert (await client.system_info()).version
            else:
                with pytest.raises(CWAuthError):
                    await client.system_info()


async def test_cloud_mode_answers_bad_credentials_with_404_and_dates_retry_after(fast_retries: None) -> None:
    cloud = Sandbox(cloud=True, rate_limit_per_minute=1)
    wrong = CWCredentials(
        site_url=IN_PROCESS_SITE,
        company_id="sandbox",
        public_key="sandbox-public",
        private_key=SecretStr("not-it"),
        client_id=SecretStr("id"),
    )
    async with cloud.http_client() as http:
        with pytest.raises(CWNotFoundError):
            await ConnectWiseClient(http, wrong, attempts=1).system_info()
        client = ConnectWiseClient(http, SANDBOX_CREDENTIALS, attempts=1)
        assert (await client.system_info()).is_cloud is True
        with pytest.raises(CWThrottledError) as throttled:
            await client.system_info()
    assert throttled.value.retry_after is not None
    assert 0 < throttled.value.retry_after <= 60


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers=[(b"retry-after", value.encode())])

    assert _retry_after(answer("7")) == 7.0
    assert _retry_after(answer("120")) == 60.0  # clamped
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8.0 <= (_retry_after(answer(in_ten)) or 0) <= 10.0
    assert _retry_after(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # in the past: at once
    assert _retry_after(answer("²")) is None
    assert _retry_after(answer("soon")) is None


async def test_link_headers_keep_the_query_as_sent_and_end_with_the_page(sandbox: Sandbox) -> None:
    for n in range(30):
        sandbox.store.companies.insert({"identifier": f"EXTRA{n}", "name": f"Extra {n}", "deletedFlag": False})
    query = "conditions=deletedFlag%3DFalse&orderBy=name%20asc&pageSize=10"
    headers = {
        "authorization": SANDBOX_CREDENTIALS.authorization(),
        "clientid": "id",
    }
    _, answer, _ = await sandbox.handle(
        "GET", "/v4_6_release/apis/3.0/company/companies", query, headers, b"", origin="https://cw.example"
    )
    links = {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', answer["link"])}
    base = "https://cw.example/v4_6_release/apis/3.0/company/companies?" + query
    assert links == {"first": base + "&page=1", "next": base + "&page=2", "last": base + "&page=4"}
    # How a widely used Python CW SDK reads the page numbers: the digits right before `>`.
    pages = {rel: int(page) for page, rel in re.findall(r'page=(\d+)>; rel="(.*?)"', answer["link"])}
    assert pages == {"first": 1, "next": 2, "last": 4}
    _, answer, _ = await sandbox.handle(
        "GET",
        "/v4_6_release/apis/3.0/company/companies",
        query + "&page=2",
        headers,
        b"",
        origin="https://cw.example",
    )
    pages = {rel: int(page) for page, rel in re.findall(r'page=(\d+)>; rel="(.*?)"', answer["link"])}
    assert pages == {"first": 1, "prev": 1, "next": 3, "last": 4}
