"""The tenant's billing settings and its product: the catalog item the licenses are billed as, with default price
and cost. Every change is audited; one that changes what companies are billed makes them due for a reconcile."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from app.connectwise import schemas as cw
from app.connectwise.client import ConnectWiseClient
from app.connectwise.conditions import F
from app.connectwise.errors import CWNotFoundError
from app.db.models import BillingProduct, PriceSetting, Tenant
from app.errors import ConflictError, UnprocessableError
from app.schemas.common import money_str
from app.schemas.product import CatalogItemRead, ProductCreate, ProductDefaultsUpdate, ProductMap, ProductRead
from app.schemas.setup import BillingSettingsRead, BillingSettingsUpdate
from app.security.principal import Principal
from app.services.audit import record_audit
from app.services.sync_schedule import schedule_tenant
from app.services.tenants import get_tenant

USABLE_PRODUCT_CLASSES = {"Agreement", "NonInventory", "Service"}
# Settings whose change alters what the tenant's companies are billed, or how the sync treats CW.
_RESYNC_SETTINGS = {"proration_mode", "decrease_policy", "timezone", "sync_mode", "drift_policy"}


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


# ---------------------------------------------------------------------------------------------------- settings
def settings_view(tenant: Tenant) -> BillingSettingsRead:
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


async def update_settings(
    session: AsyncSession, principal: Principal, body: BillingSettingsUpdate, *, now: datetime
) -> BillingSettingsRead:
    tenant = await get_tenant(session, principal.tenant_id)
    if body.timezone is not None:
        try:
            ZoneInfo(body.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidSettingError(
                f"Unknown timezone {body.timezone!r}; use an IANA name such as Europe/Berlin"
            ) from None
    before = settings_view(tenant).model_dump()
    columns = {"enabled": "billing_enabled"}
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        setattr(tenant, columns.get(name, name), value)
    after = settings_view(tenant).model_dump()
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
        if tenant.billing_enabled and (not before["enabled"] or set(changed) & _RESYNC_SETTINGS):
            await session.flush()
            await schedule_tenant(session, tenant_id=tenant.id, reason="settings_changed", at=now)
    return settings_view(tenant)


# ---------------------------------------------------------------------------------------------------- catalog
def unusable_reason(item: cw.CatalogItem) -> str | None:
    """Why this catalog item cannot be billed as an agreement addition, or None."""
    if item.inactive_flag:
        return f"{item.identifier} is inactive in ConnectWise"
    product_class = item.product_class or "NonInventory"
    if product_class not in USABLE_PRODUCT_CLASSES:
        return (
            f"{item.identifier} is a {product_class} item; agreement additions need an Agreement, "
            "NonInventory or Service item"
        )
    return None


def item_view(item: cw.CatalogItem) -> CatalogItemRead:
    return CatalogItemRead(
        id=item.id,
        identifier=item.identifier,
        description=item.description,
        product_class=item.product_class,
        price=money_str(item.price),
        cost=money_str(item.cost),
        inactive=bool(item.inactive_flag),
        usable=unusable_reason(item) is None,
    )


# ---------------------------------------------------------------------------------------------------- product
def product_view(product: BillingProduct) -> ProductRead:
    return ProductRead(
        cw_catalog_item_id=product.cw_catalog_item_id,
        identifier=product.identifier,
        description=product.description,
        unit_price=money_str(product.unit_price) or "0.00",
        unit_cost=money_str(product.unit_cost) or "0.00",
        updated_at=product.updated_at,
    )


async def get_product(session: AsyncSession, tenant_id: str) -> BillingProduct | None:
    return await session.get(BillingProduct, tenant_id)


async def mapped_product(session: AsyncSession, tenant_id: str) -> BillingProduct:
    product = await get_product(session, tenant_id)
    if product is None:
        raise ProductNotMappedError("Map a product with PUT or create one with POST /api/v1/billing/product")
    return product


def _price(given: Decimal | None, from_catalog: Decimal | None) -> Decimal:
    """The explicit value, else the catalog item's (CW may hold more places: rounded half up to 4)."""
    value = given if given is not None else (from_catalog or Decimal(0))
    if not value.is_finite() or not 0 <= value < Decimal(10) ** 14:
        raise ProductNotUsableError(f"the catalog item's price or cost ({value}) is out of range; give one explicitly")
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _record_defaults(session: AsyncSession, product: BillingProduct, *, now: datetime) -> None:
    """The product's default price and cost join the price timeline (they apply from each company's next period)."""
    session.add(
        PriceSetting(
            tenant_id=product.tenant_id,
            company_id=None,
            set_at=now,
            unit_price=product.unit_price,
            unit_cost=product.unit_cost,
            source="product",
        )
    )


async def _save_product(
    session: AsyncSession,
    principal: Principal,
    item: cw.CatalogItem,
    price: Decimal | None,
    cost: Decimal | None,
    *,
    action: str,
    now: datetime,
) -> ProductRead:
    product = await get_product(session, principal.tenant_id)
    before = None if product is None else product_view(product).model_dump(mode="json")
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
    after = product_view(product)
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
    _record_defaults(session, product, now=now)
    await schedule_tenant(session, tenant_id=principal.tenant_id, reason="product_changed", at=now)
    return after


async def map_product(
    session: AsyncSession, principal: Principal, client: ConnectWiseClient, body: ProductMap, *, now: datetime
) -> ProductRead:
    """Map an existing catalog item."""
    try:
        item = await client.get_catalog_item(body.cw_catalog_item_id)
    except CWNotFoundError:
        raise ProductNotUsableError(f"ConnectWise has no catalog item {body.cw_catalog_item_id}") from None
    reason = unusable_reason(item)
    if reason:
        raise ProductNotUsableError(reason)
    return await _save_product(
        session, principal, item, body.unit_price, body.unit_cost, action="billing_product.mapped", now=now
    )


async def create_product(
    session: AsyncSession, principal: Principal, client: ConnectWiseClient, body: ProductCreate, *, now: datetime
) -> ProductRead:
    """Create the catalog item in CW and map it; an identifier CW already has is refused (map that one instead)."""
    existing = await client.find_catalog_items(F("identifier") == body.identifier)
    if existing:
        raise ProductExistsError(
            f"{existing[0].identifier} already exists in ConnectWise (id {existing[0].id}); "
            "map it with PUT /api/v1/billing/product",
            extra={"cw_catalog_item_id": existing[0].id},
        )
    item = await client.create_catalog_item(
        cw.CatalogItemCreate(
            identifier=body.identifier,
            description=body.description,
            customer_description=body.customer_description,
            subcategory_id=body.subcategory_id,
            type_id=body.type_id,
            unit_price=body.unit_price,
            unit_cost=body.unit_cost,
            taxable=body.taxable,
            unit_of_measure_id=body.unit_of_measure_id,
        )
    )
    return await _save_product(
        session, principal, item, body.unit_price, body.unit_cost, action="billing_product.created", now=now
    )


async def update_product_defaults(
    session: AsyncSession, principal: Principal, body: ProductDefaultsUpdate, *, now: datetime
) -> ProductRead:
    """New default price/cost: from each default-priced company's next period (never re-rating days past)."""
    product = await get_product(session, principal.tenant_id)
    if product is None:
        raise ProductNotMappedError("Map a product first")
    before = product_view(product).model_dump(mode="json")
    if body.unit_price is not None:
        product.unit_price = body.unit_price
    if body.unit_cost is not None:
        product.unit_cost = body.unit_cost
    await session.flush()
    after = product_view(product).model_dump(mode="json")
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
        _record_defaults(session, product, now=now)
        await schedule_tenant(
            session, tenant_id=principal.tenant_id, reason="price_change", at=now, only_default_priced=True
        )
    return product_view(product)
