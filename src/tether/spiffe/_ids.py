"""SPIFFE IDs and trust domain names, parsed strictly per the SPIFFE ID specification
(standards/SPIFFE-ID.md §2): `spiffe://<trust domain><path>`.

The specification allows no normalization, so nothing is normalized: an ID with an
uppercase scheme, a port, a query, percent-encoding or a `..` segment is refused rather
than rewritten, and the message says which rule it breaks. Two IDs are the same exactly
when their strings are.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.spiffe.errors import InvalidSpiffeId

SCHEME_PREFIX = "spiffe://"
#: SPIFFE-ID.md §2.3: implementations SHOULD NOT generate longer IDs; none is accepted.
MAX_ID_BYTES = 2048
#: SPIFFE-ID.md §2.3: RFC 3986 caps a host at 255 characters.
MAX_TRUST_DOMAIN_BYTES = 255

_TRUST_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    #: "" (the trust domain itself) or "/seg/seg".
    path: str

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    @property
    def is_trust_domain(self) -> bool:
        """No path: the ID of the trust domain (its CA), never a workload's."""
        return not self.path


def _trust_domain_char_error(name: str) -> str:
    """The rule the first bad character of a trust domain name breaks."""
    for char in name:
        if char in _TRUST_DOMAIN_CHARS:
            continue
        if char == "@":
            return "the trust domain must not have a userinfo part (user@)"
        if char == ":":
            return "the trust domain must not have a port"
        if char == "%":
            return "the trust domain must not be percent-encoded"
        if char == "?":
            return "a SPIFFE ID must not have a query"
        if char == "#":
            return "a SPIFFE ID must not have a fragment"
        if "A" <= char <= "Z":
            return "the trust domain must be lowercase"
        return (
            "the trust domain may contain only lowercase letters, digits, dots, dashes and "
            f"underscores (found {char!r})"
        )
    raise AssertionError("no bad character")  # pragma: no cover - called only on a bad name


def _check_trust_domain(name: str) -> None:
    if not name:
        raise InvalidSpiffeId("the trust domain is missing")
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    if not set(name) <= _TRUST_DOMAIN_CHARS:
        raise InvalidSpiffeId(_trust_domain_char_error(name))


def _check_path(path: str) -> None:
    if not path:
        return
    if not path.startswith("/"):
        raise InvalidSpiffeId("the path must start with /")
    segments = path[1:].split("/")
    for number, segment in enumerate(segments, 1):
        if not segment:
            if number == len(segments):
                raise InvalidSpiffeId("the path must not end with /")
            raise InvalidSpiffeId("the path must not contain empty segments (//)")
        if segment in (".", ".."):
            raise InvalidSpiffeId("the path must not contain . or .. segments")
        for char in segment:
            if char in _PATH_CHARS:
                continue
            if char == "%":
                raise InvalidSpiffeId("the path must not be percent-encoded")
            if char == "?":
                raise InvalidSpiffeId("a SPIFFE ID must not have a query")
            if char == "#":
                raise InvalidSpiffeId("a SPIFFE ID must not have a fragment")
            raise InvalidSpiffeId(
                "path segments may contain only letters, digits, dots, dashes and "
                f"underscores (found {char!r})"
            )


def parse_spiffe_id(value: str) -> SpiffeId:
    """The SPIFFE ID `value` names; InvalidSpiffeId saying what is wrong otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidSpiffeId("a SPIFFE ID must be a non-empty string")
    if len(value.encode()) > MAX_ID_BYTES:
        raise InvalidSpiffeId(f"a SPIFFE ID must not be longer than {MAX_ID_BYTES} bytes")
    if not value.startswith(SCHEME_PREFIX):
        raise InvalidSpiffeId("a SPIFFE ID must start with spiffe:// (lowercase)")
    rest = value[len(SCHEME_PREFIX) :]
    slash = rest.find("/")
    trust_domain, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    _check_trust_domain(trust_domain)
    _check_path(path)
    return SpiffeId(trust_domain, path)


def parse_trust_domain(value: str) -> str:
    """A trust domain name (`example.org`), checked as the authority of a SPIFFE ID."""
    if not isinstance(value, str):
        raise InvalidSpiffeId("a trust domain name must be a string")
    if "://" in value:
        raise InvalidSpiffeId(
            "give the trust domain name alone (example.org), not a URI or SPIFFE ID"
        )
    if "/" in value:
        raise InvalidSpiffeId("a trust domain name must not contain /")
    _check_trust_domain(value)
    return value


def default_spiffe_id(trust_domain: str, environment: str, identity_id: str) -> SpiffeId:
    """`spiffe://<trust domain>/<environment>/<id>`: an identity's SPIFFE ID when the
    estate gives none. An id or environment that cannot be a path segment (`:`, `@`) is
    refused, not escaped: the specification allows no encoding, so the estate must say
    `spiffe_id:` explicitly."""
    parse_trust_domain(trust_domain)
    for what, segment in (("environment", environment), ("identity id", identity_id)):
        try:
            _check_path("/" + segment)
        except InvalidSpiffeId as exc:
            raise InvalidSpiffeId(
                f"the {what} {segment!r} cannot be a SPIFFE ID path segment ({exc}); "
                "give the identity a spiffe_id"
            ) from None
    return parse_spiffe_id(f"{SCHEME_PREFIX}{trust_domain}/{environment}/{identity_id}")
