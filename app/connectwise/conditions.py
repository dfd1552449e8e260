"""Build ConnectWise `conditions` strings so that no caller hand-writes one.

    (F("company/id") == 250) & (F("cancelledFlag") == False) & (F("endDate").is_null() | (F("endDate") >= when))

renders `company/id = 250 and cancelledFlag = False and (endDate = null or endDate >= [2026-11-01T00:00:00Z])`.
Strings are double-quoted with `\\` and `"` backslash-escaped (the one escape CW's grammar needs inside quotes);
`like` patterns use `*` as the wildcard, and `starts_with`/`contains_text` escape the SQL LIKE metacharacters
of user text with brackets (`[%]`, `[_]`, `[[]`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

Value = str | int | Decimal | bool | datetime | date | None


def render_value(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("condition datetimes must be timezone-aware")
        return f"[{value.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}]"
    if isinstance(value, date):
        return f"[{value.isoformat()}T00:00:00Z]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported condition value {type(value).__name__}")


def escape_like(text: str) -> str:
    """User text inside a LIKE pattern: brackets around the metacharacters so they match literally."""
    return "".join(f"[{ch}]" if ch in "[%_*" else ch for ch in text)


class Condition:
    def __init__(self, text: str, *, compound: bool = False) -> None:
        self.text = text
        self.compound = compound

    def _wrapped(self) -> str:
        return f"({self.text})" if self.compound else self.text

    def __and__(self, other: Condition) -> Condition:
        return Condition(f"{self._wrapped()} and {other._wrapped()}", compound=True)

    def __or__(self, other: Condition) -> Condition:
        return Condition(f"{self._wrapped()} or {other._wrapped()}", compound=True)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"


def all_of(conditions: Iterable[Condition]) -> Condition:
    items = list(conditions)
    if not items:
        raise ValueError("all_of() needs at least one condition")
    result = items[0]
    for item in items[1:]:
        result = result & item
    return result


@dataclass(frozen=True, slots=True)
class F:
    """A field path such as `company/id` or `product/identifier`."""

    path: str

    def __post_init__(self) -> None:
        if not self.path or not all(part.isidentifier() for part in self.path.split("/")):
            raise ValueError(f"invalid field path {self.path!r}")

    def _op(self, op: str, value: Value) -> Condition:
        return Condition(f"{self.path} {op} {render_value(value)}")

    def __eq__(self, value: Value) -> Condition:  # type: ignore[override]
        return self._op("=", value)

    def __ne__(self, value: Value) -> Condition:  # type: ignore[override]
        return self._op("!=", value)

    def __lt__(self, value: Value) -> Condition:
        return self._op("<", value)

    def __le__(self, value: Value) -> Condition:
        return self._op("<=", value)

    def __gt__(self, value: Value) -> Condition:
        return self._op(">", value)

    def __ge__(self, value: Value) -> Condition:
        return self._op(">=", value)

    def __hash__(self) -> int:
        return hash(self.path)

    def is_null(self) -> Condition:
        return self._op("=", None)

    def is_not_null(self) -> Condition:
        return self._op("!=", None)

    def like(self, pattern: str) -> Condition:
        """A raw LIKE pattern: `*` is the wildcard. Use `starts_with`/`contains_text` for user text."""
        return self._op("like", pattern)

    def starts_with(self, text: str) -> Condition:
        return self._op("like", escape_like(text) + "*")

    def contains_text(self, text: str) -> Condition:
        return self._op("like", "*" + escape_like(text) + "*")

    def contains(self, text: str) -> Condition:
        return self._op("contains", text)

    def in_(self, values: Iterable[Value]) -> Condition:
        rendered = [render_value(v) for v in values]
        if not rendered:
            raise ValueError("in_() needs at least one value")
        return Condition(f"{self.path} in ({', '.join(rendered)})")
