"""The sandbox's parser and evaluator for ConnectWise `conditions` (and the grammar the client's builder emits).

    expr       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not"? ( "(" expr ")" | comparison )
    comparison := FIELD op value | FIELD "not"? ("in" "(" value ("," value)* ")" | "like" STR | "contains" STR)
    op         := "=" | "!=" | "<" | "<=" | ">" | ">="
    value      := STR | NUMBER | True | False | null | "[" DATETIME "]"

Strings are double-quoted with backslash escapes; keywords are case-insensitive. LIKE patterns: `*` and `%` match
any run, `_` one character, `[x]` the character x literally.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class ConditionSyntaxError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # field, string, number, datetime, op, lparen, rparen, comma, word
    text: str
    value: Any
    position: int


_WORDS = {"and", "or", "not", "in", "like", "contains", "true", "false", "null"}
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"':
            j, out = i + 1, []
            while True:
                if j >= len(text):
                    raise ConditionSyntaxError("unterminated string", i)
                if text[j] == "\\":
                    if j + 1 >= len(text):
                        raise ConditionSyntaxError("dangling escape", j)
                    out.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == '"':
                    break
                out.append(text[j])
                j += 1
            tokens.append(Token("string", text[i : j + 1], "".join(out), i))
            i = j + 1
            continue
        if ch == "[":
            j = text.find("]", i)
            if j < 0:
                raise ConditionSyntaxError("unterminated [datetime]", i)
            raw = text[i + 1 : j]
            try:
                moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise ConditionSyntaxError(f"invalid datetime {raw!r}", i) from None
            tokens.append(
                Token("datetime", text[i : j + 1], moment if moment.tzinfo else moment.replace(tzinfo=UTC), i)
            )
            i = j + 1
            continue
        if text.startswith(("<=", ">=", "!="), i):
            tokens.append(Token("op", text[i : i + 2], text[i : i + 2], i))
            i += 2
            continue
        if ch in "=<>":
            tokens.append(Token("op", ch, ch, i))
            i += 1
            continue
        if ch in "(),":
            tokens.append(Token({"(": "lparen", ")": "rparen", ",": "comma"}[ch], ch, ch, i))
            i += 1
            continue
        number = _NUMBER.match(text, i)
        if number and (ch == "-" or ch.isdigit()):
            tokens.append(Token("number", number.group(), Decimal(number.group()), i))
            i = number.end()
            continue
        field = _FIELD.match(text, i)
        if field:
            word = field.group()
            kind = "word" if word.lower() in _WORDS else "field"
            tokens.append(Token(kind, word, word.lower() if kind == "word" else word, i))
            i = field.end()
            continue
        raise ConditionSyntaxError(f"unexpected character {ch!r}", i)
    return tokens


# AST: ("and", a, b) | ("or", a, b) | ("not", a) | ("cmp", field, op, value)
#    | ("in", field, [values], negated, keys): keys is the set of `_in_key`s of the values when they are all numbers or
#      all strings (a set lookup then decides, as comparing with each value would), else None
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, tokens: list[Token], length: int) -> None:
        self.tokens = tokens
        self.i = 0
        self.length = length

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ConditionSyntaxError("unexpected end of conditions", self.length)
        self.i += 1
        return token

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.value == word

    def expr(self) -> Node:
        node = self.term()
        while self.is_word("or"):
            self.take()
            node = ("or", node, self.term())
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.is_word("and"):
            self.take()
            node = ("and", node, self.factor())
        return node

    def factor(self) -> Node:
        if self.is_word("not"):
            self.take()
            return ("not", self.factor())
        token = self.peek()
        if token is not None and token.kind == "lparen":
            self.take()
            node = self.expr()
            closing = self.take()
            if closing.kind != "rparen":
                raise ConditionSyntaxError("expected ')'", closing.position)
            return node
        return self.comparison()

    def value(self) -> Any:
        token = self.take()
        if token.kind in ("string", "number", "datetime"):
            return token.value
        if token.kind == "word" and token.value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.value]
        raise ConditionSyntaxError(f"expected a value, got {token.text!r}", token.position)

    def comparison(self) -> Node:
        field = self.take()
        if field.kind != "field":
            raise ConditionSyntaxError(f"expected a field name, got {field.text!r}", field.position)
        negated = False
        if self.is_word("not"):
            self.take()
            negated = True
        token = self.take()
        if token.kind == "op" and not negated:
            return ("cmp", field.value, token.value, self.value())
        if token.kind == "word" and token.value in ("like", "contains"):
            pattern = self.take()
            if pattern.kind != "string":
                raise ConditionSyntaxError(f"{token.value} takes a quoted string", pattern.position)
            node: Node = ("cmp", field.value, token.value, pattern.value)
            return ("not", node) if negated else node
        if token.kind == "word" and token.value == "in":
            opening = self.take()
            if opening.kind != "lparen":
                raise ConditionSyntaxError("expected '(' after in", opening.position)
            values = [self.value()]
            while (sep := self.take()).kind == "comma":
                values.append(self.value())
            if sep.kind != "rparen":
                raise ConditionSyntaxError("expected ',' or ')'", sep.position)
            return ("in", field.value, values, negated, _in_keys(values))
        raise ConditionSyntaxError(f"expected an operator, got {token.text!r}", token.position)


def parse(text: str) -> Node:
    tokens = tokenize(text)
    if not tokens:
        raise ConditionSyntaxError("empty conditions", 0)
    parser = _Parser(tokens, len(text))
    node = parser.expr()
    if parser.peek() is not None:
        token = parser.take()
        raise ConditionSyntaxError(f"unexpected {token.text!r}", token.position)
    return node


def _resolve(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("/"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def like_to_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[" and i + 2 < len(pattern) and pattern[i + 2] == "]":
            out.append(re.escape(pattern[i + 1]))
            i += 3
            continue
        out.append(".*" if ch in "*%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def _coerce(actual: Any, expected: Any) -> Any:
    if isinstance(expected, datetime) and isinstance(actual, str):
        try:
            parsed = datetime.fromisoformat(actual.replace("Z", "+00:00"))
        except ValueError:
            return actual
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(expected, Decimal) and isinstance(actual, int | float) and not isinstance(actual, bool):
        try:
            return Decimal(str(actual))
        except InvalidOperation:
            return actual
    return actual


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "like":
        return isinstance(actual, str) and like_to_regex(expected).fullmatch(actual) is not None
    if op == "contains":
        return isinstance(actual, str) and expected.lower() in actual.lower()
    actual = _coerce(actual, expected)
    if isinstance(actual, str) and isinstance(expected, str):
        actual, expected = actual.lower(), expected.lower()  # CW compares text case-insensitively
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if actual is None or expected is None:
        return False
    try:
        return bool(
            {"<": actual < expected, "<=": actual <= expected, ">": actual > expected, ">=": actual >= expected}[op]
        )
    except TypeError:
        return False


_NO_KEY = object()


def _in_key(value: Any) -> Any:
    """What `_compare(value, "=", x)` compares for a number or string x: numbers as Decimals (bools as the 0/1 they
    equal), text case-insensitively; anything else matches neither."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int | float | Decimal):
        try:
            return value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            return _NO_KEY
    return _NO_KEY


def _in_keys(values: list[Any]) -> frozenset[Any] | None:
    if all(isinstance(v, Decimal) for v in values) or all(isinstance(v, str) for v in values):
        return frozenset(_in_key(v) for v in values)
    return None


def evaluate(node: Node, record: dict[str, Any]) -> bool:
    kind = node[0]
    if kind == "and":
        return evaluate(node[1], record) and evaluate(node[2], record)
    if kind == "or":
        return evaluate(node[1], record) or evaluate(node[2], record)
    if kind == "not":
        return not evaluate(node[1], record)
    if kind == "in":
        actual = _resolve(record, node[1])
        keys = node[4]
        if keys is not None:
            key = _in_key(actual)
            found = key is not _NO_KEY and key in keys
        else:
            found = any(_compare(actual, "=", value) for value in node[2])
        return not found if node[3] else found
    return _compare(_resolve(record, node[1]), node[2], node[3])
