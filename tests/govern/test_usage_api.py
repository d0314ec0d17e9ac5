"""POST /v1/usage and the findings listings, through the real app: each usage line is
taken or rejected on its own with the offending field; owner tokens see their own."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api
from tether._internal.timeutil import format_time


class Api(AdminApi):
    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.root}"}

    def usage(self, body: str, token: str | None = None) -> Any:
        return self.client.post(
            "/v1/usage",
            content=body,
            headers={**self.headers(token), "content-type": "application/x-ndjson"},
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with admin_api(tmp_path) as parts:
        world = Api(*parts)
        world.post("/v1/estate/apply", estate_document(8))
        yield world


def _line(api: Api, **fields: Any) -> str:
    line = {"identity": "nhi-00000", "at": format_time(api.clock.now), "source": "10.0.0.1"}
    line.update(fields)
    return json.dumps(line)


def test_good_lines_are_kept_and_each_bad_one_is_named(api: Api) -> None:
    future = format_time(api.clock.now + dt.timedelta(days=1))
    body = "\n".join(
        [
            _line(api, scopes=["read"], resource="https://api.example.com"),
            _line(api, identity="ghost"),
            "{not json",
            _line(api, at=future),
            _line(api, scopes="read"),
            _line(api, color="blue"),
            json.dumps({"at": format_time(api.clock.now)}),
            _line(api, identity="nhi-00001", user_agent="curl/8.5"),
        ]
    )
    response = api.usage(body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 2
    errors = {r["index"]: r["error"] for r in result["rejected"]}
    assert errors == {
        1: "identity: no identity 'ghost'",
        2: "(line): is not valid JSON",
        3: "at: is in the future",
        4: "scopes: must be a list of strings",
        5: "color: is not a usage field",
        6: "identity: give exactly one of identity or credential_fingerprint",
    }
    api.node.govern.usage.flush()
    with api.node.store.read() as tx:
        rollups = tx.usage_for(["nhi-00000", "nhi-00001"], api.clock.now.date())
    by_identity = {r.identity_id: r for r in rollups}
    assert by_identity["nhi-00000"].entitlement == "api-read"  # its profile's audience
    assert by_identity["nhi-00000"].facets["scope"] == ("read",)
    assert by_identity["nhi-00001"].facets["user_agent"] == ("curl/8.5",)


def test_a_json_array_is_taken_too_and_a_bad_body_is_a_clear_422(api: Api) -> None:
    body = json.dumps([json.loads(_line(api)), json.loads(_line(api, source="10.0.0.2"))])
    assert api.usage(body).json() == {"accepted": 2, "rejected": []}
    for bad in ("", "   \n", '[{"identity": "nhi-00000"', "[1, 2"):
        response = api.usage(bad)
        assert response.status_code == 422, (bad, response.text)
        assert "(body)" in response.text
    # Not an array: JSON lines, each judged alone.
    assert api.usage("{]").json()["rejected"] == [
        {"index": 0, "error": "(line): is not valid JSON"}
    ]


def test_only_admin_or_a_usage_token_may_feed_usage(api: Api) -> None:
    usage = api.token("usage")
    assert api.usage(_line(api), usage).status_code == 200
    for role in ("auditor", "introspect", "owner:team-a"):
        assert api.usage(_line(api), api.token(role)).status_code == 403, role
    assert api.client.post("/v1/usage", content=_line(api)).status_code == 401
    # A usage token reads nothing.
    assert api.client.get("/v1/findings", headers=api.headers(usage)).status_code == 403


def test_a_credential_fingerprint_names_the_identity_and_entitlement_it_was_issued_for(
    api: Api,
) -> None:
    from tether.issuance import ExchangeRequest
    from tether.providers import ACCESS_TOKEN_TYPE

    join, _ = api.node.issuance.create_join_token("nhi-00000", dt.timedelta(minutes=5), "t")
    task = api.node.issuance.start_task(join, "t", dt.timedelta(hours=1), None)
    issued = api.node.issuance.exchange(
        ExchangeRequest(task.token, ACCESS_TOKEN_TYPE, audience="https://api.example.com")
    )
    line = json.dumps(
        {
            "credential_fingerprint": issued.lease_id,
            "at": format_time(api.clock.now),
            "source": "10.9.9.9",
        }
    )
    assert api.usage(line).json()["accepted"] == 1
    unknown = json.dumps({"credential_fingerprint": "lse_nope", "at": format_time(api.clock.now)})
    assert api.usage(unknown).json()["rejected"][0]["error"].startswith("credential_fingerprint")
    api.node.govern.usage.flush()
    with api.node.store.read() as tx:
        [reported] = [
            r
            for r in tx.usage_for(["nhi-00000"], api.clock.now.date())
            if r.credential == issued.lease_id and "10.9.9.9" in r.facets.get("source", ())
        ]
    assert reported.entitlement == "api-read"


def test_findings_filter_and_an_owner_token_sees_only_its_own(api: Api) -> None:
    document = estate_document(8)
    for identity in document["identities"]:
        identity["criticality"] = "high"
        identity.pop("approval", None)  # metadata-missing on every one
    assert api.client.post("/v1/estate/apply", json=document, headers=api.headers()).is_success
    api.node.govern.evaluate_now()
    every = api.client.get(
        "/v1/findings", params={"rule": "metadata-missing"}, headers=api.headers()
    ).json()["items"]
    assert {f["identity"] for f in every} == {i["id"] for i in document["identities"]}
    owner = api.token("owner:team-a")
    mine = api.client.get("/v1/findings", headers=api.headers(owner)).json()["items"]
    assert mine and {f["owner"] for f in mine} == {"team-a"}
    others = api.client.get("/v1/identities/nhi-00001/findings", headers=api.headers(owner))
    assert others.status_code == 404  # team-b's identity: as if it did not exist
    own = api.client.get("/v1/identities/nhi-00000/findings", headers=api.headers(owner)).json()
    assert own["items"] and own["risk"]["score"] > 0
    bad = api.client.get("/v1/findings", params={"state": "gone"}, headers=api.headers())
    assert bad.status_code == 422
    unknown_rule = api.client.get(
        "/v1/findings", params={"rule": "no-such-rule"}, headers=api.headers()
    )
    assert unknown_rule.status_code == 422 and "rule" in unknown_rule.text
