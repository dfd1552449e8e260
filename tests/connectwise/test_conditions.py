"""The conditions builder and the sandbox parser agree: any value round-trips, LIKE text matches literally."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.connectwise.conditions import F, all_of, render_value
from app.connectwise.sandbox.conditions import ConditionSyntaxError, evaluate, parse

EXAMPLES = settings(max_examples=2000, deadline=None)


@EXAMPLES
@given(value=st.text())
def test_any_string_round_trips(value: str) -> None:
    assert parse(str(F("name") == value)) == ("cmp", "name", "=", value)
    assert evaluate(parse(str(F("name") == value)), {"name": value})


@EXAMPLES
@given(value=st.text(min_size=1), before=st.text(max_size=5), after=st.text(max_size=5))
def test_contains_text_matches_user_text_literally(value: str, before: str, after: str) -> None:
    condition = parse(str(F("name").contains_text(value)))
    assert evaluate(condition, {"name": before + value + after})
    assert evaluate(parse(str(F("name").starts_with(value))), {"name": value + after})


@EXAMPLES
@given(value=st.text(alphabet="ab%_*[]", min_size=1, max_size=6), other=st.text(alphabet="abcxyz", max_size=6))
def test_like_metacharacters_in_user_text_are_not_wildcards(value: str, other: str) -> None:
    condition = parse(str(F("name").contains_text(value)))
    assert evaluate(condition, {"name": other}) == (value.lower() in other.lower())


@EXAMPLES
@given(
    values=st.lists(
        st.one_of(st.integers(-(10**9), 10**9), st.text(), st.booleans(), st.none()), min_size=1, max_size=5
    )
)
def test_in_lists_round_trip(values: list[object]) -> None:
    node = parse(str(F("company/id").in_(values)))  # type: ignore[arg-type]
    assert node[0] == "in"
    expected = [Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    assert node[2] == expected


def test_rendering_of_every_value_type() -> None:
    assert render_value(True) == "True"
    assert render_value(None) == "null"
    assert render_value(Decimal("3.50")) == "3.50"
    assert render_value(datetime(2026, 11, 16, 14, 3, tzinfo=UTC)) == "[2026-11-16T14:03:00Z]"
    assert render_value('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'
    with pytest.raises(ValueError, match="timezone-aware"):
        render_value(datetime(2026, 1, 1))  # noqa: DTZ001


def test_compound_conditions_keep_their_grouping() -> None:
    moment = datetime(2026, 11, 1, tzinfo=UTC)
    condition = all_of([F("agreement/id") == 17, F("cancelledDate").is_null() | (F("cancelledDate") > moment)])
    text = str(condition)
    assert text == "agreement/id = 17 and (cancelledDate = null or cancelledDate > [2026-11-01T00:00:00Z])"
    node = parse(text)
    assert evaluate(node, {"agreement": {"id": 17}, "cancelledDate": None})
    assert evaluate(node, {"agreement": {"id": 17}, "cancelledDate": "2026-12-01T00:00:00Z"})
    assert not evaluate(node, {"agreement": {"id": 17}, "cancelledDate": "2026-10-01T00:00:00Z"})
    assert not evaluate(node, {"agreement": {"id": 18}, "cancelledDate": None})


@pytest.mark.parametrize(
    "text",
    [
        'name = "x',
        "name = ",
        "= 3",
        "name ~ 3",
        "(name = 1",
        "name = 1 and",
        "name in 1",
        "a = [not-a-date]",
        "name like 3",
    ],
)
def test_bad_syntax_is_reported_with_a_position(text: str) -> None:
    with pytest.raises(ConditionSyntaxError, match="position"):
        parse(text)


def test_field_paths_are_validated() -> None:
    with pytest.raises(ValueError, match="invalid field path"):
        F("name = 1 or x")


_actuals = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["a", "A", "b", "1", "x y"]),
    st.decimals(allow_nan=False, places=2, min_value=-5, max_value=5),
    st.lists(st.integers(0, 2), max_size=2),
)


@EXAMPLES
@given(
    actual=_actuals,
    values=st.one_of(
        st.lists(st.integers(-5, 5), min_size=1, max_size=4),
        st.lists(st.sampled_from(["a", "B", "1", "x y"]), min_size=1, max_size=4),
    ),
    negated=st.booleans(),
)
def test_in_lists_decided_by_set_lookup_match_comparing_each_value(
    actual: object, values: list[object], negated: bool
) -> None:
    rendered = ", ".join(render_value(v) for v in values)  # type: ignore[arg-type]
    node = parse(f"field {'not in' if negated else 'in'} ({rendered})")
    assert node[4] is not None  # homogeneous values: the set lookup decides
    one_by_one = (*node[:4], None)
    record = {"field": actual}
    assert evaluate(node, record) == evaluate(one_by_one, record)


AGREEMENT = {
    "id": 17,
    "name": "Managed Services",
    "company": {"id": 250, "identifier": "CONTOSO"},
    "type": {"name": "Managed Services"},
    "cancelledFlag": False,
    "noEndingDateFlag": False,
    "endDate": "2025-06-30T00:00:00Z",
    "summary": "monthly licenses",
    "value": None,
    "_info": {"lastUpdated": "2025-03-02T10:00:00Z"},
}
ADDITION = {
    "id": 5,
    "product": {"identifier": "VEND-EDR", "id": 1234},
    "agreement": {"id": 17},
    "cancelledDate": "2025-03-31T00:00:00Z",
    "lastUpdated": "2025-03-02T10:00:00Z",
    "communicationItems": {"value": "john@contoso.com"},
    "caption": "Renewal",
}


@pytest.mark.parametrize(
    ("conditions", "record", "expected"),
    [
        # SEMANTICS §2.1, ConnectWise's documented syntax, each with the answer worked out by hand.
        ('name = "Managed Services"', AGREEMENT, True),
        ('name = "Contoso"', AGREEMENT, False),
        ('product/identifier like "VEND*"', ADDITION, True),
        ('product/identifier like "HUNT*"', ADDITION, False),
        ("company/id = 250", AGREEMENT, True),
        ("cancelledFlag = False", AGREEMENT, True),
        ("lastUpdated > [2025-03-01T00:00:00Z]", ADDITION, True),
        ("lastUpdated > [2025-03-03T00:00:00Z]", ADDITION, False),
        ('type/name = "Managed Services"', AGREEMENT, True),
        ("agreement/id = 17", ADDITION, True),
        ("company/id in (250, 251, 252)", AGREEMENT, True),
        ("company/id in (251, 252)", AGREEMENT, False),
        ('product/identifier in ("A","VEND-EDR")', ADDITION, True),
        ("cancelledDate = null", ADDITION, False),
        ("value != null", AGREEMENT, False),
        ('summary not contains "x"', AGREEMENT, True),
        ('summary Not Contains "licenses"', AGREEMENT, False),
        ('company/id = 250 AND name = "Managed Services"', AGREEMENT, True),
        ('identifier="CONTOSO"', {"identifier": "CONTOSO"}, True),
        (
            'company/id=250 and type/name="Managed Services" and cancelledFlag=False and (endDate=null or '
            "endDate>=[2025-03-01T00:00:00Z] or noEndingDateFlag=True)",
            AGREEMENT,
            True,
        ),
        (
            'company/id=250 and type/name="Managed Services" and cancelledFlag=False and (endDate=null or '
            "endDate>=[2025-07-01T00:00:00Z] or noEndingDateFlag=True)",
            AGREEMENT,
            False,
        ),
        (
            'product/identifier="VEND-EDR" and (cancelledDate=null or cancelledDate>[2025-03-17T00:00:00Z])',
            ADDITION,
            True,
        ),
        ('identifier="VEND-EDR" and inactiveFlag=False', {"identifier": "VEND-EDR", "inactiveFlag": False}, True),
        ('communicationItems/value like "john@*"', ADDITION, True),
        ('caption = "Renewal" and value != null', {"caption": "Renewal", "value": "2026"}, True),
        ('caption = "Renewal" and value != null', ADDITION, False),
    ],
)
def test_connectwise_documented_examples(conditions: str, record: dict[str, object], expected: bool) -> None:
    assert evaluate(parse(conditions), record) is expected


@pytest.mark.parametrize("conditions", ['name = "unterminated', "company/id = ", "(a = 1", 'name == "x"', "a = [nope]"])
def test_malformed_conditions_are_refused(conditions: str) -> None:
    with pytest.raises(ConditionSyntaxError):
        parse(conditions)
