"""Effective unit price and cost of a company: its own override, else the product default."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class PriceSource(StrEnum):
    override = "override"
    product_default = "product_default"
    unset = "unset"


@dataclass(frozen=True, slots=True)
class EffectivePrice:
    unit_price: Decimal | None
    unit_cost: Decimal | None
    price_source: PriceSource
    cost_source: PriceSource

    @property
    def complete(self) -> bool:
        return self.unit_price is not None and self.unit_cost is not None


def _pick(override: Decimal | None, default: Decimal | None) -> tuple[Decimal | None, PriceSource]:
    if override is not None:
        return override, PriceSource.override
    if default is not None:
        return default, PriceSource.product_default
    return None, PriceSource.unset


def resolve_price(
    *,
    price_override: Decimal | None,
    cost_override: Decimal | None,
    default_price: Decimal | None,
    default_cost: Decimal | None,
) -> EffectivePrice:
    price, price_source = _pick(price_override, default_price)
    cost, cost_source = _pick(cost_override, default_cost)
    return EffectivePrice(unit_price=price, unit_cost=cost, price_source=price_source, cost_source=cost_source)
