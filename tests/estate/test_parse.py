"""Validating an estate document: what is accepted, and every refusal names its field."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.factories import estate_document
from tether.estate import EstateInvalid, load_estate_file, parse_estate
from tether.model import Estate, IdentityStatus, Kind

#: design.md §4's example as written; `examples/estate.yaml` is the demo estate, grown from it.
DESIGN_EXAMPLE = Path(__file__).parent / "data" / "design_example.yaml"
DEMO = Path(tether.__file__).parent / "_demo" / "estate.yaml"

UTC = dt.UTC
Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def base() -> Doc:
    """Eight identities, one of each kind, in this order:

    0 service_account (team-a, prod)   1 api_key (team-b, staging, vendor-x)
    2 workload (team-a, dev, attested) 3 certificate (team-b, prod)
    4 token (team-a, staging)          5 agent (team-b, dev, attested)
    6 encryption_key (team-a, prod)    7 legacy_static (team-b, staging)
    """
    return estate_document(8)


def problems_of(doc: Any) -> list[tuple[str, str]]:
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(doc)
    assert caught.value.problems, "a refusal must name at least one problem"
    return [(p.path, p.message) for p in caught.value.problems]


def paths_of(doc: Any) -> list[str]:
    return [path for path, _ in problems_of(doc)]


# -- tiny helpers to change a document at a path --


def _walk(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def set_(path: tuple[Any, ...], value: Any) -> Mutation:
    def apply(doc: Doc) -> None:
        _walk(doc, path[:-1])[path[-1]] = value

    return apply


def del_(path: tuple[Any, ...]) -> Mutation:
    def apply(doc: Doc) -> None:
        del _walk(doc, path[:-1])[path[-1]]

    return apply


def append(path: tuple[Any, ...], value: Any) -> Mutation:
    def apply(doc: Doc) -> None:
        _walk(doc, path).append(value)

    return apply


def dup(section: str, index: int) -> Mutation:
    def apply(doc: Doc) -> None:
        doc[section].append(copy.deepcopy(doc[section][index]))

    return apply


def both(*mutations: Mutation) -> Mutation:
    def apply(doc: Doc) -> None:
        for mutation in mutations:
            mutation(doc)

    return apply


# -- what is accepted --


def test_design_example_parses() -> None:
    document = load_estate_file(DESIGN_EXAMPLE)
    estate = parse_estate(document)

    assert [o.id for o in estate.owners] == ["team-payments"]
    assert estate.owners[0].contact == "payments-oncall@example.com"
    assert estate.vendors[0].id == "acme-monitoring"
    assert estate.vendors[0].contract_ends == dt.datetime(2027, 3, 31, tzinfo=UTC)

    issuer = estate.issuers[0]
    assert (issuer.id, issuer.preset) == ("github", "github-actions")
    assert issuer.issuer == "https://token.actions.githubusercontent.com"
    assert issuer.audiences == ("tether",)

    profiles = {p.id: p for p in estate.profiles}
    assert profiles["orders-api-read"].provider == "jwt"
    assert profiles["orders-api-read"].audience == "https://orders.example.com"
    assert profiles["orders-api-read"].scopes == ("orders:read", "orders:list")
    assert profiles["orders-api-read"].max_ttl == dt.timedelta(minutes=15)
    assert profiles["payments-db-ro"].target == "payments-db"
    assert profiles["payments-db-ro"].grants == {"schema": "payments", "privileges": ["SELECT"]}
    assert profiles["payments-db-ro"].max_ttl == dt.timedelta(hours=1)

    identities = {i.id: i for i in estate.identities}
    deployer = identities["payments-deployer"]
    assert deployer.kind is Kind.WORKLOAD
    assert deployer.owner_id == "team-payments"
    assert deployer.justification == "CHG-2041"
    assert deployer.environment == "prod"
    assert deployer.region == "eu-west-1"
    assert deployer.approval is not None
    assert deployer.approval.by == "dana@example.com"
    assert deployer.approval.expires_at == dt.datetime(2027, 1, 31, tzinfo=UTC)
    assert deployer.attest == {
        "issuer": "github",
        "claims": {"repository": "acme/payments", "ref": "refs/heads/main", "environment": "prod"},
    }
    assert [(e.profile_id, e.scopes) for e in deployer.entitlements] == [
        ("orders-api-read", ("orders:read",)),
        ("payments-db-ro", None),
    ]
    assert deployer.status is IdentityStatus.ACTIVE

    exporter = identities["acme-exporter"]
    assert exporter.kind is Kind.API_KEY
    assert exporter.vendor_id == "acme-monitoring"
    assert [e.profile_id for e in exporter.entitlements] == ["orders-api-read"]

    assert estate.kind_overrides == {
        Kind.API_KEY: {"max_ttl": "90d", "rotate_every": "30d", "review_every": "90d"}
    }
    api_key = estate.control_profile(Kind.API_KEY)
    assert api_key.max_ttl == dt.timedelta(days=90)
    assert api_key.rotate_every == dt.timedelta(days=30)

    assert [p.id for p in estate.policies] == ["policies/base.cedar"]
    source = (DESIGN_EXAMPLE.parent / "policies" / "base.cedar").read_text(encoding="utf-8")
    assert estate.policies[0].source == source


def test_demo_estate_parses_with_one_identity_of_every_kind() -> None:
    estate = parse_estate(load_estate_file(DEMO))
    kinds = sorted(i.kind.value for i in estate.identities)
    assert kinds == sorted(k.value for k in Kind)
    assert len(estate.policies) == 1


def test_factory_estate_parses() -> None:
    estate = parse_estate(base())
    assert isinstance(estate, Estate)
    assert [i.kind for i in estate.identities] == list(Kind)
    assert estate.identities[2].attest is not None


def test_parsing_does_not_change_the_document() -> None:
    document = base()
    before = copy.deepcopy(document)
    parse_estate(document)
    assert document == before


@pytest.mark.parametrize(
    ("name", "mutation"),
    [
        ("minimal", lambda d: d.clear() or d.update(version=1)),
        ("entitlement as a plain profile id", set_(("identities", 0, "entitlements"), ["db-ro"])),
        ("no entitlements", del_(("identities", 0, "entitlements"))),
        ("owner without name", del_(("owners", 0, "name"))),
        ("labels", set_(("identities", 0, "labels"), {"team": "a", "cost-center/x": "42"})),
        ("expiry as RFC 3339", set_(("identities", 0, "expires"), "2027-06-01T12:00:00+02:00")),
        ("suspended", set_(("identities", 0, "status"), "suspended")),
        (
            "inline policy",
            set_(
                ("policies",),
                [{"id": "p.cedar", "source": "permit (principal, action, resource);\n"}],
            ),
        ),
        (
            "inline jwks",
            both(del_(("issuers", 0, "jwks_uri")), set_(("issuers", 0, "jwks"), {"keys": []})),
        ),
        (
            "agent attestation made optional",
            both(
                set_(("kinds", "agent"), {"attestation_required": False}),
                del_(("identities", 5, "attest")),
            ),
        ),
        (
            "allowed environments respected",
            set_(("kinds", "service_account"), {"allowed_environments": ["prod", "staging"]}),
        ),
        (
            "unicode in free text",
            set_(
                ("identities", 0, "purpose"),
                "Zahlungen \u2014 \u00fcber \U0001f680 \u05e9\u05dc\u05d5\u05dd",
            ),
        ),
        ("longest purpose", set_(("identities", 0, "purpose"), "p" * 2000)),
        ("longest duration", set_(("profiles", 0, "max_ttl"), "3660d")),
        ("version as 1.0", set_(("version",), 1.0)),
    ],
)
def test_valid_variations_are_accepted(name: str, mutation: Mutation) -> None:
    document = base()
    mutation(document)
    assert isinstance(parse_estate(document), Estate)


# -- what is refused, and where --

LONG = "x" * 100_000

BAD_INPUT: list[tuple[str, Mutation, list[str]]] = [
    # missing required fields
    ("missing version", del_(("version",)), ["version"]),
    ("missing owner", del_(("identities", 3, "owner")), ["identities[3].owner"]),
    ("missing kind", del_(("identities", 1, "kind")), ["identities[1].kind"]),
    ("missing identity id", del_(("identities", 4, "id")), ["identities[4].id"]),
    ("missing purpose", del_(("identities", 0, "purpose")), ["identities[0].purpose"]),
    (
        "missing justification",
        del_(("identities", 6, "justification")),
        ["identities[6].justification"],
    ),
    ("missing environment", del_(("identities", 7, "environment")), ["identities[7].environment"]),
    ("missing owner contact", del_(("owners", 1, "contact")), ["owners[1].contact"]),
    ("missing contract end", del_(("vendors", 0, "contract_ends")), ["vendors[0].contract_ends"]),
    ("missing issuer url", del_(("issuers", 0, "issuer")), ["issuers[0].issuer"]),
    ("missing audiences", del_(("issuers", 0, "audiences")), ["issuers[0].audiences"]),
    ("missing provider", del_(("profiles", 1, "provider")), ["profiles[1].provider"]),
    ("missing max_ttl", del_(("profiles", 0, "max_ttl")), ["profiles[0].max_ttl"]),
    ("missing approver", del_(("identities", 2, "approval", "by")), ["identities[2].approval.by"]),
    (
        "missing approval expiry",
        del_(("identities", 5, "approval", "expires")),
        ["identities[5].approval.expires"],
    ),
    (
        "missing attest claims",
        del_(("identities", 2, "attest", "claims")),
        ["identities[2].attest.claims"],
    ),
    (
        "missing entitlement profile",
        del_(("identities", 0, "entitlements", 0, "profile")),
        ["identities[0].entitlements[0].profile"],
    ),
    (
        "missing inline policy source",
        set_(("policies",), [{"id": "p.cedar"}]),
        ["policies[0].source"],
    ),
    # wrong types
    ("version as a string", set_(("version",), "1"), ["version"]),
    ("unsupported version", set_(("version",), 2), ["version"]),
    ("version as a boolean", set_(("version",), True), ["version"]),
    ("owners as a mapping", set_(("owners",), {"team-a": {}}), ["owners"]),
    ("identity as a string", set_(("identities", 3), "nhi-00003"), ["identities[3]"]),
    ("purpose as a number", set_(("identities", 0, "purpose"), 5), ["identities[0].purpose"]),
    ("purpose as null", set_(("identities", 0, "purpose"), None), ["identities[0].purpose"]),
    (
        "entitlements as a string",
        set_(("identities", 0, "entitlements"), "api-read"),
        ["identities[0].entitlements"],
    ),
    (
        "entitlement as a number",
        set_(("identities", 0, "entitlements", 0), 7),
        ["identities[0].entitlements[0]"],
    ),
    ("labels as a list", set_(("identities", 0, "labels"), ["a"]), ["identities[0].labels"]),
    (
        "label value as a number",
        set_(("identities", 0, "labels"), {"tier": 1}),
        ["identities[0].labels.tier"],
    ),
    ("scopes as a string", set_(("profiles", 0, "scopes"), "read"), ["profiles[0].scopes"]),
    (
        "claims as a string",
        set_(("identities", 2, "attest", "claims"), "repo"),
        ["identities[2].attest.claims"],
    ),
    (
        "claim value as a list",
        set_(("identities", 2, "attest", "claims", "repository"), ["a"]),
        ["identities[2].attest.claims.repository"],
    ),
    (
        "audiences as a string",
        set_(("issuers", 0, "audiences"), "tether"),
        ["issuers[0].audiences"],
    ),
    ("empty audiences", set_(("issuers", 0, "audiences"), []), ["issuers[0].audiences"]),
    ("max_ttl as a number", set_(("profiles", 0, "max_ttl"), 900), ["profiles[0].max_ttl"]),
    (
        "kind override as a number",
        set_(("kinds", "api_key", "max_ttl"), 90),
        ["kinds.api_key.max_ttl"],
    ),
    (
        "single_use as a string",
        set_(("issuers", 0, "single_use"), "yes"),
        ["issuers[0].single_use"],
    ),
    (
        "unknown criticality",
        set_(("identities", 0, "criticality"), "urgent"),
        ["identities[0].criticality"],
    ),
    ("declared retired", set_(("identities", 0, "status"), "retired"), ["identities[0].status"]),
    ("unknown provider", set_(("profiles", 0, "provider"), "ldap"), ["profiles[0].provider"]),
    ("unknown preset", set_(("issuers", 0, "preset"), "gitlab"), ["issuers[0].preset"]),
    ("weak algorithm", set_(("issuers", 0, "algorithms"), ["HS256"]), ["issuers[0].algorithms[0]"]),
    (
        "insecure issuer url",
        set_(("issuers", 0, "issuer"), "ftp://issuer.example.com"),
        ["issuers[0].issuer"],
    ),
    # unknown kind
    ("unknown kind", set_(("identities", 1, "kind"), "robot"), ["identities[1].kind"]),
    ("kind in capitals", set_(("identities", 1, "kind"), "API_KEY"), ["identities[1].kind"]),
    ("unknown kind override", set_(("kinds", "robot"), {"max_ttl": "1h"}), ["kinds.robot"]),
    # unknown fields
    ("unknown top-level field", set_(("secrets",), {"db": "x"}), ["secrets"]),
    (
        "unknown identity field",
        set_(("identities", 1, "password"), "x"),
        ["identities[1].password"],
    ),
    ("unknown owner field", set_(("owners", 0, "phone"), "x"), ["owners[0].phone"]),
    ("unknown vendor field", set_(("vendors", 0, "sla"), "x"), ["vendors[0].sla"]),
    (
        "unknown issuer field",
        set_(("issuers", 0, "client_secret"), "x"),
        ["issuers[0].client_secret"],
    ),
    ("unknown profile field", set_(("profiles", 1, "dsn"), "x"), ["profiles[1].dsn"]),
    (
        "unknown approval field",
        set_(("identities", 2, "approval", "note"), "x"),
        ["identities[2].approval.note"],
    ),
    (
        "unknown attest field",
        set_(("identities", 2, "attest", "subject"), "x"),
        ["identities[2].attest.subject"],
    ),
    (
        "unknown entitlement field",
        set_(("identities", 0, "entitlements", 0, "ttl"), "1h"),
        ["identities[0].entitlements[0].ttl"],
    ),
    (
        "unknown kind override field",
        set_(("kinds", "api_key", "max_age"), "1h"),
        ["kinds.api_key.max_age"],
    ),
    (
        "unknown inline policy field",
        set_(("policies",), [{"id": "p", "source": "", "x": 1}]),
        ["policies[0].x"],
    ),
    # unknown references
    ("unknown owner", set_(("identities", 3, "owner"), "team-z"), ["identities[3].owner"]),
    ("unknown vendor", set_(("identities", 1, "vendor"), "vendor-z"), ["identities[1].vendor"]),
    (
        "unknown issuer",
        set_(("identities", 2, "attest", "issuer"), "gitlab"),
        ["identities[2].attest.issuer"],
    ),
    (
        "unknown profile",
        set_(("identities", 0, "entitlements", 0, "profile"), "nope"),
        ["identities[0].entitlements[0].profile"],
    ),
    (
        "unknown profile by id",
        set_(("identities", 0, "entitlements"), ["nope"]),
        ["identities[0].entitlements[0].profile"],
    ),
    # entitlements wider than their profile
    (
        "scope not in profile",
        set_(("identities", 0, "entitlements", 0, "scopes"), ["read", "write"]),
        ["identities[0].entitlements[0].scopes"],
    ),
    (
        "scopes on a profile without scopes",
        set_(("identities", 0, "entitlements"), [{"profile": "db-ro", "scopes": ["all"]}]),
        ["identities[0].entitlements[0].scopes"],
    ),
    (
        "profile granted twice",
        append(("identities", 0, "entitlements"), "api-read"),
        ["identities[0].entitlements[1].profile"],
    ),
    # duplicate ids
    ("duplicate identity", dup("identities", 0), ["identities[8].id"]),
    ("duplicate owner", dup("owners", 1), ["owners[2].id"]),
    ("duplicate vendor", dup("vendors", 0), ["vendors[1].id"]),
    ("duplicate issuer", dup("issuers", 0), ["issuers[1].id"]),
    ("duplicate profile", dup("profiles", 0), ["profiles[2].id"]),
    (
        "duplicate policy",
        set_(("policies",), [{"id": "p", "source": "a"}, {"id": "p", "source": "b"}]),
        ["policies"],
    ),
    # bad durations
    ("zero max_ttl", set_(("profiles", 0, "max_ttl"), "0s"), ["profiles[0].max_ttl"]),
    ("fractional max_ttl", set_(("profiles", 0, "max_ttl"), "1.5h"), ["profiles[0].max_ttl"]),
    ("negative max_ttl", set_(("profiles", 0, "max_ttl"), "-1h"), ["profiles[0].max_ttl"]),
    ("max_ttl over the limit", set_(("profiles", 1, "max_ttl"), "3661d"), ["profiles[1].max_ttl"]),
    (
        "max_ttl overflowing",
        set_(("profiles", 1, "max_ttl"), "999999999w"),
        ["profiles[1].max_ttl"],
    ),
    ("ISO 8601 duration", set_(("profiles", 1, "max_ttl"), "PT1H"), ["profiles[1].max_ttl"]),
    (
        "zero rotation",
        set_(("kinds", "api_key", "rotate_every"), "0m"),
        ["kinds.api_key.rotate_every"],
    ),
    (
        "review forever",
        set_(("kinds", "workload"), {"review_every": "forever"}),
        ["kinds.workload.review_every"],
    ),
    (
        "kind max_ttl over the limit",
        set_(("kinds", "agent"), {"max_ttl": "4000d"}),
        ["kinds.agent.max_ttl"],
    ),
    # bad dates
    (
        "impossible date",
        set_(("vendors", 0, "contract_ends"), "2027-02-30"),
        ["vendors[0].contract_ends"],
    ),
    (
        "words for a date",
        set_(("vendors", 0, "contract_ends"), "next year"),
        ["vendors[0].contract_ends"],
    ),
    (
        "timestamp without offset",
        set_(("vendors", 0, "contract_ends"), "2027-03-31T00:00:00"),
        ["vendors[0].contract_ends"],
    ),
    (
        "timestamp out of range",
        set_(("vendors", 0, "contract_ends"), "9999-12-31T23:00:00-05:00"),
        ["vendors[0].contract_ends"],
    ),
    (
        "epoch seconds",
        set_(("vendors", 0, "contract_ends"), 1800000000),
        ["vendors[0].contract_ends"],
    ),
    (
        "bad approval expiry",
        set_(("identities", 2, "approval", "expires"), "2027-13-01"),
        ["identities[2].approval.expires"],
    ),
    ("bad identity expiry", set_(("identities", 0, "expires"), "soon"), ["identities[0].expires"]),
    # allowed environments
    (
        "environment not allowed",
        set_(("kinds", "service_account"), {"allowed_environments": ["dev"]}),
        ["identities[0].environment"],
    ),
    (
        "no environment allowed",
        set_(("kinds", "certificate"), {"allowed_environments": []}),
        ["identities[3].environment"],
    ),
    # provider requirements
    ("jwt profile without audience", del_(("profiles", 0, "audience")), ["profiles[0].audience"]),
    ("postgres profile without target", del_(("profiles", 1, "target")), ["profiles[1].target"]),
    (
        "redis profile without target",
        append(("profiles",), {"id": "cache", "provider": "redis", "max_ttl": "1h"}),
        ["profiles[2].target"],
    ),
    (
        "jwt-svid profile without a trust domain",
        append(("profiles",), {"id": "svid", "provider": "jwt-svid", "max_ttl": "1h"}),
        ["profiles[2].provider"],
    ),
    ("both jwks and jwks_uri", set_(("issuers", 0, "jwks"), {"keys": []}), ["issuers[0]"]),
    # oversized strings
    (
        "oversized purpose",
        set_(("identities", 0, "purpose"), "p" * 2001),
        ["identities[0].purpose"],
    ),
    ("huge purpose", set_(("identities", 0, "purpose"), LONG), ["identities[0].purpose"]),
    (
        "oversized justification",
        set_(("identities", 0, "justification"), "j" * 256),
        ["identities[0].justification"],
    ),
    ("oversized owner name", set_(("owners", 0, "name"), LONG), ["owners[0].name"]),
    ("oversized identity id", set_(("identities", 0, "id"), "n" * 129), ["identities[0].id"]),
    ("oversized label", set_(("identities", 0, "labels"), {"a": LONG}), ["identities[0].labels.a"]),
    (
        "oversized audience",
        set_(("profiles", 0, "audience"), "https://" + LONG),
        ["profiles[0].audience"],
    ),
    (
        "oversized claim",
        set_(("identities", 2, "attest", "claims", "repository"), LONG),
        ["identities[2].attest.claims.repository"],
    ),
    (
        "oversized policy",
        set_(("policies",), [{"id": "p", "source": "x" * 1_000_001}]),
        ["policies[0].source"],
    ),
    ("oversized policy path", set_(("policies",), ["p" * 1025]), ["policies[0]"]),
    ("empty purpose", set_(("identities", 0, "purpose"), ""), ["identities[0].purpose"]),
    ("empty contact", set_(("owners", 0, "contact"), ""), ["owners[0].contact"]),
    # control characters in text
    (
        "NUL in purpose",
        set_(("identities", 0, "purpose"), "deploys\x00prod"),
        ["identities[0].purpose"],
    ),
    (
        "newline in justification",
        set_(("identities", 0, "justification"), "CHG-1\nCHG-2"),
        ["identities[0].justification"],
    ),
    ("escape in owner name", set_(("owners", 0, "name"), "\x1b[31mTeam A"), ["owners[0].name"]),
    ("DEL in contact", set_(("owners", 0, "contact"), "a@example.com\x7f"), ["owners[0].contact"]),
    ("tab in system", set_(("identities", 0, "system"), "pay\tments"), ["identities[0].system"]),
    (
        "CR in approver",
        set_(("identities", 2, "approval", "by"), "dana\r@example.com"),
        ["identities[2].approval.by"],
    ),
    (
        "NUL in label",
        set_(("identities", 0, "labels"), {"team": "a\x00"}),
        ["identities[0].labels.team"],
    ),
    (
        "control in label key",
        set_(("identities", 0, "labels"), {"te\x00am": "a"}),
        ["identities[0].labels.te\x00am"],
    ),
    (
        "bell in audience",
        set_(("profiles", 0, "audience"), "https://api\x07.example.com"),
        ["profiles[0].audience"],
    ),
    (
        "NUL in claim",
        set_(("identities", 2, "attest", "claims", "repository"), "acme/\x00"),
        ["identities[2].attest.claims.repository"],
    ),
    (
        "newline in issuer audience",
        set_(("issuers", 0, "audiences"), ["tether\n"]),
        ["issuers[0].audiences[0]"],
    ),
    (
        "trailing newline in purpose",
        set_(("identities", 0, "purpose"), "Deploys\n"),
        ["identities[0].purpose"],
    ),
    (
        "trailing newline in identity id",
        set_(("identities", 0, "id"), "nhi-00000\n"),
        ["identities[0].id"],
    ),
    (
        "trailing newline in owner reference",
        set_(("identities", 0, "owner"), "team-a\n"),
        ["identities[0].owner"],
    ),
    (
        "trailing newline in environment",
        set_(("identities", 0, "environment"), "prod\n"),
        ["identities[0].environment"],
    ),
    # odd unicode where only plain identifiers are allowed
    ("RTL mark in owner id", set_(("owners", 0, "id"), "team\u200f-a"), ["owners[0].id"]),
    ("emoji in identity id", set_(("identities", 0, "id"), "nhi-\U0001f680"), ["identities[0].id"]),
    (
        "space in environment",
        set_(("identities", 0, "environment"), "prod env"),
        ["identities[0].environment"],
    ),
    (
        "homoglyph in scope",
        set_(("profiles", 0, "scopes"), ["re\u0430d"]),
        ["profiles[0].scopes[0]"],
    ),
    # policies
    (
        "policy given as an unresolved path",
        set_(("policies",), ["policies/base.cedar"]),
        ["policies[0]"],
    ),
    ("policy as a number", set_(("policies",), [5]), ["policies[0]"]),
]


@pytest.mark.parametrize(
    ("name", "mutation", "expected"),
    BAD_INPUT,
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_refused_naming_the_exact_path(
    name: str, mutation: Mutation, expected: list[str]
) -> None:
    document = base()
    mutation(document)
    problems = problems_of(document)
    assert [path for path, _ in problems] == expected, problems
    assert all(message for _, message in problems)


@pytest.mark.parametrize("document", [[], [base()], "version: 1", 1, None, True, 1.5])
def test_a_document_that_is_not_a_mapping_is_refused(document: Any) -> None:
    assert paths_of(document) == ["(document)"]


def test_problem_messages_say_what_is_wrong() -> None:
    document = base()
    del document["identities"][3]["owner"]
    document["identities"][1]["kind"] = "robot"
    document["identities"][0]["password"] = "x"
    problems = dict(problems_of(document))
    assert problems["identities[3].owner"] == "is required"
    assert "service_account" in problems["identities[1].kind"]
    assert problems["identities[0].password"] == "is not a known field"

    document = base()
    document["identities"][3]["owner"] = "team-z"
    problems = dict(problems_of(document))
    assert "team-z" in problems["identities[3].owner"]


def test_several_schema_problems_are_all_reported() -> None:
    document = base()
    del document["identities"][0]["purpose"]
    del document["identities"][0]["justification"]  # two missing in one object
    document["identities"][1]["password"] = "x"
    document["identities"][1]["token"] = "y"  # two unknown in one object
    document["identities"][4]["kind"] = "robot"
    document["profiles"][0]["max_ttl"] = 15
    document["owners"][1]["name"] = "\x00"
    document["unknown"] = True
    assert sorted(paths_of(document)) == sorted(
        [
            "identities[0].purpose",
            "identities[0].justification",
            "identities[1].password",
            "identities[1].token",
            "identities[4].kind",
            "profiles[0].max_ttl",
            "owners[1].name",
            "unknown",
        ]
    )


def test_several_semantic_problems_are_all_reported() -> None:
    document = base()
    document["identities"][3]["owner"] = "team-z"
    document["identities"][1]["vendor"] = "vendor-z"
    document["identities"][5]["approval"] = {"by": "dana@example.com", "expires": "soon"}
    document["identities"][0]["entitlements"][0]["scopes"] = ["write"]
    document["profiles"][0]["max_ttl"] = "0s"
    del document["profiles"][1]["target"]
    document["vendors"][0]["contract_ends"] = "2027-02-30"
    document["identities"].append(copy.deepcopy(document["identities"][6]))
    document["policies"] = ["policies/base.cedar"]
    with pytest.raises(EstateInvalid) as caught:
        parse_estate(document)
    paths = [p.path for p in caught.value.problems]
    assert sorted(paths) == sorted(
        [
            "identities[3].owner",
            "identities[1].vendor",
            "identities[5].approval.expires",
            "identities[0].entitlements[0].scopes",
            "profiles[0].max_ttl",
            "profiles[1].target",
            "vendors[0].contract_ends",
            "identities[8].id",
            "policies[0]",
        ]
    )
    # The message shows the first few and says how many more there are.
    assert "(and 4 more)" in str(caught.value)


def test_one_bad_field_in_a_large_estate_is_found() -> None:
    document = estate_document(2000)
    document["identities"][1234]["owner"] = "team-gone"
    assert paths_of(document) == ["identities[1234].owner"]


def test_postgres_grants_are_checked_when_the_estate_is_applied() -> None:
    from tests.factories import estate_document

    doc = estate_document(2)
    doc["profiles"][1]["grants"] = {"schema": "app", "privileges": ["SELECT", "DROP"]}
    with pytest.raises(EstateInvalid) as refused:
        parse_estate(doc)
    assert [p.path for p in refused.value.problems] == ["profiles[1].grants.privileges[1]"]
    assert "unknown privilege 'DROP'" in refused.value.problems[0].message


def test_an_identity_its_kind_requires_to_attest_is_accepted_without_a_rule() -> None:
    # The inventory holds the estate as it is; governance reports the identity as
    # insecure authentication and issuance refuses it (tests/govern, tests/policy).
    doc = base()
    del doc["identities"][2]["attest"]
    estate = parse_estate(doc)
    assert estate.identities[2].kind is Kind.WORKLOAD
    assert estate.identities[2].attest is None


def test_owner_lifecycle_governance_and_exceptions_are_read() -> None:
    doc = base()
    doc["owners"][0].update(status="departed", left="2026-11-01")
    doc["governance"] = {
        "dormant_after": "60d",
        "orphaned": {"action": "suspend", "grace": "0s"},
        "workstation_sources": ["10.20.0.0/16"],
        "kinds": {"agent": {"dormant_after": "7d"}},
    }
    doc["exceptions"] = [
        {
            "id": "EXC-1",
            "rule": "dormant",
            "identity": doc["identities"][0]["id"],
            "compensating_control": "quarterly manual check",
            "requested_by": "ana@example.com",
            "approved_by": "dana@example.com",
            "expires": "2027-01-31",
        }
    ]
    estate = parse_estate(doc)
    assert estate.owners[0].departed
    assert estate.owners[0].left == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert estate.governance.thresholds(Kind.AGENT).dormant_after == dt.timedelta(days=7)
    assert estate.governance.thresholds(Kind.API_KEY).dormant_after == dt.timedelta(days=60)
    assert estate.governance.suspends_at(estate.owners[0]) == estate.owners[0].left
    assert estate.governance.is_workstation("10.20.3.4")
    assert not estate.governance.is_workstation("10.21.3.4")
    assert estate.exceptions[0].rule == "dormant"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["owners"][0].update(status="departed"), "owners[0].left"),
        (lambda d: d["owners"][0].update(left="2026-01-01"), "owners[0].left"),
        (lambda d: d.update(governance={"dormant_after": "soon"}), "governance.dormant_after"),
        (
            lambda d: d.update(governance={"workstation_sources": ["10.0.0.300/8"]}),
            "governance.workstation_sources[0]",
        ),
        (
            lambda d: d.update(governance={"sinks": [{"id": "hook", "kind": "webhook"}]}),
            "governance.sinks[0].url",
        ),
    ],
)
def test_bad_governance_is_refused_naming_the_field(change: Mutation, path: str) -> None:
    doc = base()
    change(doc)
    assert path in paths_of(doc)


def _waiver(doc: Doc, **fields: Any) -> Doc:
    waiver = {
        "id": "EXC-1",
        "rule": "dormant",
        "identity": doc["identities"][0]["id"],
        "compensating_control": "manual check",
        "requested_by": "ana@example.com",
        "approved_by": "dana@example.com",
        "expires": "2027-01-31",
    }
    doc["exceptions"] = [{**waiver, **fields}]
    return doc


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"approved_by": "Ana@example.com"}, "exceptions[0].approved_by", "not its requester"),
        ({"rule": "nope"}, "exceptions[0].rule", "unknown rule"),
        ({"identity": "ghost"}, "exceptions[0].identity", "unknown identity"),
        ({"identity": "*"}, "exceptions[0].scope", "names an owner"),
        ({"expires": "later"}, "exceptions[0].expires", ""),
    ],
)
def test_bad_exceptions_are_refused(fields: dict[str, str], path: str, message: str) -> None:
    problems = dict(problems_of(_waiver(base(), **fields)))
    assert path in problems
    assert message in problems[path]
