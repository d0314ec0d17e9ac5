"""SPIFFE IDs are parsed exactly as the SPIFFE ID specification (SPIFFE-ID.md §2) says:
what it allows is accepted unchanged, everything else is refused with the rule it breaks.
The cases follow the specification and go-spiffe's conformance tests."""

from __future__ import annotations

import string

import pytest

from tether.spiffe._ids import (
    SpiffeId,
    default_spiffe_id,
    parse_spiffe_id,
    parse_trust_domain,
)
from tether.spiffe.errors import InvalidSpiffeId

TD_CHARS = set(string.ascii_lowercase + string.digits + ".-_")
PATH_CHARS = set(string.ascii_letters + string.digits + ".-_")


def _refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidSpiffeId, match=reason):
        parse_spiffe_id(value)


@pytest.mark.parametrize(
    ("value", "trust_domain", "path"),
    [
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://example.org/payments/mysql", "example.org", "/payments/mysql"),
        (
            "spiffe://k8s-west.example.com/ns/staging/sa/default",
            "k8s-west.example.com",
            "/ns/staging/sa/default",
        ),
        (
            "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
            "example.com",
            "/9eebccd2-12bf-40a6-b262-65fe0487d453",
        ),
        ("spiffe://trust_domain_name.example.com/x", "trust_domain_name.example.com", "/x"),
        ("spiffe://192.168.1.1/ip-is-just-a-name", "192.168.1.1", "/ip-is-just-a-name"),
        # Segments with dots are fine unless they are exactly . or ..
        ("spiffe://td/.path", "td", "/.path"),
        ("spiffe://td/..path", "td", "/..path"),
        ("spiffe://td/...", "td", "/..."),
        # The path is case-sensitive and kept as given.
        ("spiffe://td/Payments/MySQL", "td", "/Payments/MySQL"),
    ],
)
def test_valid_ids_parse_unchanged(value: str, trust_domain: str, path: str) -> None:
    parsed = parse_spiffe_id(value)
    assert parsed == SpiffeId(trust_domain, path)
    assert str(parsed) == value


@pytest.mark.parametrize("code", [c for c in range(256) if chr(c) != "/"])
def test_each_character_in_a_trust_domain(code: int) -> None:
    char = chr(code)
    value = f"spiffe://trustdomain{char}/path"
    if char in TD_CHARS:
        assert parse_spiffe_id(value).trust_domain == f"trustdomain{char}"
    else:
        with pytest.raises(InvalidSpiffeId):
            parse_spiffe_id(value)


@pytest.mark.parametrize("code", [c for c in range(256) if chr(c) != "/"])
def test_each_character_in_a_path(code: int) -> None:
    char = chr(code)
    value = f"spiffe://trustdomain/path{char}"
    if char in PATH_CHARS:
        assert parse_spiffe_id(value).path == f"/path{char}"
    else:
        with pytest.raises(InvalidSpiffeId):
            parse_spiffe_id(value)


def test_the_scheme_is_spiffe_in_lowercase() -> None:
    for value in ("", "s", "spiffe:/", "spiffe:/td/x", "Spiffe://td/x", "SPIFFE://td/x",
                  "https://td/x", "td/x", "//td/x"):  # fmt: skip
        with pytest.raises(InvalidSpiffeId):
            parse_spiffe_id(value)
    _refused("Spiffe://td/x", "spiffe://")


def test_the_trust_domain_is_required() -> None:
    _refused("spiffe://", "trust domain is missing")
    _refused("spiffe:///", "trust domain is missing")
    _refused("spiffe:///path", "trust domain is missing")


def test_the_trust_domain_must_be_lowercase() -> None:
    # SPIFFE-ID.md §2.1: the host MUST be lowercase; it is refused, not folded.
    _refused("spiffe://Example.org/x", "lowercase")
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        parse_trust_domain("EXAMPLE.ORG")


def test_userinfo_port_query_and_fragment_are_refused() -> None:
    _refused("spiffe://user@example.org/x", "userinfo")
    _refused("spiffe://user:pw@example.org/x", "port|userinfo")
    _refused("spiffe://example.org:443/x", "port")
    _refused("spiffe://example.org?x=1", "query")
    _refused("spiffe://example.org/x?y=1", "query")
    _refused("spiffe://example.org#frag", "fragment")
    _refused("spiffe://example.org/x#frag", "fragment")
    _refused("spiffe://[::1]/x", "letters")  # IPv6 is excluded by the character set


def test_percent_encoding_is_refused() -> None:
    _refused("spiffe://%F0%9F%A4%AF/path", "percent")
    _refused("spiffe://%62%61%64/path", "percent")
    _refused("spiffe://trustdomain/%F0%9F%A4%AF", "percent")
    _refused("spiffe://trustdomain/%62%61%64", "percent")


def test_empty_segments_and_a_trailing_slash_are_refused() -> None:
    _refused("spiffe://trustdomain/", "end with /")
    _refused("spiffe://trustdomain/path/", "end with /")
    _refused("spiffe://trustdomain//", "empty segments")
    _refused("spiffe://trustdomain//path", "empty segments")
    _refused("spiffe://trustdomain/a//b", "empty segments")


def test_dot_segments_are_refused() -> None:
    for value in (
        "spiffe://trustdomain/.",
        "spiffe://trustdomain/./path",
        "spiffe://trustdomain/path/./other",
        "spiffe://trustdomain/path/..",
        "spiffe://trustdomain/..",
        "spiffe://trustdomain/../path",
        "spiffe://trustdomain/path/../other",
    ):
        _refused(value, r"\. or \.\.")


def test_non_ascii_is_refused() -> None:
    _refused("spiffe://exämple.org/x", "trust domain")
    _refused("spiffe://example.org/ünïcode", "path segments")


def test_ids_up_to_2048_bytes_are_accepted_and_longer_ones_refused() -> None:
    prefix = "spiffe://example.org/"
    longest = prefix + "a" * (2048 - len(prefix))
    assert len(longest) == 2048
    assert str(parse_spiffe_id(longest)) == longest
    _refused(longest + "a", "2048")


def test_a_trust_domain_name_is_at_most_255_bytes() -> None:
    assert parse_trust_domain("a" * 255) == "a" * 255
    with pytest.raises(InvalidSpiffeId, match="255"):
        parse_trust_domain("a" * 256)
    _refused(f"spiffe://{'a' * 256}/x", "255")


def test_parse_trust_domain() -> None:
    assert parse_trust_domain("example.org") == "example.org"
    assert parse_trust_domain("staging_1.example-2.org") == "staging_1.example-2.org"
    for value, reason in [
        ("", "missing"),
        ("spiffe://example.org", "name alone"),
        ("https://example.org", "name alone"),
        ("example.org/path", "/"),
        ("example.org:8443", "port"),
        ("user@example.org", "userinfo"),
        ("ex%41mple.org", "percent"),
        ("exa mple.org", "letters"),
    ]:
        with pytest.raises(InvalidSpiffeId, match=reason):
            parse_trust_domain(value)


def test_the_default_id_is_trust_domain_environment_and_identity() -> None:
    spiffe_id = default_spiffe_id("example.org", "prod", "billing-worker")
    assert str(spiffe_id) == "spiffe://example.org/prod/billing-worker"
    assert spiffe_id == SpiffeId("example.org", "/prod/billing-worker")
    assert not spiffe_id.is_trust_domain
    assert parse_spiffe_id("spiffe://example.org").is_trust_domain


def test_an_identity_id_that_cannot_be_a_segment_asks_for_an_explicit_id() -> None:
    # Estate ids may hold ':' and '@'; SPIFFE allows no encoding of them.
    for identity_id in ("svc:reports", "ci@github", ".", ".."):
        with pytest.raises(InvalidSpiffeId, match="spiffe_id"):
            default_spiffe_id("example.org", "prod", identity_id)
    with pytest.raises(InvalidSpiffeId, match="environment"):
        default_spiffe_id("example.org", "pr od", "svc")
    with pytest.raises(InvalidSpiffeId, match="lowercase"):
        default_spiffe_id("Example.org", "prod", "svc")


def test_ids_compare_by_value() -> None:
    assert parse_spiffe_id("spiffe://td/a") == parse_spiffe_id("spiffe://td/a")
    assert parse_spiffe_id("spiffe://td/a") != parse_spiffe_id("spiffe://td/A")
    assert len({parse_spiffe_id("spiffe://td/a"), SpiffeId("td", "/a")}) == 1
