"""The retention engine as it was before the planning was made fast (issue 12): kept verbatim
as the reference the fast path is compared with (tests/unit/test_retention_equivalence.py).
Not used by snapbot."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo

from core.domain.retention import (
    _PERIODIC_RULES,
    Decision,
    RetentionItem,
    RetentionPlan,
    RetentionPolicy,
    _days,
    _safety_delete_reason,
)


def _newest_first(items: Iterable[RetentionItem]) -> list[RetentionItem]:
    return sorted(items, key=lambda i: (i.created_at, i.key), reverse=True)


def _select(candidates: list[RetentionItem], policy: RetentionPolicy, tz: tzinfo) -> dict[str, str]:
    """Keep reasons of the candidates kept; ``candidates`` newest first."""
    reasons: dict[str, str] = {}
    removed: set[str] = set()
    local = {c.key: c.created_at.astimezone(tz) for c in candidates}

    for rank, cand in enumerate(candidates[: policy.keep_last], start=1):
        reasons[cand.key] = f"last #{rank}"

    for rule, _, fmt in _PERIODIC_RULES:
        wanted = policy.count(rule)
        if wanted == 0:
            continue

        def period(item: RetentionItem, fmt: str = fmt) -> str:
            return local[item.key].strftime(fmt)

        covered = {period(c) for c in candidates if c.key in reasons}
        included: set[str] = set()
        for cand in candidates:
            if cand.key in reasons or cand.key in removed:
                continue
            p = period(cand)
            if p in covered:
                continue
            if p in included:
                removed.add(cand.key)
                continue
            if len(included) >= wanted:
                break
            included.add(p)
            reasons[cand.key] = f"{rule} #{len(included)}"
        if policy.keep_oldest and len(included) < wanted and candidates:
            oldest = candidates[-1]
            if oldest.key not in reasons:
                reasons[oldest.key] = f"{rule}[oldest]"

    if candidates and candidates[0].key not in reasons:
        reasons[candidates[0].key] = "newest"
    return reasons


def _select_safety(
    ordered: list[RetentionItem], policy: RetentionPolicy, anchor: datetime | None
) -> dict[str, tuple[str, bool]]:
    """(reason, keep) for each unheld safety snapshot; ``ordered`` newest first."""
    last, days = policy.safety_rule
    decided: dict[str, tuple[str, bool]] = {}
    unheld = [i for i in ordered if i.safety and not i.held]
    for rank, item in enumerate(unheld, start=1):
        if rank <= last:
            newest = "the newest" if last == 1 else f"one of the {last} newest"
            decided[item.key] = (f"safety snapshot: {newest}", True)
        elif anchor is not None and anchor - item.created_at <= timedelta(days=days):
            decided[item.key] = (f"safety snapshot: not older than {_days(days)}", True)
        else:
            decided[item.key] = (_safety_delete_reason(last, days), False)
    return decided


def _delete_reason(
    item: RetentionItem,
    covered: dict[str, set[str]],
    policy: RetentionPolicy,
    tz: tzinfo,
) -> str:
    when = item.created_at.astimezone(tz)
    for rule, noun, fmt in _PERIODIC_RULES:
        label = when.strftime(fmt)
        if policy.count(rule) > 0 and label in covered[rule]:
            return f"{rule}: {noun} {label} already kept"
    return f"beyond {policy.describe()}"


def plan_retention(
    items: Iterable[RetentionItem],
    policy: RetentionPolicy,
    tz: tzinfo,
    now: datetime | None = None,
) -> RetentionPlan:
    """Decide, for every snapshot of one VM, keep or delete and why (module docstring).

    Raises ``InvalidInput`` for an invalid policy and ``ValueError`` for duplicate keys or a naive
    ``now``. ``now`` is only recorded as the plan's ``as_of``: selection uses calendar periods of
    the snapshots' own times, not ages.
    """
    policy.validate()
    if now is not None and now.utcoffset() is None:
        raise ValueError("now must carry a time zone")
    ordered = _newest_first(items)
    keys = [i.key for i in ordered]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate snapshot keys: {', '.join(dupes)}")

    def is_candidate(item: RetentionItem) -> bool:
        return not item.held and not item.safety and (item.scheduled or policy.include_manual)

    candidates = [i for i in ordered if is_candidate(i)]
    reasons = _select(candidates, policy, tz)
    anchor = now if now is not None else (ordered[0].created_at if ordered else None)
    safety_reasons = _select_safety(ordered, policy, anchor)
    covered = {
        rule: {c.created_at.astimezone(tz).strftime(fmt) for c in candidates if c.key in reasons}
        for rule, _, fmt in _PERIODIC_RULES
    }

    def decide(item: RetentionItem) -> Decision:
        if item.held:
            return Decision(item.key, item.created_at, True, "held")
        if item.safety:
            reason, keep = safety_reasons[item.key]
            return Decision(item.key, item.created_at, keep, reason)
        if not is_candidate(item):
            return Decision(item.key, item.created_at, True, "manual")
        if item.key in reasons:
            return Decision(item.key, item.created_at, True, reasons[item.key])
        reason = _delete_reason(item, covered, policy, tz)
        return Decision(item.key, item.created_at, False, reason)

    decisions = tuple(decide(i) for i in ordered)
    if decisions and not any(d.keep for d in decisions):
        refusal = (
            f"this plan would delete all {len(decisions)} snapshots of the VM; "
            "nothing was deleted, because a VM always keeps at least one snapshot"
        )
        decisions = tuple(
            Decision(d.key, d.created_at, True, f"refused: {d.reason}") for d in decisions
        )
        return RetentionPlan(decisions, refusal, now)
    return RetentionPlan(decisions, None, now)
