"""Ranking CW companies as candidates for a portal company: exact identifier, exact name, then similar names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum

_SUFFIXES = re.compile(r"\b(inc|incorporated|ltd|limited|llc|gmbh|corp|corporation|co|company|plc|sa|ag|bv)\b")
_NON_WORD = re.compile(r"[^a-z0-9]+")
SIMILARITY_FLOOR = 0.6


class MatchReason(StrEnum):
    exact_identifier = "exact_identifier"
    exact_name = "exact_name"
    similar_name = "similar_name"


@dataclass(frozen=True, slots=True)
class Candidate:
    cw_company_id: int
    identifier: str
    name: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    candidate: Candidate
    reason: MatchReason
    score: float

    @property
    def exact(self) -> bool:
        return self.reason is not MatchReason.similar_name


def normalize_name(name: str) -> str:
    """Case, punctuation and legal-form suffixes do not make two companies different."""
    lowered = _NON_WORD.sub(" ", name.lower())
    return " ".join(_SUFFIXES.sub(" ", lowered).split())


def rank(*, name: str, identifier: str | None, candidates: Sequence[Candidate], limit: int = 10) -> list[Suggestion]:
    wanted_name = normalize_name(name)
    wanted_id = (identifier or "").strip().lower()
    found: dict[int, Suggestion] = {}
    for candidate in candidates:
        if wanted_id and candidate.identifier.strip().lower() == wanted_id:
            suggestion = Suggestion(candidate, MatchReason.exact_identifier, 1.0)
        elif wanted_name and normalize_name(candidate.name) == wanted_name:
            suggestion = Suggestion(candidate, MatchReason.exact_name, 1.0)
        else:
            score = SequenceMatcher(None, wanted_name, normalize_name(candidate.name)).ratio()
            if score < SIMILARITY_FLOOR:
                continue
            suggestion = Suggestion(candidate, MatchReason.similar_name, round(score, 3))
        previous = found.get(candidate.cw_company_id)
        if previous is None or _order(suggestion) < _order(previous):
            found[candidate.cw_company_id] = suggestion
    return sorted(found.values(), key=_order)[:limit]


def _order(s: Suggestion) -> tuple[int, float, str]:
    priority = {MatchReason.exact_identifier: 0, MatchReason.exact_name: 1, MatchReason.similar_name: 2}
    return priority[s.reason], -s.score, s.candidate.name.lower()
