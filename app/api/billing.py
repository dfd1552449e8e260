"""`/api/v1/billing/settings`, `/api/v1/billing/product`, the CW catalog and `/api/v1/audit-events`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import CW_ERROR_RESPONSES, error_responses
from app.connectwise import schemas as cw
from app.errors import NotAuthenticatedError
from app.schemas.common import IsoDateTime
from app.schemas.product import (
    CatalogItemRead,
    CatalogOption,
    CatalogOptions,
    ProductCreate,
    ProductDefaultsUpdate,
    ProductMap,
    ProductRead,
)
from app.schemas.setup import AuditEventRead, AuditPage, BillingSettingsRead, BillingSettingsUpdate
from app.services import billing_setup
from app.services.audit import AuditFilter, audit_page
from app.services.billing_setup import (
    InvalidSettingError,
    ProductExistsError,
    ProductNotMappedError,
    ProductNotUsableError,
)
from app.services.cw_connections import NotConnectedError, tenant_client
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["billing"])


@router.get(
    "/billing/settings",
    response_model=BillingSettingsRead,
    summary="Billing settings",
    responses=error_responses(NotAuthenticatedError),
)
async def get_billing_settings(principal: PrincipalDep, session: SessionDep) -> BillingSettingsRead:
    """The tenant's billing settings: the master switch, timezone (which decides the day of a change), currency,
    proration mode, decrease policy, sync mode (auto or review) and drift policy."""
    return billing_setup.settings_view(await get_tenant(session, principal.tenant_id))


@router.patch(
    "/billing/settings",
    response_model=BillingSettingsRead,
    summary="Change billing settings (enabled is the master switch)",
    responses=error_responses(NotAuthenticatedError, InvalidSettingError),
)
async def patch_billing_settings(
    body: BillingSettingsUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> BillingSettingsRead:
    """Change billing settings; fields left out stay as they are. `enabled` is the master switch: while it is off
    nothing is written to ConnectWise. Turning it on, or changing how money is computed, queues every mapped company
    for a reconcile."""
    return await billing_setup.update_settings(session, principal, body, now=ctx.now())


# ---------------------------------------------------------------------------- catalog and product
@router.get(
    "/connectwise/catalog",
    response_model=list[CatalogItemRead],
    tags=["connectwise"],
    summary="Search CW catalog items by identifier or description",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def search_catalog(
    principal: PrincipalDep,
    session: SessionDep,
    ctx: ContextDep,
    search: Annotated[str | None, Query(max_length=100)] = None,
) -> list[CatalogItemRead]:
    """Search ConnectWise catalog items by identifier or description, each marked usable or not as an agreement
    addition."""
    client = await tenant_client(ctx, session, principal.tenant_id)
    return [billing_setup.item_view(i) for i in await client.search_catalog(search, limit=50)]


@router.get(
    "/connectwise/catalog/options",
    response_model=CatalogOptions,
    tags=["connectwise"],
    summary="Categories, subcategories, product types and units of measure for creating a product",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def catalog_options(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> CatalogOptions:
    """The choices ConnectWise offers for creating a product: categories, subcategories, product types and units of
    measure."""
    client = await tenant_client(ctx, session, principal.tenant_id)

    def options(items: list[cw.NamedItem]) -> list[CatalogOption]:
        return [CatalogOption(id=i.id, name=i.name, category_id=i.category.id if i.category else None) for i in items]

    return CatalogOptions(
        categories=options(await client.list_categories()),
        subcategories=options(await client.list_subcategories()),
        types=options(await client.list_product_types()),
        units_of_measure=options(await client.list_units_of_measure()),
    )


@router.get(
    "/billing/product",
    response_model=ProductRead,
    summary="The mapped product and its defaults",
    responses=error_responses(NotAuthenticatedError, ProductNotMappedError),
)
async def get_product(principal: PrincipalDep, session: SessionDep) -> ProductRead:
    """The catalog item licenses are billed as, with the tenant's default unit price and cost. 409 `product_not_mapped`
    until one is mapped or created."""
    return billing_setup.product_view(await billing_setup.mapped_product(session, principal.tenant_id))


@router.put(
    "/billing/product",
    response_model=ProductRead,
    summary="Map an existing CW catalog item",
    responses={
        **error_responses(NotAuthenticatedError, NotConnectedError, ProductNotUsableError),
        **CW_ERROR_RESPONSES,
    },
)
async def map_product(body: ProductMap, principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> ProductRead:
    """Map an existing ConnectWise catalog item as the billed product, with a default price and cost (the item's own
    when left out). Inactive items and bundles are refused with 422 `product_not_usable`."""
    client = await tenant_client(ctx, session, principal.tenant_id)
    return await billing_setup.map_product(session, principal, client, body, now=ctx.now())


@router.post(
    "/billing/product",
    response_model=ProductRead,
    status_code=201,
    summary="Create the catalog item in CW and map it",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError, ProductExistsError), **CW_ERROR_RESPONSES},
)
async def create_product(
    body: ProductCreate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> ProductRead:
    """Create a non-inventory catalog item in ConnectWise and map it as the billed product. An identifier CW already
    has is 409 `product_exists` with its id: map that one with PUT instead."""
    client = await tenant_client(ctx, session, principal.tenant_id)
    return await billing_setup.create_product(session, principal, client, body, now=ctx.now())


@router.patch(
    "/billing/product",
    response_model=ProductRead,
    summary="Set the default unit price and cost (pushed to every company without an override)",
    responses=error_responses(NotAuthenticatedError, ProductNotMappedError),
)
async def patch_product(
    body: ProductDefaultsUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> ProductRead:
    """Change the default unit price and/or cost. It applies from each default-priced company's next billing period
    (days already past are never re-rated) and queues those companies for a reconcile."""
    return await billing_setup.update_product_defaults(session, principal, body, now=ctx.now())


# ---------------------------------------------------------------------------- audit
@router.get(
    "/audit-events",
    response_model=AuditPage,
    tags=["audit"],
    summary="Who or what changed what, with before and after",
    responses=error_responses(NotAuthenticatedError),
)
async def list_audit_events(
    principal: PrincipalDep,
    session: SessionDep,
    object_type: Annotated[str | None, Query(max_length=50)] = None,
    object_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[IsoDateTime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> AuditPage:
    """Who (which API client, the CLI or the sync) changed what, newest first, with the values before and after. Filter
    by object, action or time. Secrets never appear."""
    where = AuditFilter(object_type=object_type, object_id=object_id, action=action, since=since)
    total, rows = await audit_page(session, principal.tenant_id, where, limit=limit, offset=offset)
    return AuditPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AuditEventRead.model_validate(r, from_attributes=True) for r in rows],
    )
