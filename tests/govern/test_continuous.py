"""Governance runs by itself on a started node: an apply, new usage and a decision are
evaluated in the background (on the process that leads), with nobody asking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster._wait import within
from tests.factories import estate_document
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.govern import FindingFilter
from tether.model import Usage

#: A background pass runs every 0.1 s here; generous for a loaded machine.
LIMIT = 20.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Tether]:
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 't.db'}",
        governance_interval=0.1,
        sweep_interval=0.1,
    )
    started = Tether(settings)
    started.initialize(1, 1)
    started.start()
    yield started
    started.stop()


def _rules(node: Tether, identity_id: str) -> set[str]:
    found = node.govern.findings(FindingFilter(identity=identity_id, state="open"))
    return {f["rule"] for f in found}


def test_an_apply_and_new_usage_are_evaluated_in_the_background(node: Tether) -> None:
    document = estate_document(4)
    document["identities"][0]["criticality"] = "high"
    document["identities"][0].pop("approval", None)
    node.estate.apply(parse_estate(document), "test", document)
    within(lambda: "metadata-missing" in _rules(node, "nhi-00000"), LIMIT)

    # A browser using a service account: recorded on the request path, flushed, evaluated.
    node.govern.record(
        Usage(
            "nhi-00001",
            node.clock(),
            "GET /orders",
            source="10.0.0.1",
            user_agent="Mozilla/5.0 (Windows NT 10.0)",
        )
    )
    within(lambda: "human-use" in _rules(node, "nhi-00001"), LIMIT)

    document["identities"][0]["approval"] = {
        "by": "dana@example.com",
        "expires": (node.clock() + dt.timedelta(days=200)).date().isoformat(),
    }
    node.estate.apply(parse_estate(document), "test", document)
    within(lambda: "metadata-missing" not in _rules(node, "nhi-00000"), LIMIT)
    resolved = node.govern.findings(FindingFilter(identity="nhi-00000", state="resolved"))
    assert [f["rule"] for f in resolved] == ["metadata-missing"]
