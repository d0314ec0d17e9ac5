"""A real, local OIDC issuer for tests: discovery, a JWKS, and tokens minted on demand.

It listens on 127.0.0.1 (port 0, so tests never collide), serves
`/.well-known/openid-configuration` and `/jwks` from keys generated when it starts,
counts every request by path, and can be told to fail, hang, redirect or serve anything.
Tokens are encoded here, not by PyJWT, so tests can also forge what PyJWT would refuse
to produce (alg `none`, an HMAC keyed with a public key, a `crit` header ...).

    with OidcIssuer() as idp:
        attestor = Attestor(lambda: [idp.issuer_config("ci")], MemoryJtiStore())
        evidence = attestor.verify(idp.mint({"sub": "job"}))
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from tether._internal.timeutil import utcnow
from tether.model import Issuer

KeyType = Literal["RSA", "EC", "OKP"]
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
_DEFAULT_ALG: Mapping[KeyType, str] = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
_ALGORITHMS = get_default_algorithms()
#: Marks "leave this claim or header out" in `mint`.
OMIT: Any = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def encode(
    header: Mapping[str, Any], payload: Mapping[str, Any], sign: Callable[[bytes], bytes]
) -> str:
    """A compact JWS of exactly this header and payload, signed by `sign(signing_input)`."""
    signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"


def hmac_signer(secret: bytes, digest: str = "sha256") -> Callable[[bytes], bytes]:
    return lambda message: hmac.new(secret, message, getattr(hashlib, digest)).digest()


class Clock:
    """A settable clock to inject wherever Tether takes `clock=`; never sleeps."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime(2031, 5, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta | None = None, **kwargs: float) -> dt.datetime:
        self.now += delta if delta is not None else dt.timedelta(**kwargs)
        return self.now


def generate_private_key(kty: KeyType) -> Any:
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kty == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass
class SigningKey:
    """A key pair the issuer may sign with; `published` keys are in its JWKS."""

    kid: str
    kty: KeyType
    private: Any = field(repr=False)
    alg: str = ""
    published: bool = True

    def __post_init__(self) -> None:
        self.alg = self.alg or _DEFAULT_ALG[self.kty]

    @classmethod
    def generate(cls, kty: KeyType = "RSA", kid: str | None = None, **kwargs: Any) -> SigningKey:
        kid = kid or f"{kty.lower()}-{secrets.token_hex(4)}"
        return cls(kid=kid, kty=kty, private=generate_private_key(kty), **kwargs)

    def public_jwk(self, *, with_alg: bool = True) -> dict[str, Any]:
        jwk = dict(_ALGORITHMS[self.alg].to_jwk(self.private.public_key(), as_dict=True))
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, use="sig")
        if with_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, message: bytes, alg: str | None = None) -> bytes:
        return bytes(_ALGORITHMS[alg or self.alg].sign(message, self.private))


@dataclass
class _Override:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: threading.Event | None = None
    content_length: bool = True


class OidcIssuer:
    """A fake OIDC identity provider on a real socket; see the module docstring."""

    def __init__(
        self,
        key_types: Sequence[KeyType] = ("RSA", "EC", "OKP"),
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        path: str = "",
        start: bool = True,
    ) -> None:
        self.clock = clock
        self.keys: dict[str, SigningKey] = {}
        self.requests: Counter[str] = Counter()
        self.discovery_overrides: dict[str, Any] = {}
        self._path = path.rstrip("/")
        self._default_kty: KeyType = key_types[0] if key_types else "RSA"
        self._overrides: dict[str, _Override] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for kty in key_types:
            self.add_key(kty)
        if start:
            self.start()

    # -- lifecycle --
    def start(self) -> OidcIssuer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        # A short poll interval: `shutdown()` waits for it, once per test.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for override in self._overrides.values():
            if override.hang is not None:
                override.hang.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses --
    @property
    def port(self) -> int:
        assert self._server is not None, "the issuer is not running"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The `iss` this issuer puts in its tokens and its discovery document."""
        return self.base_url + self._path

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS_PATH

    @property
    def discovery_url(self) -> str:
        return self.url + DISCOVERY_PATH

    def issuer_config(
        self,
        id: str = "test-idp",
        *,
        preset: str = "oidc",
        audiences: Sequence[str] = ("tether",),
        keys: Literal["jwks_uri", "inline", "discovery"] = "jwks_uri",
        algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA"),
        single_use: bool | None = None,
    ) -> Issuer:
        """This issuer as the estate would declare it, through `Issuer.from_spec`."""
        spec: dict[str, Any] = {
            "id": id,
            "preset": preset,
            "issuer": self.url,
            "audiences": list(audiences),
            "algorithms": list(algorithms),
        }
        if keys == "jwks_uri":
            spec["jwks_uri"] = self.jwks_uri
        elif keys == "inline":
            spec["jwks"] = self.jwks()
        if single_use is not None:
            spec["single_use"] = single_use
        return Issuer.from_spec(spec)

    # -- keys --
    @property
    def default_key(self) -> SigningKey:
        """What `mint` signs with unless told otherwise: the newest published key of the
        first key type given (RSA by default), or else the newest published key."""
        published = [k for k in self.keys.values() if k.published]
        preferred = [k for k in published if k.kty == self._default_kty]
        return (preferred or published)[-1]

    def key(self, kty: KeyType) -> SigningKey:
        """The newest published key of a type."""
        return [k for k in self.keys.values() if k.published and k.kty == kty][-1]

    def add_key(self, kty: KeyType = "RSA", *, publish: bool = True, **kwargs: Any) -> SigningKey:
        key = SigningKey.generate(kty, published=publish, **kwargs)
        self.keys[key.kid] = key
        return key

    def rotate(self, kty: KeyType = "RSA", *, retire: bool = True) -> SigningKey:
        """Publish a new key of `kty`; with `retire`, unpublish the older ones of that type."""
        if retire:
            for key in self.keys.values():
                if key.kty == kty:
                    key.published = False
        return self.add_key(kty)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys.values() if k.published]}

    # -- tokens --
    def claims(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        lifetime: dt.timedelta = dt.timedelta(minutes=5),
    ) -> dict[str, Any]:
        """Standard claims at the clock's now, overlaid by `claims` (OMIT removes one)."""
        now = int(self.clock().timestamp())
        base: dict[str, Any] = {
            "iss": self.url,
            "aud": "tether",
            "sub": "test-subject",
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime.total_seconds()),
            "jti": secrets.token_hex(16),
        }
        base.update(claims or {})
        return {name: value for name, value in base.items() if value is not OMIT}

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: SigningKey | str | None = None,
        alg: str | None = None,
        headers: Mapping[str, Any] | None = None,
        lifetime: dt.timedelta = dt.timedelta(minutes=5),
    ) -> str:
        """A token signed by one of this issuer's keys (published or not).

        `headers` overlay {"alg", "typ", "kid"}; OMIT removes one (e.g. `kid`).
        """
        signer = self.keys[key] if isinstance(key, str) else (key or self.default_key)
        alg = alg or signer.alg
        header: dict[str, Any] = {"alg": alg, "typ": "JWT", "kid": signer.kid}
        header.update(headers or {})
        header = {name: value for name, value in header.items() if value is not OMIT}
        payload = self.claims(claims, lifetime=lifetime)
        return encode(header, payload, lambda message: signer.sign(message, alg))

    def github_actions_claims(self, **overrides: Any) -> dict[str, Any]:
        """Claims shaped like a real GitHub Actions OIDC token for a deployment job."""
        repository = overrides.pop("repository", "acme/payments")
        owner = repository.split("/", 1)[0]
        ref = overrides.pop("ref", "refs/heads/main")
        environment = overrides.pop("environment", "prod")
        run_id = str(secrets.randbelow(10**10))
        claims: dict[str, Any] = {
            "sub": f"repo:{repository}:environment:{environment}",
            "aud": "tether",
            "ref": ref,
            "ref_type": "branch",
            "sha": secrets.token_hex(20),
            "repository": repository,
            "repository_id": "74000001",
            "repository_owner": owner,
            "repository_owner_id": "1000001",
            "repository_visibility": "private",
            "run_id": run_id,
            "run_number": "42",
            "run_attempt": "1",
            "actor": "octocat",
            "actor_id": "583231",
            "workflow": "Deploy",
            "workflow_ref": f"{repository}/.github/workflows/deploy.yml@{ref}",
            "workflow_sha": secrets.token_hex(20),
            "job_workflow_ref": f"{repository}/.github/workflows/deploy.yml@{ref}",
            "event_name": "push",
            "head_ref": "",
            "base_ref": "",
            "environment": environment,
            "runner_environment": "github-hosted",
        }
        claims.update(overrides)
        return claims

    def github_actions_token(self, *, key: SigningKey | str | None = None, **overrides: Any) -> str:
        return self.mint(self.github_actions_claims(**overrides), key=key)

    def kubernetes_claims(
        self,
        namespace: str = "payments",
        service_account: str = "deployer",
        pod: str = "deployer-7d9f8b-x2x4q",
        **overrides: Any,
    ) -> dict[str, Any]:
        """Claims shaped like a projected Kubernetes service-account token."""
        claims: dict[str, Any] = {
            "aud": ["tether"],
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "kubernetes.io": {
                "namespace": namespace,
                "node": {"name": "node-a", "uid": secrets.token_hex(8)},
                "pod": {"name": pod, "uid": secrets.token_hex(8)},
                "serviceaccount": {"name": service_account, "uid": secrets.token_hex(8)},
                "warnafter": int(self.clock().timestamp()) + 60,
            },
            "jti": OMIT,
        }
        claims.update(overrides)
        return claims

    def kubernetes_token(self, *, key: SigningKey | str | None = None, **kwargs: Any) -> str:
        return self.mint(self.kubernetes_claims(**kwargs), key=key)

    # -- misbehaviour --
    def respond(
        self,
        path: str,
        status: int = 200,
        body: bytes | str | Mapping[str, Any] = b"",
        *,
        headers: Mapping[str, str] | None = None,
        content_length: bool = True,
    ) -> None:
        """Serve this instead of the real document at `path` (relative to the issuer URL)."""
        if isinstance(body, Mapping):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self._overrides[self._path + path] = _Override(
            status, body, dict(headers or {}), content_length=content_length
        )

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.respond(path, status, headers={"Location": location})

    def hang(self, path: str) -> threading.Event:
        """Requests to `path` wait until the returned event is set (or the issuer stops)."""
        event = threading.Event()
        self._overrides[self._path + path] = _Override(hang=event)
        return event

    def restore(self, path: str | None = None) -> None:
        """Serve the real documents again (at `path`, or everywhere)."""
        if path is None:
            self._overrides.clear()
        else:
            self._overrides.pop(self._path + path, None)

    def requests_to(self, path: str) -> int:
        with self._lock:
            return self.requests[self._path + path]

    # -- serving --
    def _document(
        self, path: str
    ) -> tuple[int, bytes, dict[str, str], bool, threading.Event | None]:
        with self._lock:
            self.requests[path] += 1
        override = self._overrides.get(path)
        if override is not None:
            return (
                override.status,
                override.body,
                override.headers,
                override.content_length,
                override.hang,
            )
        json_headers = {"Content-Type": "application/json"}
        if path == self._path + DISCOVERY_PATH:
            doc = {
                "issuer": self.url,
                "jwks_uri": self.jwks_uri,
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                **self.discovery_overrides,
            }
            return 200, json.dumps(doc).encode(), json_headers, True, None
        if path == self._path + JWKS_PATH:
            return 200, json.dumps(self.jwks()).encode(), json_headers, True, None
        return 404, b"{}", json_headers, True, None


def _handler_for(idp: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers, content_length, hang = idp._document(self.path)
            if hang is not None:
                hang.wait(timeout=30)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if content_length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # The client may give up reading, e.g. past its size cap.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
