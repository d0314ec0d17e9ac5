"""A profile's provider is one Tether implements: an in-process one or a target kind.

A provider the design names but nothing implements yet (`static`) is refused naming the
field, instead of being accepted and failing at the first issuance. SVID providers need
the estate's trust domain.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.factories import estate_document
from tether.estate import EstateInvalid, estate_schema, parse_estate
from tether.providers import LOCAL_PROVIDERS
from tether.targets import kind_names

SUPPORTED = "jwt, token, x509-svid, jwt-svid, key, postgres, redis"


def _problems(doc: Any) -> list[str]:
    with pytest.raises(EstateInvalid) as refused:
        parse_estate(doc)
    return [str(p) for p in refused.value.problems]


@pytest.mark.parametrize("provider", ["static"])
def test_a_provider_not_implemented_yet_is_refused_naming_the_field(provider: str) -> None:
    doc = estate_document(2)
    doc["profiles"].append({"id": "later", "provider": provider, "max_ttl": "1h"})
    index = len(doc["profiles"]) - 1
    assert _problems(doc) == [
        f"profiles[{index}].provider: {provider!r} is not implemented yet (supported: {SUPPORTED})"
    ]


def test_an_unknown_provider_is_refused_with_the_supported_ones() -> None:
    doc = estate_document(2)
    doc["profiles"][0]["provider"] = "mysql"
    assert _problems(doc) == [f"profiles[0].provider: must be one of: {SUPPORTED}"]


def test_the_published_schema_lists_exactly_what_is_implemented() -> None:
    provider = estate_schema()["properties"]["profiles"]["items"]["properties"]["provider"]
    assert provider["enum"] == [*LOCAL_PROVIDERS, "key", *kind_names()] == SUPPORTED.split(", ")


def test_every_implemented_provider_is_accepted() -> None:
    for provider in SUPPORTED.split(", "):
        doc = estate_document(2)
        profile = {"id": "p", "provider": provider, "max_ttl": "1h"}
        profile |= {"audience": "https://api.example.com"} if provider == "jwt" else {}
        profile |= {"target": "db"} if provider in (*kind_names(), "key") else {}
        doc["profiles"].append(profile)
        if provider.endswith("-svid"):
            doc["trust_domain"] = "example.org"
        assert any(p.id == "p" for p in parse_estate(doc).profiles), provider


@pytest.mark.parametrize("provider", ["x509-svid", "jwt-svid"])
def test_an_svid_profile_needs_a_trust_domain(provider: str) -> None:
    doc = estate_document(2)
    doc["profiles"].append({"id": "svid", "provider": provider, "max_ttl": "1h"})
    index = len(doc["profiles"]) - 1
    assert _problems(doc) == [f"profiles[{index}].provider: {provider} needs a trust_domain"]


def test_two_identities_cannot_share_a_spiffe_id() -> None:
    doc = estate_document(2)
    doc["trust_domain"] = "example.org"
    first, second = doc["identities"][0], doc["identities"][1]
    second["spiffe_id"] = f"spiffe://example.org/{first['environment']}/{first['id']}"
    assert _problems(doc) == [
        f"identities[1].spiffe_id: {second['spiffe_id']} is identities[0]'s too"
    ]
    second["spiffe_id"] = "spiffe://example.org"
    assert any("names only the trust domain" in p for p in _problems(doc))
