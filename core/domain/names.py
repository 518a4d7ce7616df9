"""Closest-name suggestions for "no such VM / snapshot" answers."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import SequenceMatcher


def closest(name: str, candidates: Iterable[str], limit: int = 5) -> list[str]:
    """Return up to ``limit`` candidates, closest to ``name`` first (case-insensitive, ties by
    name so the answer is stable)."""
    folded = name.casefold()

    def score(candidate: str) -> tuple[float, str]:
        other = candidate.casefold()
        ratio = SequenceMatcher(None, folded, other).ratio()
        if folded and (other.startswith(folded) or folded in other):
            ratio += 1.0
        return (-ratio, candidate)

    return sorted(set(candidates), key=score)[:limit]
