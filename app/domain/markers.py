"""The markers this service writes into an addition's serial number (CW allows 50 characters): the one home of
their format.

    cwbs:<company key>:b261201          the base line effective 1 Dec 2026
    cwbs:<company key>:p261101          the proration line for the period starting 1 Nov 2026
    cwbs:<company key>:a261101:261201   a catch-up for the period starting 1 Nov 2026, billed with 1 Dec 2026's
    cwbs:<company key>:d261116:261130   native mode: seats added 16 Nov, through 30 Nov 2026

The company key is the company's UUID in base32 (26 characters), so the longest marker has 46 characters.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

PREFIX = "cwbs:"
MAX_LENGTH = 50


class Kind(StrEnum):
    base = "base"
    proration = "proration"
    catch_up = "catch_up"
    delta = "delta"


_LETTER = {Kind.base: "b", Kind.proration: "p", Kind.catch_up: "a", Kind.delta: "d"}
_KIND = {letter: kind for kind, letter in _LETTER.items()}
_PATTERN = re.compile(r"^cwbs:([a-z2-7]{26}):([bpad])(\d{6})(?::(\d{6}))?$")


def company_key(company_id: str) -> str:
    """A company's key in markers: its UUID's 16 bytes in lowercase base32."""
    return base64.b32encode(uuid.UUID(company_id).bytes).decode().rstrip("=").lower()


@dataclass(frozen=True, slots=True)
class Marker:
    key: str
    kind: Kind
    first: date  # base: effective date; proration and catch-up: the period billed for; delta: its first day
    second: date | None = None  # catch-up: the period it is billed with; delta: its last day

    def __str__(self) -> str:
        text = f"{PREFIX}{self.key}:{_LETTER[self.kind]}{self.first:%y%m%d}"
        return f"{text}:{self.second:%y%m%d}" if self.second is not None else text


def parse(text: str | None) -> Marker | None:
    """The marker in a serial number, None for anything this service did not write."""
    found = _PATTERN.match(text or "")
    if found is None:
        return None
    key, letter, first, second = found.groups()
    try:
        return Marker(key, _KIND[letter], _day(first), _day(second) if second else None)
    except ValueError:
        return None


def is_ours(serial_number: str | None) -> bool:
    return (serial_number or "").startswith(PREFIX)


def _day(text: str) -> date:
    return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
