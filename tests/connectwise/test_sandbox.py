"""Sandbox behaviours the rest of the suite relies on."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.connectwise.client import ConnectWiseClient, replace
from app.connectwise.errors import CWValidationError
from app.connectwise.sandbox.app import Sandbox


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
    body = {
        "identifier": "vend-edr",
        "description": "dup",
        "customerDescription": "dup",
        "subcategory": {"id": item.subcategory.id if item.subcategory else 0},
        "type": {"id": item.type.id if item.type else 0},
    }
    with pytest.raises(CWValidationError) as caught:
        await cw.create_catalog_item(body)
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
