"""The built-in rule set: Tether's own formats and the common provider formats.

Formats with a checksum (Tether's `tth_` tokens, GitHub's and npm's) are confirmed by
it: a string of the right shape whose checksum fails is not reported, which removes the
look-alikes (test fixtures, truncated copies) without a network call. JWTs are confirmed
by their header, and a generic assignment by its value's entropy and shape.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping

from tether._internal.tokens import is_well_formed
from tether.scan._model import Rule
from tether.targets import TARGET_KINDS

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_INDEX = {c: i for i, c in enumerate(_BASE62)}


def _base62_value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + _BASE62_INDEX[char]
    return value


def _crc32_base62(secret: str, prefix_len: int) -> bool:
    """GitHub's and npm's scheme: the last 6 base62 characters are the CRC32 of the
    random part between the prefix and them."""
    body, check = secret[prefix_len:-6], secret[-6:]
    if not body or any(c not in _BASE62_INDEX for c in body + check):
        return False
    return binascii.crc32(body.encode()) == _base62_value(check)


def _jwt_header(secret: str) -> dict[str, object] | None:
    head = secret.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return None
    return decoded if isinstance(decoded, dict) and isinstance(decoded.get("alg"), str) else None


_TETHER_KID = re.compile(r"tk_[0-9a-f]{16}")


def _is_tether_jwt(secret: str) -> bool:
    header = _jwt_header(secret)
    kid = header.get("kid") if header else None
    return isinstance(kid, str) and _TETHER_KID.fullmatch(kid) is not None


def _is_other_jwt(secret: str) -> bool:
    return _jwt_header(secret) is not None and not _is_tether_jwt(secret)


# Values that are not a secret whatever their entropy: UUIDs (ids next to the word
# token) and the placeholders of templates and documentation.
_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_PLACEHOLDER = re.compile(
    r"(?i)(?:x{6,}|\*{6,}|changeme|example|placeholder|redacted|dummy|sample)"
)


def _generic_value(secret: str) -> bool:
    return not (_UUID.fullmatch(secret) or _PLACEHOLDER.search(secret))


VALIDATORS: Mapping[str, Callable[[str], bool]] = {
    "tether-crc32": is_well_formed,
    "github-crc32": lambda s: _crc32_base62(s, 4),
    "npm-crc32": lambda s: _crc32_base62(s, 4),
    "tether-jwt": _is_tether_jwt,
    "other-jwt": _is_other_jwt,
    "generic-value": _generic_value,
}

_B62 = "[0-9A-Za-z]"
#: Connection URLs: those of every registered target kind (whose passwords Tether mints,
#: so a leaked one is matched to its lease), and common ones Tether does not manage.
_URL_SCHEMES = "|".join(
    re.escape(scheme)
    for scheme in sorted(
        {s.removesuffix("://") for kind in TARGET_KINDS.values() for s in kind.dsn_schemes}
        | {"mysql", "mariadb", "mongodb", "mongodb+srv", "amqp", "amqps", "mssql", "sqlserver"}
    )
)
_JWT = r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{16,}"
_GENERIC_KEYS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|apikey|client[_-]?secret"
    r"|access[_-]?key|auth[_-]?key|private[_-]?key"
)


#: A part of a dotted name in code: snake_case, CONSTANT_CASE, camelCase or CamelCase
#: (digits only at the end). A random value's parts mix case and digits.
_CODE_NAME = (
    r"(?:[a-z_][a-z0-9_]*|[A-Z_][A-Z0-9_]*|[a-z]+(?:[A-Z][a-z]+)+[0-9]*|(?:[A-Z][a-z]+)+[0-9]*)"
)

#: A generic assignment that is not a secret: the key names a hash or an id (the value
#: is a digest or an identifier, not a credential), or the value is unquoted code: a
#: dotted name (settings.SECRET_KEY) or an identifier with no digit (get_password).
_GENERIC_NOT_SECRET = (
    r"(?i)^[a-z0-9_.-]*(?:hash|sha\d*|md5|digest|checksum|fingerprint|uuid|_id|nonce|etag)\b",
    rf"^[^=:]*(?:=|:)[ \t]*{_CODE_NAME}(?:\.{_CODE_NAME})+(?:[\s;,\\]|$)",
    r"^[^=:]*(?:=|:)[ \t]*[A-Za-z_]+(?:[\s;,\\]|$)",
)


def _rule(
    rule_id: str, description: str, regex: str, *, provider: str | None = None, **kw: object
) -> Rule:
    return Rule(id=rule_id, description=description, regex=regex, provider=provider, **kw)  # type: ignore[arg-type]


DEFAULT_RULES: tuple[Rule, ...] = (
    _rule(
        "tether-token",
        "Tether token (task, opaque access, API or join token)",
        rf"\btth_{_B62}{{49}}\b",
        provider="tether",
        validator="tether-crc32",
        tags=("tether",),
    ),
    _rule(
        "tether-jwt",
        "Tether-signed JWT access token",
        _JWT,
        provider="tether",
        validator="tether-jwt",
        tags=("tether", "jwt"),
    ),
    _rule(
        "github-token",
        "GitHub token (personal access, OAuth, app user, app server or refresh)",
        rf"\bgh[pousr]_{_B62}{{36}}\b",
        provider="github",
        validator="github-crc32",
    ),
    _rule(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token",
        rf"\bgithub_pat_{_B62}{{22}}_{_B62}{{59}}\b",
        provider="github",
    ),
    _rule(
        "gitlab-pat",
        "GitLab personal access token",
        # The end is "not a token character", not `\b`: a token may end with "-".
        r"\b(glpat-[0-9A-Za-z_-]{20}(?:[0-9A-Za-z_-]{7,280})?(?:\.[0-9a-z]{2}\.[0-9a-z]{9})?)"
        r"(?:[^0-9A-Za-z_.-]|$)",
        secret_group=1,
        provider="gitlab",
    ),
    _rule(
        "aws-access-key-id",
        "AWS access key id",
        r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        secret_group=1,
        provider="aws",
        allow_regexes=(r"EXAMPLE$",),
    ),
    _rule(
        "aws-secret-access-key",
        "AWS secret access key",
        r"(?i)aws_?(?:secret)_?(?:access)?_?key(?:_id)?[\"']?[ \t]{0,5}(?:=|:|:=|=>)[ \t]{0,5}"
        r"[\"']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
        secret_group=1,
        keywords=("aws",),
        entropy=3.5,
        provider="aws",
        allow_regexes=(r"EXAMPLEKEY$",),
    ),
    _rule(
        "slack-token",
        "Slack token (bot, user, app, refresh or legacy)",
        r"\bxox[baprse]-(?:[0-9]{8,14}-){1,3}[0-9A-Za-z]{16,64}\b",
        provider="slack",
    ),
    _rule(
        "stripe-key",
        "Stripe secret or restricted key",
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,99}\b",
        provider="stripe",
    ),
    _rule(
        "npm-token",
        "npm access token",
        rf"\bnpm_{_B62}{{36}}\b",
        provider="npm",
        validator="npm-crc32",
    ),
    _rule(
        "pypi-token",
        "PyPI upload token",
        r"\bpypi-AgEIcHlwaS5vcmc[0-9A-Za-z_-]{50,1000}",
        provider="pypi",
    ),
    _rule(
        "openai-key",
        "OpenAI API key",
        r"\b(sk-(?:(?:proj|svcacct|admin)-)?[0-9A-Za-z_-]{20,74}T3BlbkFJ[0-9A-Za-z_-]{20,74})"
        r"(?:[^0-9A-Za-z_-]|$)",
        secret_group=1,
        provider="openai",
    ),
    _rule(
        "google-api-key",
        "Google API key",
        r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        secret_group=1,
        provider="google",
    ),
    _rule(
        "private-key",
        "Private key (PEM or OpenSSH)",
        r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]{40,}?"
        r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
        keywords=("private key",),
        multiline=True,
    ),
    _rule(
        "jwt",
        "JSON Web Token",
        _JWT,
        validator="other-jwt",
        tags=("jwt",),
    ),
    _rule(
        "database-url",
        "Connection URL with a password",
        rf"(?i)\b(?:{_URL_SCHEMES})://[^\s:/@\"'`]{{0,256}}:([^\s:/@\"'`]{{3,256}})@[^\s/\"'`]{{1,256}}",
        secret_group=1,
        allow_regexes=(r"^(?:password|pass|pwd|secret|\*+|x+|\$\{[^}]*\}|\{[^}]*\}|<[^>]*>)$",),
    ),
    _rule(
        "generic-secret",
        "Password, secret or key assigned in code or configuration",
        rf"(?i)(?:{_GENERIC_KEYS})[a-z0-9_.-]{{0,20}}[\"']?[ \t]{{0,5}}(?:=|:|:=|=>)[ \t]{{0,5}}"
        r"[\"']?([^\s\"'`;,()\[\]{}<>$\\&#]{8,200})(?:[\s\"'`;,\\&#]|$)",
        secret_group=1,
        entropy=3.5,
        validator="generic-value",
        allow_match_regexes=_GENERIC_NOT_SECRET,
        tags=("generic",),
    ),
)

RULE_IDS: tuple[str, ...] = tuple(rule.id for rule in DEFAULT_RULES)


def default_rules() -> tuple[Rule, ...]:
    return DEFAULT_RULES
