"""Issuer keys: fetched once, refreshed on an unknown kid at most once per interval,
kept when a refresh fails, and fetched only within the limits we set."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from tests.attest.asserts import refused
from tests.attest.conftest import MakeAttestor
from tests.attest.oidc_issuer import DISCOVERY_PATH, JWKS_PATH, Clock, OidcIssuer
from tether.attest import Attestor, IssuerUnavailable, MemoryJtiStore
from tether.attest._fetch import MAX_RESPONSE_BYTES
from tether.model import Issuer

INTERVAL = dt.timedelta(seconds=30)


def test_keys_are_fetched_once_for_many_tokens(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    attestor = make_attestor(idp.issuer_config())
    for kty in ["RSA", "EC", "OKP"] * 10:
        attestor.verify(idp.mint(key=idp.key(kty)))  # type: ignore[arg-type]
    assert idp.requests_to(JWKS_PATH) == 1


# -- unknown kid -----------------------------------------------------------------------


def test_an_unknown_kid_refreshes_once_per_interval(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), min_refresh_interval=INTERVAL)
    attestor.verify(idp.mint())
    assert idp.requests_to(JWKS_PATH) == 1

    refused(attestor, idp.mint(key=idp.add_key("RSA", publish=False)), "unknown key id")
    assert idp.requests_to(JWKS_PATH) == 2  # one refresh for the unknown kid

    # A flood of random kids within the interval does not reach the IdP.
    for _ in range(20):
        refused(attestor, idp.mint(headers={"kid": f"random-{_}"}), "unknown key id")
    assert idp.requests_to(JWKS_PATH) == 2

    clock.advance(INTERVAL - dt.timedelta(seconds=1))
    refused(attestor, idp.mint(headers={"kid": "random-x"}), "unknown key id")
    assert idp.requests_to(JWKS_PATH) == 2
    clock.advance(seconds=1)
    refused(attestor, idp.mint(headers={"kid": "random-y"}), "unknown key id")
    assert idp.requests_to(JWKS_PATH) == 3
    # Known keys keep working throughout, with no further fetch.
    assert attestor.verify(idp.mint())
    assert idp.requests_to(JWKS_PATH) == 3


def test_a_key_rotated_in_at_the_idp_is_picked_up(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), min_refresh_interval=INTERVAL)
    old = idp.key("RSA")
    old_token = idp.mint(key=old)
    attestor.verify(idp.mint(key=old))

    new = idp.rotate("RSA")  # the old RSA key leaves the JWKS
    clock.advance(INTERVAL)
    assert attestor.verify(idp.mint(key=new)).subject == "test-subject"
    assert idp.requests_to(JWKS_PATH) == 2
    # After the refresh the retired key is gone from the cache too.
    refused(attestor, old_token, "unknown key id")


def test_a_rotation_right_after_a_refresh_waits_for_the_interval(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), min_refresh_interval=INTERVAL)
    attestor.verify(idp.mint())
    refused(attestor, idp.mint(headers={"kid": "nope"}), "unknown key id")  # uses the refresh
    new = idp.rotate("EC", retire=False)
    refused(attestor, idp.mint(key=new), "unknown key id")
    clock.advance(INTERVAL)
    assert attestor.verify(idp.mint(key=new))


def test_inline_keys_are_never_fetched(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config(keys="inline"))
    assert attestor.verify(idp.mint())
    refused(attestor, idp.mint(key=idp.add_key("RSA", publish=False)), "unknown key id")
    assert sum(idp.requests.values()) == 0


def test_an_unusable_inline_jwks_fails_closed(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    config = dataclasses.replace(idp.issuer_config(keys="inline"), jwks={"keys": "nope"})
    refused(make_attestor(config), idp.mint(headers={"kid": None}), "publishes no usable keys")


# -- fetch failures --------------------------------------------------------------------


def test_an_unreachable_idp_is_unavailable_and_not_hammered(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), min_refresh_interval=INTERVAL)
    idp.respond(JWKS_PATH, 500, "oops")
    error = refused(attestor, idp.mint(), "keys of issuer test-idp are unavailable: JWKS: HTTP 500")
    assert isinstance(error, IssuerUnavailable)
    assert error.status_code == 503
    for _ in range(5):
        refused(attestor, idp.mint(), "the last fetch failed; retrying later", IssuerUnavailable)
    assert idp.requests_to(JWKS_PATH) == 1

    idp.restore()
    clock.advance(INTERVAL)
    assert attestor.verify(idp.mint())
    assert idp.requests_to(JWKS_PATH) == 2


def test_a_failed_refresh_keeps_the_cached_keys(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), min_refresh_interval=INTERVAL)
    attestor.verify(idp.mint())
    for failure in ({"status": 503}, {"body": "not json"}, {"body": {"keys": "x"}}):
        idp.respond(JWKS_PATH, **failure)
        clock.advance(INTERVAL)
        refused(attestor, idp.mint(headers={"kid": "new"}), "unknown key id")
        assert attestor.verify(idp.mint(key=idp.key("EC")))
    assert idp.requests_to(JWKS_PATH) == 4


def test_a_stopped_idp_is_unavailable(clock: Clock, make_attestor: MakeAttestor) -> None:
    idp = OidcIssuer(["EC"], clock=clock)
    config, token = idp.issuer_config(), idp.mint()
    idp.stop()
    refused(make_attestor(config), token, "could not reach 127.0.0.1", IssuerUnavailable)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("<html>hi</html>", "not a JSON object"),
        ("[]", "not a JSON object"),
        ({"nokeys": []}, "not a JWKS"),
        ({"keys": {}}, "not a JWKS"),
        ({"keys": [{"kty": "RSA"}] * 101}, "more than 100"),
        ('{"keys": [], "keys": []}', "not a JSON object"),
    ],
)
def test_a_bad_jwks_document_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, body: Any, reason: str
) -> None:
    idp.respond(JWKS_PATH, 200, body)
    refused(make_attestor(idp.issuer_config()), idp.mint(), reason, IssuerUnavailable)


@pytest.mark.parametrize("content_length", [True, False])
def test_an_oversized_response_is_not_read(
    idp: OidcIssuer, make_attestor: MakeAttestor, content_length: bool
) -> None:
    padding = "x" * (MAX_RESPONSE_BYTES + 10)
    body = json.dumps({**idp.jwks(), "padding": padding})
    idp.respond(JWKS_PATH, 200, body, content_length=content_length)
    refused(make_attestor(idp.issuer_config()), idp.mint(), "larger than", IssuerUnavailable)


def test_a_response_just_under_the_cap_is_read(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    document = json.dumps({**idp.jwks(), "padding": ""})
    padding = "x" * (MAX_RESPONSE_BYTES - len(document))
    idp.respond(JWKS_PATH, 200, json.dumps({**idp.jwks(), "padding": padding}))
    assert make_attestor(idp.issuer_config()).verify(idp.mint())


def test_a_hanging_idp_times_out(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    release = idp.hang(JWKS_PATH)
    try:
        attestor = make_attestor(idp.issuer_config(), http_timeout=0.2)
        refused(attestor, idp.mint(), "timed out fetching 127.0.0.1", IssuerUnavailable)
    finally:
        release.set()


def test_a_redirect_on_the_same_origin_is_followed(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    idp.redirect(JWKS_PATH, "/moved")
    idp.redirect("/moved", idp.jwks_uri + "?v=2", status=301)
    idp.respond("/jwks?v=2", 200, idp.jwks())
    assert make_attestor(idp.issuer_config()).verify(idp.mint())
    assert idp.requests_to("/moved") == 1


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/jwks",  # same server, other host name
        "https://127.0.0.1:{port}/jwks",  # other scheme
        "http://127.0.0.1:1/jwks",  # other port
        "http://attacker.example/jwks",
    ],
)
def test_a_redirect_to_another_origin_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, target: str
) -> None:
    idp.redirect(JWKS_PATH, target.format(port=idp.port))
    refused(make_attestor(idp.issuer_config()), idp.mint(), "redirect to another origin")
    assert sum(idp.requests.values()) == 1


def test_a_redirect_loop_ends(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    idp.redirect(JWKS_PATH, "/a")
    idp.redirect("/a", JWKS_PATH)
    refused(make_attestor(idp.issuer_config()), idp.mint(), "too many redirects")
    assert sum(idp.requests.values()) == 4


def test_a_redirect_without_location_is_a_failure(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    idp.respond(JWKS_PATH, 302)
    refused(make_attestor(idp.issuer_config()), idp.mint(), "without a Location")


# -- discovery -------------------------------------------------------------------------


def test_discovery_under_a_path(clock: Clock, make_attestor: MakeAttestor) -> None:
    with OidcIssuer(["RSA"], clock=clock, path="/tenants/acme") as idp:
        attestor = make_attestor(idp.issuer_config(keys="discovery"))
        assert attestor.verify(idp.mint()).issuer.endswith("/tenants/acme")
        assert idp.requests["/tenants/acme" + DISCOVERY_PATH] == 1


def test_discovery_strips_one_trailing_slash(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    url = idp.url + "/"
    idp.discovery_overrides["issuer"] = url
    config = dataclasses.replace(idp.issuer_config(keys="discovery"), issuer=url)
    assert make_attestor(config).verify(idp.mint({"iss": url})).issuer == url
    assert idp.requests_to(DISCOVERY_PATH) == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"issuer": "https://accounts.example.com"}, "names a different issuer"),
        ({"issuer": None}, "names a different issuer"),
        ({"jwks_uri": None}, "has no jwks_uri"),
        ({"jwks_uri": 5}, "has no jwks_uri"),
        ({"jwks_uri": "file:///etc/passwd"}, "only http"),
        ({"jwks_uri": "ftp://127.0.0.1/jwks"}, "only http"),
    ],
)
def test_a_bad_discovery_document_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor, overrides: dict[str, Any], reason: str
) -> None:
    idp.discovery_overrides.update(overrides)
    attestor = make_attestor(idp.issuer_config(keys="discovery"))
    refused(attestor, idp.mint(), f"discovery: .*{reason}", IssuerUnavailable)
    assert idp.requests_to(JWKS_PATH) == 0


def test_discovery_trailing_issuer_mismatch_is_refused(
    idp: OidcIssuer, make_attestor: MakeAttestor
) -> None:
    idp.discovery_overrides["issuer"] = idp.url + "/"
    refused(make_attestor(idp.issuer_config(keys="discovery")), idp.mint(), "different issuer")


def test_discovery_is_reused_by_an_unknown_kid_refresh(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(keys="discovery"), min_refresh_interval=INTERVAL)
    attestor.verify(idp.mint())
    clock.advance(INTERVAL)
    refused(attestor, idp.mint(headers={"kid": "unknown"}), "unknown key id")
    assert (idp.requests_to(DISCOVERY_PATH), idp.requests_to(JWKS_PATH)) == (1, 2)


def test_a_failed_jwks_fetch_repeats_discovery_next_time(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(keys="discovery"), min_refresh_interval=INTERVAL)
    idp.respond(JWKS_PATH, 404)
    refused(attestor, idp.mint(), "HTTP 404", IssuerUnavailable)
    idp.restore()
    idp.respond("/keys-v2", 200, idp.jwks())
    idp.discovery_overrides["jwks_uri"] = idp.url + "/keys-v2"
    clock.advance(INTERVAL)
    assert attestor.verify(idp.mint())
    assert idp.requests_to(DISCOVERY_PATH) == 2


def _mock_client(documents: dict[str, Any], seen: list[str]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        document = documents.get(str(request.url))
        if document is None:
            return httpx.Response(404)
        return httpx.Response(200, json=document)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_an_https_issuer_may_not_discover_an_http_jwks_uri(
    idp: OidcIssuer, clock: Clock, jti_store: MemoryJtiStore
) -> None:
    # TLS cannot be served by the local issuer, so this one check runs on a mock transport.
    iss = "https://idp.example"
    seen: list[str] = []
    discovery = {"issuer": iss, "jwks_uri": "http://idp.example/jwks"}
    documents = {iss + DISCOVERY_PATH: discovery, "http://idp.example/jwks": idp.jwks()}
    config = Issuer.from_spec({"id": "x", "issuer": iss, "audiences": ["tether"]})
    with _mock_client(documents, seen) as client:
        attestor = Attestor(lambda: [config], jti_store, http=client, clock=clock)
        refused(
            attestor,
            idp.mint({"iss": iss}, key=idp.key("RSA")),
            "an https issuer's jwks_uri must be https",
        )
        assert seen == [iss + DISCOVERY_PATH]

        discovery["jwks_uri"] = "https://keys.idp.example/jwks"
        documents["https://keys.idp.example/jwks"] = idp.jwks()
        attestor.invalidate()
        # Another host is fine for the jwks_uri itself (Kubernetes and Google do this).
        assert attestor.verify(idp.mint({"iss": iss}, key=idp.key("RSA"))).issuer == iss


# -- staleness and invalidation --------------------------------------------------------


def test_stale_keys_are_refreshed_and_kept_if_the_refresh_fails(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), jwks_max_age=dt.timedelta(hours=1))
    attestor.verify(idp.mint())
    clock.advance(minutes=59)
    attestor.verify(idp.mint())
    assert idp.requests_to(JWKS_PATH) == 1
    clock.advance(minutes=1)
    attestor.verify(idp.mint())
    assert idp.requests_to(JWKS_PATH) == 2

    idp.respond(JWKS_PATH, 500)
    clock.advance(hours=2)
    assert attestor.verify(idp.mint())  # stale, but the IdP is down: keep going
    assert idp.requests_to(JWKS_PATH) == 3


def test_a_key_removed_at_the_idp_stops_working_once_stale(
    idp: OidcIssuer, make_attestor: MakeAttestor, clock: Clock
) -> None:
    attestor = make_attestor(idp.issuer_config(), jwks_max_age=dt.timedelta(hours=1))
    compromised = idp.key("RSA")
    attestor.verify(idp.mint(key=compromised))
    compromised.published = False
    clock.advance(hours=1)
    refused(attestor, idp.mint(key=compromised), "unknown key id")


def test_invalidate_drops_cached_keys(idp: OidcIssuer, make_attestor: MakeAttestor) -> None:
    attestor = make_attestor(idp.issuer_config(keys="discovery"))
    attestor.verify(idp.mint())
    attestor.invalidate()
    attestor.verify(idp.mint())
    assert (idp.requests_to(DISCOVERY_PATH), idp.requests_to(JWKS_PATH)) == (2, 2)
