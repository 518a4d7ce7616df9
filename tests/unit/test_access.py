"""Roles, grants and the deny-by-default decision."""

from __future__ import annotations

import pytest

from core.domain.access import AccessPolicy, Action, Grant, Role, parse_grants
from core.errors import InvalidInput


def test_nobody_has_any_right_without_a_grant() -> None:
    policy = AccessPolicy(())
    for action in Action:
        assert not policy.allows("U1", (), action, vm="web-01", channel="C1")


def test_roles_include_the_ones_below() -> None:
    policy = parse_grants([{"role": "restorer", "users": ["U1"]}])
    assert policy.allows("U1", (), Action.VIEW, vm="web-01", channel="C1")
    assert policy.allows("U1", (), Action.SNAPSHOT, vm="web-01", channel="C1")
    assert policy.allows("U1", (), Action.RESTORE, vm="web-01", channel="C1")
    assert not policy.allows("U1", (), Action.DELETE, vm="web-01", channel="C1")
    assert not policy.allows("U1", (), Action.PRUNE, vm="web-01", channel="C1")


def test_vm_patterns_and_channels_limit_a_grant() -> None:
    policy = parse_grants(
        [{"role": "operator", "users": ["U1"], "vms": ["web-*"], "channels": ["C_OPS"]}]
    )
    assert policy.allows("U1", (), Action.SNAPSHOT, vm="web-01", channel="C_OPS")
    assert not policy.allows("U1", (), Action.SNAPSHOT, vm="db-01", channel="C_OPS")
    assert not policy.allows("U1", (), Action.SNAPSHOT, vm="web-01", channel="C_RANDOM")
    # "all VMs" (a listing, /prune all) is only covered by an unlimited grant
    assert not policy.allows("U1", (), Action.VIEW, vm=None, channel="C_OPS")


def test_user_groups_grant_to_their_members_and_admins_come_from_the_environment() -> None:
    policy = parse_grants([{"role": "viewer", "usergroups": ["S_OPS"]}], admins=["U_BOSS", " "])
    assert policy.allows("U7", ("S_OPS",), Action.VIEW, vm="x", channel=None)
    assert not policy.allows("U7", (), Action.VIEW, vm="x", channel=None)
    assert policy.role_for("U_BOSS", (), vm=None, channel=None) is Role.ADMIN
    assert policy.usergroups == frozenset({"S_OPS"})


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"role": "god", "users": ["U1"]}, "unknown role 'god'"),
        ({"users": ["U1"]}, "role is missing"),
        ({"role": "viewer"}, "name at least one user or usergroup"),
        ({"role": "viewer", "users": "U1", "vm": ["x"]}, "unknown key(s) vm"),
        ({"role": "viewer", "users": [1]}, "users must be a list of strings"),
    ],
)
def test_a_bad_grant_is_refused_with_its_position(entry: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_grants([{"role": "viewer", "users": ["U0"]}, entry])
    assert "grant #2" in str(info.value) or "unknown role" in str(info.value)
    assert problem in str(info.value)


def test_a_grant_covers_every_vm_when_unlimited() -> None:
    grant = Grant(Role.VIEWER, users=frozenset({"U1"}))
    assert grant.covers(None, None)
    assert grant.covers("anything", "C9")
