"""The justification rule, condition by condition (issuance, renewal and the sweep all
apply this one function)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from tests.policy.helpers import NOW, identity
from tether.model import (
    Approval,
    Identity,
    IdentityStatus,
    Placement,
    Vendor,
    justification_problems,
)

BASE = identity(id="svc", owner_id="team-a", vendor_id="acme", approval=None)
VENDORS = {"acme": Vendor("acme", "Acme", NOW + dt.timedelta(days=1))}
HERE = Placement.of(BASE)


def codes(identity: Identity, **kw: object) -> list[str]:
    args: dict[str, object] = {"owners": {"team-a"}, "vendors": VENDORS, "justified_for": HERE}
    args.update(kw)
    return [p.code for p in justification_problems(identity, NOW, **args)]  # type: ignore[arg-type]


def test_a_justified_identity_has_no_problem() -> None:
    assert codes(BASE) == []
    assert codes(replace(BASE, vendor_id=None), justified_for=None) == []


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (replace(BASE, status=IdentityStatus.RETIRED), ["identity-inactive"]),
        (replace(BASE, expires_at=NOW), ["identity-expired"]),
        (replace(BASE, approval=Approval("dana", NOW)), ["approval-expired"]),
        (replace(BASE, region="us-east-1"), ["placement-changed"]),
        (replace(BASE, environment="staging"), ["placement-changed"]),
        (replace(BASE, owner_id="team-b"), ["owner-removed", "owner-changed"]),
        (replace(BASE, vendor_id=None), ["vendor-changed"]),
    ],
)
def test_each_ended_justification_is_named(changed: Identity, expected: list[str]) -> None:
    assert codes(changed) == expected


def test_vendor_and_owner_are_looked_up_and_fail_closed() -> None:
    ended = {"acme": Vendor("acme", "Acme", NOW)}
    assert codes(BASE, vendors=ended) == ["vendor-contract-ended"]
    assert codes(BASE, vendors={}) == ["vendor-unknown"]
    assert codes(BASE, owners=set()) == ["owner-removed"]


def test_a_placement_survives_the_store_as_its_key() -> None:
    assert Placement.from_key(HERE.key) == HERE
    assert Placement.of_spec(BASE.to_spec()) == HERE
    assert Placement.from_key(Placement("o", "dev").key) == Placement("o", "dev", None, None)
    assert HERE.key != replace(HERE, region=None).key
