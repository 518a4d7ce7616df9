"""Closest-name suggestions for "no such VM / snapshot" answers, and which labels look alike."""

from __future__ import annotations

import unicodedata
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


# Letters of other scripts that render like a Latin letter in common fonts (casefolded forms),
# and dashes that render like '-'. NFKC already folds fullwidth and other compatibility forms;
# it leaves scripts alone, so Cyrillic 'е' and Latin 'e' need this table. A short explicit
# table rather than a dependency: the PyPI packages offering TR39 skeletons were either
# unmaintained or too new to trust, and labels only need the look-alikes people meet.
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "ԁ": "d",
        "е": "e",
        "ё": "e",
        "һ": "h",
        "н": "h",
        "і": "i",
        "ї": "i",
        "ј": "j",
        "к": "k",
        "ӏ": "l",
        "м": "m",
        "о": "o",
        "р": "p",
        "ԛ": "q",
        "ѕ": "s",
        "т": "t",
        "у": "y",
        "ү": "y",
        "ѵ": "v",
        "ԝ": "w",
        "х": "x",
        "с": "c",
        "з": "3",
        # Greek
        "α": "a",
        "β": "b",
        "ε": "e",
        "ζ": "z",
        "η": "h",
        "ι": "i",
        "κ": "k",
        "μ": "m",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "γ": "y",
        "ϲ": "c",
        # Dashes
        "‐": "-",
        "‑": "-",
        "‒": "-",
        "–": "-",
        "—": "-",
        "―": "-",
        "−": "-",
        "﹘": "-",
    }
)


def confusable_key(label: str) -> str:
    """What a label looks like, for telling whether two labels can be told apart on screen:
    compatibility forms folded (NFKC: fullwidth 'ｅ' is 'e'), case folded, and look-alike letters
    of other scripts mapped to the Latin letter they resemble. Two labels with the same key must
    not name two snapshots of one VM."""
    folded = unicodedata.normalize("NFKC", label).casefold()
    return unicodedata.normalize("NFKC", folded.translate(_LOOKALIKES))


def lookalike(label: str, existing: Iterable[str]) -> str | None:
    """The first of ``existing`` that reads the same as ``label`` (itself included), or None."""
    key = confusable_key(label)
    for other in existing:
        if confusable_key(other) == key:
            return other
    return None
