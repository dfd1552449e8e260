from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas.common import MoneyStr, PriceIn


class CatalogItemRead(BaseModel):
    id: int
    identifier: str
    description: str
    product_class: str | None
    price: MoneyStr | None
    cost: MoneyStr | None
    inactive: bool
    usable: bool = Field(description="Whether it can be billed as an agreement addition")


class CatalogOption(BaseModel):
    id: int
    name: str
    category_id: int | None = None


class CatalogOptions(BaseModel):
    categories: list[CatalogOption]
    subcategories: list[CatalogOption]
    types: list[CatalogOption]
    units_of_measure: list[CatalogOption]


class ProductMap(BaseModel):
    cw_catalog_item_id: int = Field(ge=1, le=2**31 - 1)
    unit_price: PriceIn | None = Field(default=None, description="Default: the catalog item's price")
    unit_cost: PriceIn | None = Field(default=None, description="Default: the catalog item's cost")


class ProductCreate(BaseModel):
    identifier: str = Field(min_length=1, max_length=75)
    description: str = Field(min_length=1, max_length=60)
    customer_description: str = Field(min_length=1, max_length=6000)
    subcategory_id: int = Field(ge=1, le=2**31 - 1)
    type_id: int = Field(ge=1, le=2**31 - 1)
    unit_of_measure_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    unit_price: PriceIn
    unit_cost: PriceIn
    taxable: bool = False


class ProductDefaultsUpdate(BaseModel):
    unit_price: PriceIn | None = None
    unit_cost: PriceIn | None = None


class ProductRead(BaseModel):
    cw_catalog_item_id: int
    identifier: str
    description: str
    unit_price: MoneyStr
    unit_cost: MoneyStr
    updated_at: datetime
