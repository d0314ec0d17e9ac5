"""Bad input over HTTP gets a clear 4xx and changes nothing (design.md §7).

Property-based: Hypothesis mutates a valid estate at random paths, builds junk from
scratch, and throws random bodies at the system endpoints, all through the real ASGI app
on a SQLite-backed node.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.factories import KINDS, estate_document
from tether.api import create_app
from tether.api._access import ESTATE_BODY
from tether.app import Tether

SETTINGS = settings(
    max_examples=75,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MIB = 1024 * 1024
LIMIT = ESTATE_BODY  # the estate's limit: the largest body any route takes
BASE = estate_document(5)
# 0 service_account (team-a), 1 api_key (team-b, vendor-x), 2 workload (team-a, attested),
# 3 certificate (team-b), 4 token (team-a).


# -- the node and its client --


@pytest.fixture
def client(sqlite_node: Tether) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_node), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {sqlite_node.root_token}"  # type: ignore[attr-defined]
        response = c.post("/v1/estate/apply", json=BASE)
        assert response.status_code == 200, response.text
        yield c


def state(node: Tether, client: TestClient) -> dict[str, Any]:
    """What a refused request must leave as it was."""
    response = client.get("/v1/identities", params={"limit": 10000})
    assert response.status_code == 200
    with node.store.read() as tx:
        return {
            "identities": response.json()["items"],
            "objects": {
                t: tx.estate_objects(t)
                for t in ("owner", "vendor", "issuer", "profile", "kind", "policy")
            },
            "tokens": [r.id for r in tx.list_api_tokens()],
            "head": tx.audit_head(),
        }


def assert_clear_refusal(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str)
    assert body["error"]
    assert isinstance(body.get("message"), str)
    assert body["message"]


# -- junk --

ODD = [
    "\x00",
    "\x01",
    "\x1b[2J",
    "\n",
    "\r\n",
    "\t",
    "\x7f",
    "\u200f",  # RIGHT-TO-LEFT MARK
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u200b",  # ZERO WIDTH SPACE
    "\ufeff",  # BYTE ORDER MARK
    "\u0301",  # COMBINING ACUTE ACCENT
    "\u0430",  # CYRILLIC SMALL LETTER A, looks like "a"
    "\uff10",  # FULLWIDTH DIGIT ZERO
    "\U0001f680",
    "\U0001f469\u200d\U0001f4bb",  # emoji ZWJ sequence
    "\U0001f1fa\U0001f1f8",  # flag
    "\ufffd",
    "\U0010ffff",
]
# Any code point but lone surrogates (which JSON cannot carry as UTF-8), and the odd ones.
odd_text = st.lists(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from(ODD), max_size=20
).map("".join)
huge_text = st.builds(
    lambda c, n: c * n,
    st.sampled_from(["x", "\u200f", "\U0001f680", "\x00"]),
    st.sampled_from([256, 2001, 70_000, 1_100_000]),
)
huge_numbers = st.sampled_from(
    [10**300, -(10**300), 10**4000, 2**63, 2**64, -(2**63) - 1, 1e308, -1e308, 5e-324]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | huge_numbers
    | st.floats()  # NaN and infinities included
    | odd_text
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=15,
)


def _nest(depth: int, as_dict: bool) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


# Deep, yet with the estate's own levels (up to 8 where junk is put) under the API's JSON
# depth limit (64): a deeper document is refused as not JSON, a 400 tested on its own
# (tests/api/test_access.py), not as an estate problem.
deep_junk = st.builds(_nest, st.integers(min_value=5, max_value=50), st.booleans())
anything = junk | deep_junk | huge_text


def of_type_other_than(*allowed: type) -> st.SearchStrategy[Any]:
    def fits(value: Any) -> bool:
        if isinstance(value, bool):
            return bool in allowed
        return isinstance(value, allowed)

    return anything.filter(lambda v: not fits(v))


# -- the slots of the base estate, and what each accepts --

TEXT = "text"  # free text: no control characters, bounded length
IDENT = "ident"  # ASCII identifiers and references
ENUM = "enum"
DURATION = "duration"
TIME = "time"
LIST = "list"
OBJECT = "object"
URL = "url"

Path_ = tuple[Any, ...]
SLOTS: list[tuple[Path_, str, bool, int]] = [
    # (path, what it is, required, max length for text)
    (("owners",), LIST, False, 0),
    (("owners", 0, "id"), IDENT, True, 0),
    (("owners", 0, "name"), TEXT, False, 255),
    (("owners", 1, "contact"), TEXT, True, 255),
    (("vendors", 0, "id"), IDENT, True, 0),
    (("vendors", 0, "contract_ends"), TIME, True, 0),
    (("issuers", 0, "id"), IDENT, True, 0),
    (("issuers", 0, "preset"), ENUM, False, 0),
    (("issuers", 0, "issuer"), URL, True, 0),
    (("issuers", 0, "audiences"), LIST, True, 0),
    (("issuers", 0, "audiences", 0), TEXT, False, 512),
    (("profiles",), LIST, False, 0),
    (("profiles", 0, "id"), IDENT, True, 0),
    (("profiles", 0, "provider"), ENUM, True, 0),
    (("profiles", 0, "audience"), TEXT, True, 512),  # jwt needs an audience
    (("profiles", 0, "scopes"), LIST, False, 0),
    (("profiles", 0, "scopes", 0), IDENT, False, 0),
    (("profiles", 0, "max_ttl"), DURATION, True, 0),
    (("profiles", 1, "target"), IDENT, True, 0),  # postgres needs a target
    (("identities",), LIST, False, 0),
    (("kinds", "api_key", "max_ttl"), DURATION, False, 0),
    (("kinds", "api_key", "rotate_every"), DURATION, False, 0),
    (("identities", 2, "approval", "by"), TEXT, True, 255),
    (("identities", 2, "approval", "expires"), TIME, True, 0),
    (("identities", 2, "attest", "issuer"), IDENT, True, 0),
    (("identities", 1, "vendor"), IDENT, False, 0),
]
for _k in range(5):
    SLOTS += [
        (("identities", _k, "id"), IDENT, True, 0),
        (("identities", _k, "kind"), ENUM, True, 0),
        (("identities", _k, "owner"), IDENT, True, 0),
        (("identities", _k, "purpose"), TEXT, True, 2000),
        (("identities", _k, "justification"), TEXT, True, 255),
        (("identities", _k, "environment"), IDENT, True, 0),
        (("identities", _k, "region"), IDENT, False, 0),
        (("identities", _k, "criticality"), ENUM, False, 0),
        (("identities", _k, "entitlements"), LIST, False, 0),
        (("identities", _k, "entitlements", 0, "profile"), IDENT, True, 0),
    ]

#: Objects that accept no fields but their own, and the fields they know.
CLOSED: list[tuple[Path_, set[str]]] = [
    (
        (),
        {
            "version",
            "owners",
            "vendors",
            "issuers",
            "profiles",
            "identities",
            "kinds",
            "policies",
            "environments",
            "governance",
            "exceptions",
        },
    ),
    (("owners", 0), {"id", "name", "contact", "status", "left"}),
    (("vendors", 0), {"id", "name", "contract_ends"}),
    (
        ("issuers", 0),
        {"id", "preset", "issuer", "jwks_uri", "jwks", "audiences", "algorithms", "single_use"},
    ),
    (
        ("profiles", 1),
        {"id", "provider", "audience", "scopes", "target", "grants", "max_ttl", "environment"},
    ),
    (
        ("identities", 3),
        {
            "id",
            "kind",
            "owner",
            "purpose",
            "justification",
            "system",
            "environment",
            "region",
            "vendor",
            "criticality",
            "approval",
            "expires",
            "status",
            "labels",
            "attest",
            "entitlements",
        },
    ),
    (("identities", 2, "approval"), {"by", "expires"}),
    (("identities", 2, "attest"), {"issuer", "claims"}),
    (("identities", 0, "entitlements", 0), {"profile", "scopes", "conditions"}),
    (("kinds",), set(KINDS)),
    (
        ("kinds", "api_key"),
        {
            "max_ttl",
            "rotate_every",
            "review_every",
            "attestation_required",
            "allowed_environments",
            "telemetry",
        },
    ),
]

DURATION_FORM = re.compile(r"(?:[0-9]{1,9}[smhdw])+")
TIME_FORM = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2}))?"
)
IDENT_FORM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}")


def _parent(doc: Any, path: Path_) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def bad_string(kind: str, max_length: int) -> st.SearchStrategy[str]:
    """A string that the slot's kind can never accept."""
    control = st.sampled_from([c for c in ODD if len(c) == 1 and (ord(c) < 32 or c == "\x7f")])
    if kind == TEXT:
        with_control = st.tuples(odd_text, control, odd_text).map("".join)
        too_long = st.builds(
            lambda c: c * (max_length + 1), st.sampled_from(["a", "\u05d0", "\U0001f680"])
        )
        return with_control | too_long | st.just("")
    if kind in (IDENT, URL):
        non_ascii = st.sampled_from([c for c in ODD if not c.isascii()] + [" ", "\x00", "\n"])
        return (
            st.tuples(odd_text, non_ascii, odd_text).map("".join)
            | st.just("")
            | st.just("x" * 3000)
            | st.sampled_from(["-leading-dash", ".hidden", "a b", "trailing-newline\n"])
        )
    if kind == ENUM:
        return odd_text.filter(
            lambda s: (
                s not in KINDS
                and s
                not in {
                    "jwt",
                    "token",
                    "postgres",
                    "redis",
                    "static",
                    "x509-svid",
                    "jwt-svid",
                    "github-actions",
                    "kubernetes",
                    "oidc",
                    "low",
                    "medium",
                    "high",
                    "critical",
                }
            )
        )
    if kind == DURATION:
        return st.sampled_from(
            ["0s", "0h0m", "3661d", "999999999w", "1.5h", "-1h", "1H", "PT1H", "\uff11h", ""]
        ) | odd_text.filter(lambda s: not DURATION_FORM.fullmatch(s))
    if kind == TIME:
        return st.sampled_from(
            [
                "2027-02-30",
                "2027-13-01",
                "2027-01-31T12:00:00",
                "0001-01-01T00:00:00+05:00",
                "9999-12-31T23:00:00-05:00",
                "2027-01-31T25:00:00Z",
                "tomorrow",
                "",
            ]
        ) | odd_text.filter(lambda s: not TIME_FORM.fullmatch(s))
    raise AssertionError(kind)


@st.composite
def slot_mutation(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    path, kind, required, max_length = draw(st.sampled_from(SLOTS))
    allowed: tuple[type, ...] = {LIST: (list,), OBJECT: (dict,)}.get(kind, (str,))
    choices = ["wrong type", "nested junk"]
    if required:
        choices.append("remove")
    if kind not in (LIST, OBJECT):
        choices.append("bad string")
    if kind == IDENT and path[-1] in ("owner", "vendor", "issuer", "profile"):
        choices.append("unknown reference")
    how = draw(st.sampled_from(choices))
    if how == "remove":
        return lambda doc: _parent(doc, path).pop(path[-1], None)
    if how == "wrong type":
        value = draw(of_type_other_than(*allowed))
    elif how == "nested junk":
        value = draw(deep_junk.filter(lambda v: not isinstance(v, allowed)))
        if kind == LIST:  # a list, but of lists where objects or strings belong
            value = [draw(deep_junk.filter(lambda v: isinstance(v, list)))]
    elif how == "unknown reference":
        value = draw(st.from_regex(IDENT_FORM, fullmatch=True)) + "-ghost"
    else:
        value = draw(bad_string(kind, max_length))

    def mutate(doc: dict[str, Any]) -> None:
        _parent(doc, path)[path[-1]] = value

    return mutate


@st.composite
def structural_mutation(draw: st.DrawFn) -> Callable[[dict[str, Any]], None]:
    how = draw(st.sampled_from(["unknown field", "duplicate", "departed owner", "version"]))
    if how == "unknown field":
        path, known = draw(st.sampled_from(CLOSED))
        key = draw(odd_text.filter(lambda k: k not in known))
        value = draw(anything)

        def add(doc: dict[str, Any]) -> None:
            target: Any = doc
            for part in path:
                target = target[part]
            target[key] = value

        return add
    if how == "duplicate":
        section = draw(st.sampled_from(["owners", "vendors", "issuers", "profiles", "identities"]))
        index = draw(st.integers(min_value=0, max_value=len(BASE[section]) - 1))
        return lambda doc: doc[section].append(copy.deepcopy(doc[section][index]))
    if how == "departed owner":
        # A departed owner must say when it left (an identity without an attestation rule
        # its kind requires is applied: governance reports it, issuance refuses it).
        return lambda doc: doc["owners"][0].update(status="departed")
    version = draw(anything.filter(lambda v: v != 1 or isinstance(v, bool)))
    return lambda doc: doc.update(version=version)


@st.composite
def mutated_estates(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    mutations = draw(st.lists(slot_mutation() | structural_mutation(), min_size=1, max_size=3))
    for mutation in mutations:
        # An earlier mutation may already have replaced what this one would change.
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            mutation(doc)
    assume(doc != BASE)
    return doc


SECTIONS = ["owners", "vendors", "issuers", "profiles", "identities", "kinds", "policies"]


@st.composite
def scratch_estates(draw: st.DrawFn) -> Any:
    """Junk built from nothing: never a valid estate, often one that looks like it."""
    form = draw(st.sampled_from(["not an object", "no version", "sections of junk"]))
    if form == "not an object":
        return draw(anything.filter(lambda v: not isinstance(v, dict)))
    if form == "no version":
        doc = draw(st.dictionaries(st.sampled_from(SECTIONS) | odd_text, anything, max_size=6))
        doc.pop("version", None)
        return doc
    doc = {"version": 1}
    names = draw(st.lists(st.sampled_from(SECTIONS), min_size=1, max_size=4, unique=True))
    for name in names:
        if name == "kinds":
            doc[name] = draw(
                of_type_other_than(dict)
                | st.dictionaries(
                    odd_text.filter(lambda k: k not in KINDS), anything, min_size=1, max_size=3
                )
            )
        else:
            doc[name] = draw(
                of_type_other_than(list)
                | st.lists(
                    of_type_other_than(dict, str)
                    if name == "policies"
                    else of_type_other_than(dict),
                    min_size=1,
                    max_size=4,
                )
            )
    return doc


def is_strict_json(document: Any) -> bool:
    """Whether `json.dumps(document)` is RFC 8259 JSON (Python writes NaN and Infinity)."""
    try:
        json.dumps(document, allow_nan=False)
    except ValueError:
        return False
    return True


def assert_refused_as_estate(response: Any, document: Any) -> None:
    """422 with the bad fields named, or, for NaN/Infinity, 400: they are not JSON."""
    if not is_strict_json(document):
        assert response.status_code == 400
        assert "not JSON" in response.json()["message"]
        return
    assert response.status_code == 422
    assert response.json()["error"] == "estate_invalid"
    problems = response.json()["problems"]
    assert problems
    assert all(p["path"] and p["message"] for p in problems)


def post_estate(client: TestClient, document: Any, dry_run: bool) -> Any:
    content = json.dumps(document)  # NaN and Infinity included: the server must refuse them
    return client.post(
        "/v1/estate/apply",
        content=content,
        params={"dry_run": "true"} if dry_run else None,
        headers={"content-type": "application/json"},
    )


# -- (a) malformed estates --


@SETTINGS
@given(document=mutated_estates(), dry_run=st.booleans())
def test_mutated_estates_are_refused_and_change_nothing(
    sqlite_node: Tether, client: TestClient, document: dict[str, Any], dry_run: bool
) -> None:
    before = state(sqlite_node, client)
    response = post_estate(client, document, dry_run)
    assert_clear_refusal(response)
    assert_refused_as_estate(response, document)
    assert state(sqlite_node, client) == before


@SETTINGS
@given(document=scratch_estates(), dry_run=st.booleans())
def test_estates_from_scratch_are_refused_and_change_nothing(
    sqlite_node: Tether, client: TestClient, document: Any, dry_run: bool
) -> None:
    before = state(sqlite_node, client)
    response = post_estate(client, document, dry_run)
    assert_clear_refusal(response)
    assert state(sqlite_node, client) == before


@pytest.mark.parametrize(
    "document",
    [
        {**BASE, "vendors": [{"id": "vendor-x", "contract_ends": "9999-12-31T23:00:00-05:00"}]},
        {**BASE, "kinds": {"api_key": {"max_ttl": "999999999w"}}},
        {**BASE, "profiles": [{**BASE["profiles"][0], "max_ttl": "999999999w999999999d"}]},
        {**BASE, "owners": [{"id": "team-a\n", "contact": "x"}, BASE["owners"][1]]},
    ],
    ids=["time out of range", "duration overflow", "huge combined duration", "trailing newline"],
)
def test_edge_values_found_by_fuzzing_are_refused(
    sqlite_node: Tether, client: TestClient, document: dict[str, Any]
) -> None:
    before = state(sqlite_node, client)
    response = post_estate(client, document, dry_run=False)
    assert_clear_refusal(response)
    assert response.status_code == 422
    assert state(sqlite_node, client) == before


def test_a_valid_estate_still_applies_after_the_refusals(
    sqlite_node: Tether, client: TestClient
) -> None:
    changed = copy.deepcopy(BASE)
    changed["identities"][0]["purpose"] = "Still accepted"
    response = post_estate(client, changed, dry_run=False)
    assert response.status_code == 200
    assert response.json()["summary"]["update"] == 1
    assert sqlite_node.verify_audit().ok


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1, "owners": "\xff\xfe"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"version": ' + b"9" * 5000 + b"}",
    ],
    ids=["invalid utf-8", "nesting", "huge integer"],
)
def test_unparseable_bodies_get_the_error_shape(
    sqlite_node: Tether, client: TestClient, content: bytes
) -> None:
    before = state(sqlite_node, client)
    response = client.post(
        "/v1/estate/apply", content=content, headers={"content-type": "application/json"}
    )
    assert state(sqlite_node, client) == before
    assert_clear_refusal(response)


# -- (b) random bodies to the system and token endpoints --

ROLE = re.compile(r"admin|auditor|owner:[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


def _all_valid_roles(roles: Any) -> bool:
    return (
        isinstance(roles, list)
        and 1 <= len(roles) <= 20
        and all(isinstance(r, str) and ROLE.fullmatch(r) for r in roles)
    )


role_like = st.sampled_from(["admin", "auditor", "owner:team-a"]) | odd_text
bad_roles = anything.filter(lambda r: not _all_valid_roles(r)) | st.lists(
    role_like, min_size=1, max_size=25
).filter(lambda r: not _all_valid_roles(r))
ttl_values = (
    st.none()
    | anything
    | st.sampled_from(["1h", "0s", "3661d", "999999999w", "999999999w999999999d", "\u0661h", "-1h"])
)
token_bodies = anything | st.fixed_dictionaries(
    {"name": st.just("ci-bot") | anything, "roles": bad_roles},
    optional={"ttl": ttl_values, "extra": anything},
)


def _well_formed_share(share: Any) -> bool:
    if not isinstance(share, str):
        return False
    try:
        return len(base64.b64decode(share.strip(), validate=True)) == 33
    except (binascii.Error, ValueError):
        return False


share_text = (
    odd_text
    | huge_text
    | st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
    | st.sampled_from(["", " ", "===", "AAAA", "tth_" + "0" * 40])
).filter(lambda s: not _well_formed_share(s))
unseal_bodies = anything.filter(lambda b: not isinstance(b, dict)) | st.fixed_dictionaries(
    {},
    optional={
        "share": share_text | anything.filter(lambda s: not _well_formed_share(s)),
        "key": anything,
    },
)
init_bodies = anything | st.fixed_dictionaries(
    {},
    optional={
        "shares": anything | st.integers(min_value=-(10**6), max_value=10**6),
        "threshold": anything | st.integers(min_value=-(10**6), max_value=10**6),
        "dev": anything,
    },
)
raw_bodies = st.binary(max_size=300)


@SETTINGS
@given(body=token_bodies)
def test_random_token_requests_get_4xx(sqlite_node: Tether, client: TestClient, body: Any) -> None:
    before = state(sqlite_node, client)
    response = client.post(
        "/v1/tokens", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert_clear_refusal(response)
    assert state(sqlite_node, client)["tokens"] == before["tokens"]


@SETTINGS
@given(body=unseal_bodies)
def test_random_unseal_requests_get_4xx(sqlite_node: Tether, client: TestClient, body: Any) -> None:
    response = client.post(
        "/v1/sys/unseal", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert_clear_refusal(response)
    assert not sqlite_node.barrier.sealed


@SETTINGS
@given(body=init_bodies)
def test_random_init_requests_get_4xx(sqlite_node: Tether, client: TestClient, body: Any) -> None:
    response = client.post(
        "/v1/sys/init", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert_clear_refusal(response)


@pytest.mark.parametrize("body", [{}, {"shares": 1, "threshold": 1}, {"shares": 0}])
def test_init_on_an_initialized_node_changes_nothing(
    sqlite_node: Tether, client: TestClient, body: dict[str, Any]
) -> None:
    before = state(sqlite_node, client)
    response = client.post("/v1/sys/init", json=body)
    assert_clear_refusal(response)
    assert not sqlite_node.barrier.sealed
    assert state(sqlite_node, client) == before


@SETTINGS
@given(
    path=st.sampled_from(["/v1/tokens", "/v1/sys/unseal", "/v1/sys/init", "/v1/estate/apply"]),
    body=raw_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-yaml"]),
)
def test_random_bytes_get_4xx_never_5xx(
    sqlite_node: Tether, client: TestClient, path: str, body: bytes, content_type: str
) -> None:
    before = state(sqlite_node, client)
    response = client.post(path, content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    after = state(sqlite_node, client)
    assert after["identities"] == before["identities"]
    assert after["tokens"] == before["tokens"]


# -- (c) the body size limit --


def test_a_declared_body_over_the_estate_limit_gets_413(
    sqlite_node: Tether, client: TestClient
) -> None:
    before = state(sqlite_node, client)

    def small() -> Iterator[bytes]:
        yield json.dumps(BASE).encode()

    response = client.post(
        "/v1/estate/apply",
        content=small(),
        headers={"content-type": "application/json", "content-length": str(LIMIT + 1)},
    )
    assert response.status_code == 413
    assert_clear_refusal(response)
    assert response.json()["error"] == "too_large"
    assert state(sqlite_node, client) == before


def test_a_streamed_body_over_the_estate_limit_gets_413(
    sqlite_node: Tether, client: TestClient
) -> None:
    before = state(sqlite_node, client)
    chunk = b" " * MIB

    def stream() -> Iterator[bytes]:
        yield b'{"version": 1, "owners": []'
        for _ in range(LIMIT // MIB + 1):
            yield chunk
        yield b"}"

    response = client.post(
        "/v1/estate/apply", content=stream(), headers={"content-type": "application/json"}
    )
    # Without the limit this would be `{"version": 1, "owners": []}`: retire everything.
    assert state(sqlite_node, client) == before
    assert response.status_code == 413
    assert_clear_refusal(response)
    assert response.json()["error"] == "too_large"


def test_a_body_just_under_the_limit_is_not_refused_for_its_size(
    sqlite_node: Tether, client: TestClient
) -> None:
    response = client.post(
        "/v1/estate/apply",
        content=b"[]",
        headers={"content-type": "application/json", "content-length": str(LIMIT)},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "estate_invalid"


def test_a_malformed_content_length_is_refused(sqlite_node: Tether, client: TestClient) -> None:
    response = client.post(
        "/v1/estate/apply",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": "1e9"},
    )
    assert 400 <= response.status_code < 500
