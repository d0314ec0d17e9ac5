"""An identity moved by an estate change keeps no credential issued for where it was:
the sweep revokes it (audited with the reason), and the workload starts again."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.scenario.test_core_loop import Loop, estate, loop  # noqa: F401 - the fixture


def _deployer(doc: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in doc["identities"] if i["id"] == "payments-deployer")


def _moved(doc: dict[str, Any], how: str) -> dict[str, Any]:
    moved = copy.deepcopy(doc)
    deployer = _deployer(moved)
    if how == "region":
        deployer["region"] = "us-east-1"
    elif how == "environment":
        deployer["environment"] = "staging"
    else:
        moved["owners"].append({"id": "team-platform", "contact": "platform@example.com"})
        deployer["owner"] = "team-platform"
    return moved


@pytest.mark.parametrize("how", ["region", "environment", "owner"])
def test_moving_an_identity_ends_its_live_credentials(loop: Loop, how: str) -> None:  # noqa: F811
    doc = estate(loop.idp)
    _deployer(doc)["region"] = "eu-west-1"
    loop.apply(doc)
    task = loop.start_task()
    issued = loop.exchange(task["token"], audience="opaque-api").json()
    token = issued["access_token"]
    assert loop.introspect(token)["active"]

    loop.apply(_moved(doc, how))
    loop.wait_inactive(token)
    assert not loop.introspect(task["token"])["active"], "the task token was issued there too"
    revocations = {json.loads(e["details"])["lease_id"]: e for e in loop.audit("lease.revoke")}
    entry = revocations[issued["tether_lease"]]
    assert entry["actor"] == "system:lifecycle"
    expected = {
        "region": "identity payments-deployer moved from prod/eu-west-1 to prod/us-east-1",
        "environment": "identity payments-deployer moved from prod/eu-west-1 to staging/eu-west-1",
        "owner": "identity payments-deployer moved from owner team-payments to team-platform",
    }[how]
    assert entry["reason"] == expected
    # The old task token derives nothing more; fresh evidence, in the new place, works.
    assert loop.exchange(task["token"], audience="opaque-api").status_code == 400
    again = loop.start_task(name="after-the-move")
    fresh = loop.exchange(again["token"], audience="opaque-api")
    assert fresh.status_code == 200, fresh.text
    loop.node.sweep()
    assert loop.introspect(fresh.json()["access_token"])["active"]
