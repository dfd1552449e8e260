"""`/api/v1/billing/settings`, `/api/v1/billing/product` and `/api/v1/audit-events`."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from app.api.deps import ContextDep, PrincipalDep, SessionDep
from app.api.problems import CW_ERROR_RESPONSES, error_responses
from app.connectwise import schemas as cw
from app.connectwise.conditions import F
from app.connectwise.errors import CWNotFoundError
from app.db.models import AuditEvent, BillingProduct, PriceSetting, Tenant
from app.errors import ConflictError, NotAuthenticatedError, UnprocessableError
from app.schemas.common import IsoDateTime, money_str
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
from app.services.audit import record_audit
from app.services.cw_connections import NotConnectedError, tenant_client
from app.services.sync_schedule import schedule_tenant
from app.services.tenants import get_tenant

router = APIRouter(prefix="/api/v1", tags=["billing"])
USABLE_PRODUCT_CLASSES = {"Agreement", "NonInventory", "Service"}


class InvalidSettingError(UnprocessableError):
    code = "invalid_setting"
    title = "Invalid billing setting"


class ProductNotUsableError(UnprocessableError):
    code = "product_not_usable"
    title = "This catalog item cannot be billed as an agreement addition"


class ProductNotMappedError(ConflictError):
    code = "product_not_mapped"
    title = "No product is mapped yet"


class ProductExistsError(ConflictError):
    code = "product_exists"
    title = "A catalog item with this identifier already exists"


def _settings(tenant: Tenant) -> BillingSettingsRead:
    return BillingSettingsRead.model_validate(
        {
            "enabled": tenant.billing_enabled,
            "timezone": tenant.timezone,
            "currency": tenant.currency,
            "proration_mode": tenant.proration_mode,
            "decrease_policy": tenant.decrease_policy,
            "sync_mode": tenant.sync_mode,
            "drift_policy": tenant.drift_policy,
        }
    )


@router.get(
    "/billing/settings",
    response_model=BillingSettingsRead,
    summary="Billing settings",
    responses=error_responses(NotAuthenticatedError),
)
async def get_billing_settings(principal: PrincipalDep, session: SessionDep) -> BillingSettingsRead:
    return _settings(await get_tenant(session, principal.tenant_id))


@router.patch(
    "/billing/settings",
    response_model=BillingSettingsRead,
    summary="Change billing settings (enabled is the master switch)",
    responses=error_responses(NotAuthenticatedError, InvalidSettingError),
)
async def patch_billing_settings(
    body: BillingSettingsUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> BillingSettingsRead:
    tenant = await get_tenant(session, principal.tenant_id)
    if body.timezone is not None:
        try:
            ZoneInfo(body.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSettingError(
                f"Unknown timezone {body.timezone!r}; use an IANA name such as Europe/Berlin"
            ) from None
    before = _settings(tenant).model_dump()
    columns = {"enabled": "billing_enabled"}
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        setattr(tenant, columns.get(name, name), value)
    after = _settings(tenant).model_dump()
    changed = {k: after[k] for k in after if after[k] != before[k]}
    if changed:
        await record_audit(
            session,
            tenant_id=tenant.id,
            actor=principal.actor,
            action="billing_settings.changed",
            object_type="billing_settings",
            object_id=None,
            before={k: before[k] for k in changed},
            after=changed,
        )
        if tenant.billing_enabled and (
            not before["enabled"]
            or set(changed) & {"proration_mode", "decrease_policy", "timezone", "sync_mode", "drift_policy"}
        ):
            await session.flush()
            await schedule_tenant(session, tenant_id=tenant.id, reason="settings_changed", at=ctx.now())
    return _settings(tenant)


# ---------------------------------------------------------------------------- catalog and product
def _item(item: cw.CatalogItem) -> CatalogItemRead:
    return CatalogItemRead(
        id=item.id,
        identifier=item.identifier,
        description=item.description,
        product_class=item.product_class,
        price=money_str(item.price),
        cost=money_str(item.cost),
        inactive=bool(item.inactive_flag),
        usable=_unusable_reason(item) is None,
    )


def _unusable_reason(item: cw.CatalogItem) -> str | None:
    if item.inactive_flag:
        return f"{item.identifier} is inactive in ConnectWise"
    product_class = item.product_class or "NonInventory"
    if product_class not in USABLE_PRODUCT_CLASSES:
        return (
            f"{item.identifier} is a {product_class} item; agreement additions need an Agreement, "
            "NonInventory or Service item"
        )
    return None


def _product(product: BillingProduct) -> ProductRead:
    return ProductRead(
        cw_catalog_item_id=product.cw_catalog_item_id,
        identifier=product.identifier,
        description=product.description,
        unit_price=money_str(product.unit_price) or "0.00",
        unit_cost=money_str(product.unit_cost) or "0.00",
        updated_at=product.updated_at,
    )


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
    client = await tenant_client(ctx, session, principal.tenant_id)
    return [_item(i) for i in await client.search_catalog(search, limit=50)]


@router.get(
    "/connectwise/catalog/options",
    response_model=CatalogOptions,
    tags=["connectwise"],
    summary="Categories, subcategories, product types and units of measure for creating a product",
    responses={**error_responses(NotAuthenticatedError, NotConnectedError), **CW_ERROR_RESPONSES},
)
async def catalog_options(principal: PrincipalDep, session: SessionDep, ctx: ContextDep) -> CatalogOptions:
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
    product = await session.get(BillingProduct, principal.tenant_id)
    if product is None:
        raise ProductNotMappedError("Map a product with PUT or create one with POST /api/v1/billing/product")
    return _product(product)


def _price(given: Decimal | None, from_catalog: Decimal | None) -> Decimal:
    """The explicit value, else the catalog item's (CW may hold more places: rounded half up to 4)."""
    value = given if given is not None else (from_catalog or Decimal(0))
    if not value.is_finite() or not 0 <= value < Decimal(10) ** 14:
        raise ProductNotUsableError(f"the catalog item's price or cost ({value}) is out of range; give one explicitly")
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


async def _save_product(
    session: SessionDep,
    principal: PrincipalDep,
    item: cw.CatalogItem,
    price: Decimal | None,
    cost: Decimal | None,
    action: str,
    ctx: ContextDep,
) -> ProductRead:
    product = await session.get(BillingProduct, principal.tenant_id)
    before = None if product is None else _product(product).model_dump(mode="json")
    unit_price, unit_cost = _price(price, item.price), _price(cost, item.cost)
    if product is None:
        product = BillingProduct(
            tenant_id=principal.tenant_id,
            cw_catalog_item_id=item.id,
            identifier=item.identifier,
            description=item.description,
            unit_price=unit_price,
            unit_cost=unit_cost,
        )
        session.add(product)
    else:
        product.cw_catalog_item_id, product.identifier, product.description = item.id, item.identifier, item.description
        product.unit_price, product.unit_cost = unit_price, unit_cost
    await session.flush()
    after = _product(product)
    await record_audit(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action=action,
        object_type="billing_product",
        object_id=str(item.id),
        before=before,
        after=after.model_dump(mode="json"),
    )
    _record_defaults(session, product, ctx)
    await schedule_tenant(session, tenant_id=principal.tenant_id, reason="product_changed", at=ctx.now())
    return after


def _record_defaults(session: SessionDep, product: BillingProduct, ctx: ContextDep) -> None:
    """The product's default price and cost join the price timeline (they apply from each company's next period)."""
    session.add(
        PriceSetting(
            tenant_id=product.tenant_id,
            company_id=None,
            set_at=ctx.now(),
            unit_price=product.unit_price,
            unit_cost=product.unit_cost,
            source="product",
        )
    )


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
    client = await tenant_client(ctx, session, principal.tenant_id)
    try:
        item = await client.get_catalog_item(body.cw_catalog_item_id)
    except CWNotFoundError:
        raise ProductNotUsableError(f"ConnectWise has no catalog item {body.cw_catalog_item_id}") from None
    reason = _unusable_reason(item)
    if reason:
        raise ProductNotUsableError(reason)
    return await _save_product(session, principal, item, body.unit_price, body.unit_cost, "billing_product.mapped", ctx)


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
    client = await tenant_client(ctx, session, principal.tenant_id)
    existing = await client.find_catalog_items(F("identifier") == body.identifier)
    if existing:
        raise ProductExistsError(
            f"{existing[0].identifier} already exists in ConnectWise (id {existing[0].id}); "
            "map it with PUT /api/v1/billing/product",
            extra={"cw_catalog_item_id": existing[0].id},
        )
    payload: dict[str, Any] = {
        "identifier": body.identifier,
        "description": body.description,
        "customerDescription": body.customer_description,
        "subcategory": {"id": body.subcategory_id},
        "type": {"id": body.type_id},
        "productClass": "NonInventory",
        "price": float(body.unit_price),
        "cost": float(body.unit_cost),
        "taxableFlag": body.taxable,
    }
    if body.unit_of_measure_id is not None:
        payload["unitOfMeasure"] = {"id": body.unit_of_measure_id}
    item = await client.create_catalog_item(payload)
    return await _save_product(
        session, principal, item, body.unit_price, body.unit_cost, "billing_product.created", ctx
    )


@router.patch(
    "/billing/product",
    response_model=ProductRead,
    summary="Set the default unit price and cost (pushed to every company without an override)",
    responses=error_responses(NotAuthenticatedError, ProductNotMappedError),
)
async def patch_product(
    body: ProductDefaultsUpdate, principal: PrincipalDep, session: SessionDep, ctx: ContextDep
) -> ProductRead:
    product = await session.get(BillingProduct, principal.tenant_id)
    if product is None:
        raise ProductNotMappedError("Map a product first")
    before = _product(product).model_dump(mode="json")
    if body.unit_price is not None:
        product.unit_price = body.unit_price
    if body.unit_cost is not None:
        product.unit_cost = body.unit_cost
    await session.flush()
    after = _product(product).model_dump(mode="json")
    if after != before:
        await record_audit(
            session,
            tenant_id=principal.tenant_id,
            actor=principal.actor,
            action="billing_product.defaults_changed",
            object_type="billing_product",
            object_id=str(product.cw_catalog_item_id),
            before={"unit_price": before["unit_price"], "unit_cost": before["unit_cost"]},
            after={"unit_price": after["unit_price"], "unit_cost": after["unit_cost"]},
        )
        _record_defaults(session, product, ctx)
        await schedule_tenant(
            session, tenant_id=principal.tenant_id, reason="price_change", at=ctx.now(), only_default_priced=True
        )
    return _product(product)


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
    statement = select(AuditEvent).where(AuditEvent.tenant_id == principal.tenant_id)
    if object_type:
        statement = statement.where(AuditEvent.object_type == object_type)
    if object_id:
        statement = statement.where(AuditEvent.object_id == object_id)
    if action:
        statement = statement.where(AuditEvent.action == action)
    if since is not None:
        statement = statement.where(AuditEvent.created_at >= since)
    total = await session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = await session.scalars(statement.order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
    return AuditPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AuditEventRead.model_validate(r, from_attributes=True) for r in rows],
    )
