"""A generated corpus for the secret scanner: realistic noise, planted fakes of every rule
with their exact locations, and decoys a careless scanner reports.

    planted = build_corpus(root, size_mb=50, seed=0)

`Planted.file` is the path relative to `root` with `/` separators, as the scanner shows a
file of a scanned directory minus the directory's own prefix (`display_relative` strips
it); an archive member is `archives/x.tar.gz!member/path`. `Planted.secret` is the
secret as the rule reports it: the whole token for token rules, the password of a
database URL, the value of a generic assignment, and for a private key the exact text of
the block from `-----BEGIN` to the `-----` closing its END line (in a JSON string the
line breaks are the two characters `\\n`, in a YAML block they carry the indentation).

Everything but the run-time key material (private keys, ES256 and RS256 signatures) is
determined by `seed`. Noise is written with bulk byte and string operations: 50 MB is a
few seconds of one core.
"""

from __future__ import annotations

import base64
import io
import math
import os
import random
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

RULES: tuple[str, ...] = (
    "tether-token",
    "tether-jwt",
    "github-token",
    "github-fine-grained-pat",
    "gitlab-pat",
    "aws-access-key-id",
    "aws-secret-access-key",
    "slack-token",
    "stripe-key",
    "npm-token",
    "pypi-token",
    "openai-key",
    "google-api-key",
    "private-key",
    "jwt",
    "database-url",
    "generic-secret",
)

MB = 1 << 20

_DIGITS = "0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_B62 = _DIGITS + _UPPER + _LOWER
_URLSAFE = _B62 + "-_"
_B32 = _UPPER + "234567"
_AWS_SECRET = _B62 + "/+"
_HEX = "0123456789abcdef"
_PASSWORD = _B62 + "-_.!"


@dataclass(frozen=True, slots=True)
class Planted:
    rule: str
    file: str
    line: int
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Corpus:
    planted: list[Planted]
    #: Decoys written, by kind: none of them is a secret.
    decoys: Counter[str]
    files: int
    bytes: int
    seconds: float


def display_relative(name: str, root: Path | str) -> str:
    """A scanner's display name for a file under `root`, relative to it (as `Planted.file`)."""
    prefix = os.path.normpath(str(root)) + os.sep
    rel = name[len(prefix) :] if name.startswith(prefix) else name
    return rel.replace(os.sep, "/")


# -- fakes --


def _b62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_B62[rem])
    return "".join(reversed(digits))


def crc62(body: str) -> str:
    """The 6-character base62 CRC32 that GitHub, npm and Tether tokens end with."""
    return _b62(zlib.crc32(body.encode()), 6)


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Keys:
    """Key material made at run time, on first use: RSA is slow, so a handful is reused.
    Which one a fake uses is drawn from the caller's `rng` whether or not it exists yet,
    so that the rest of a corpus does not depend on what an earlier one made."""

    def __init__(self) -> None:
        self._rsa: dict[int, rsa.RSAPrivateKey] = {}
        self._tether: dict[int, tuple[str, ec.EllipticCurvePrivateKey]] = {}

    def rsa(self, rng: random.Random) -> rsa.RSAPrivateKey:
        slot = rng.randrange(4)
        if slot not in self._rsa:
            self._rsa[slot] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._rsa[slot]

    def tether(self, rng: random.Random) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """A node's signing key and its `kid`: a few nodes, each signing many tokens."""
        slot, kid = rng.randrange(3), "tk_" + _rand(rng, _HEX, 16)
        if slot not in self._tether:
            self._tether[slot] = (kid, ec.generate_private_key(ec.SECP256R1()))
        return self._tether[slot]


_KEYS = _Keys()

_PEM = serialization.Encoding.PEM
_NOENC = serialization.NoEncryption()


def _private_key(rng: random.Random) -> str:
    kind = rng.randrange(8)
    formats = serialization.PrivateFormat
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if kind == 0:
        key, fmt = _KEYS.rsa(rng), formats.TraditionalOpenSSL
    elif kind == 1:
        key, fmt = _KEYS.rsa(rng), formats.PKCS8
    elif kind == 2:
        key, fmt = _KEYS.rsa(rng), formats.OpenSSH
    elif kind == 3:
        key, fmt = ec.generate_private_key(ec.SECP256R1()), formats.TraditionalOpenSSL
    elif kind == 4:
        key, fmt = ec.generate_private_key(ec.SECP384R1()), formats.PKCS8
    elif kind == 5:
        key, fmt = ec.generate_private_key(ec.SECP256R1()), formats.OpenSSH
    elif kind == 6:
        key, fmt = ed25519.Ed25519PrivateKey.generate(), formats.PKCS8
    else:
        key, fmt = ed25519.Ed25519PrivateKey.generate(), formats.OpenSSH
    return key.private_bytes(_PEM, fmt, _NOENC).decode().strip()


def _claims(rng: random.Random, issuer: str) -> dict[str, object]:
    iat = 1_700_000_000 + rng.randrange(40_000_000)
    return {
        "iss": issuer,
        "sub": f"nhi-{rng.randrange(100_000):05d}",
        "aud": rng.choice(["https://api.example.com", "payments", "https://ledger.internal"]),
        "iat": iat,
        "exp": iat + rng.choice([300, 900, 3600]),
        "jti": _rand(rng, _B62, 22),
        "scope": rng.choice(["read", "read list", "write", "admin"]),
    }


def _jwt(rng: random.Random) -> str:
    """Any JWT but Tether's: HS256 sessions, RS256 id tokens of other issuers."""
    claims = _claims(rng, rng.choice(["https://auth.example.com", "https://login.acme.io/"]))
    if rng.random() < 0.6:
        return pyjwt.encode(claims, rng.randbytes(32), algorithm="HS256")
    headers = {"kid": _rand(rng, _URLSAFE, 27)}
    return pyjwt.encode(claims, _KEYS.rsa(rng), algorithm="RS256", headers=headers)


def _tether_jwt(rng: random.Random) -> str:
    kid, key = _KEYS.tether(rng)
    claims = _claims(rng, "https://tether.internal")
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})


def _checked(prefix: str, rng: random.Random, body_len: int) -> str:
    body = _rand(rng, _B62, body_len)
    return prefix + body + crc62(body)


def _entropy(value: str) -> float:
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in Counter(value).values())


def _generic_value(rng: random.Random) -> str:
    while True:
        value = _rand(rng, _PASSWORD, rng.randrange(14, 33))
        # A margin over the rule's 3.5 bits: the truth list holds secrets, not borderline.
        if _entropy(value) >= 3.8 and value[0] not in "-_.!":
            return value


def fake(rule_id: str, rng: random.Random) -> str:
    """A fake secret of `rule_id`, as that rule reports it (for database-url, the
    password; for aws-secret-access-key and generic-secret, the value)."""
    if rule_id == "tether-token":
        return _checked("tth_", rng, 43)
    if rule_id == "github-token":
        return _checked("gh" + rng.choice("pousr") + "_", rng, 30)
    if rule_id == "npm-token":
        return _checked("npm_", rng, 30)
    if rule_id == "github-fine-grained-pat":
        return f"github_pat_{_rand(rng, _B62, 22)}_{_rand(rng, _B62, 59)}"
    if rule_id == "gitlab-pat":
        # Real ones never end in `-` or `_`: a word boundary would cut them there.
        return "glpat-" + _rand(rng, _URLSAFE, 19) + _rand(rng, _B62, 1)
    if rule_id == "aws-access-key-id":
        return rng.choice(["AKIA", "AKIA", "ASIA"]) + _rand(rng, _B32, 16)
    if rule_id == "aws-secret-access-key":
        return _rand(rng, _AWS_SECRET, 40)
    if rule_id == "slack-token":
        kind = rng.choice("bbbpars")
        a, b = rng.randrange(10**9, 10**12), rng.randrange(10**9, 10**13)
        return f"xox{kind}-{a}-{b}-{_rand(rng, _B62, rng.choice([24, 24, 32]))}"
    if rule_id == "stripe-key":
        kind = rng.choice(["sk_live_", "sk_live_", "sk_test_", "rk_live_"])
        return kind + _rand(rng, _B62, rng.choice([24, 34, 99]))
    if rule_id == "pypi-token":
        return "pypi-AgEIcHlwaS5vcmc" + _b64url(rng.randbytes(rng.randrange(60, 140)))
    if rule_id == "openai-key":
        if rng.random() < 0.4:
            return f"sk-{_rand(rng, _B62, 20)}T3BlbkFJ{_rand(rng, _B62, 20)}"
        kind = rng.choice(["proj", "proj", "svcacct"])
        # The random part never ends in `-` or `_` (as above).
        tail = _rand(rng, _URLSAFE, 73) + _rand(rng, _B62, 1)
        return f"sk-{kind}-{_rand(rng, _URLSAFE, 74)}T3BlbkFJ{tail}"
    if rule_id == "google-api-key":
        return "AIza" + _rand(rng, _URLSAFE, 34) + _rand(rng, _B62, 1)
    if rule_id == "private-key":
        return _private_key(rng)
    if rule_id == "jwt":
        return _jwt(rng)
    if rule_id == "tether-jwt":
        return _tether_jwt(rng)
    if rule_id == "database-url":
        return _rand(rng, _B62, 1) + _rand(rng, _B62 + "-_.~", rng.randrange(15, 40))
    if rule_id == "generic-secret":
        return _generic_value(rng)
    raise ValueError(f"no fake for rule {rule_id!r}")


def bad_checksum(token: str) -> str:
    """The same token with a wrong checksum: a look-alike a validator must refuse."""
    last = token[-1]
    return token[:-1] + _B62[(_B62.index(last) + 1 + len(token) % 7) % 62]


# -- contexts: where a secret sits, by the kind of file it is written in --

#: A context: (file category, template). The template's `{s}` is the secret (for
#: database-url, `{url}` a URL holding it); it ends with a newline.
Context = tuple[str, str]

_USERS = ["app", "svc_orders", "reporting", "admin", "etl", "billing_rw", "grafana", "api"]
#: scheme: (port, hosts, paths, queries)
_SCHEMES: dict[str, tuple[int, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "postgres": (
        5432,
        ("db.internal", "pg-primary.prod.svc.cluster.local", "10.20.3.14"),
        ("/app", "/orders", "/ledger"),
        ("", "?sslmode=require", "?sslmode=verify-full&connect_timeout=10"),
    ),
    "mysql": (
        3306,
        ("mysql-0.mysql", "orders-db.c9xk2lqz.eu-west-1.rds.amazonaws.com"),
        ("/app", "/billing"),
        ("", "?charset=utf8mb4", "?ssl-mode=REQUIRED"),
    ),
    "mongodb": (
        27017,
        ("mongo-0.mongo.prod", "10.20.7.2"),
        ("/app", "/events"),
        ("", "?authSource=admin", "?authSource=admin&retryWrites=true"),
    ),
    "redis": (6379, ("cache.internal", "redis-master.prod", "10.20.9.9"), ("/0", "/1", ""), ("",)),
    "amqp": (5672, ("rabbitmq.internal", "mq-0.mq"), ("/%2F", "/prod"), ("", "?heartbeat=30")),
}
_FAMILY = {
    "postgres": "postgres",
    "postgresql": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
    "mongodb": "mongodb",
    "redis": "redis",
    "rediss": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
}


def _db_url(password: str, rng: random.Random) -> str:
    scheme = rng.choice([*_FAMILY, "postgresql", "postgres", "mongodb+srv"])
    user = rng.choice(_USERS)
    if scheme == "mongodb+srv":
        host = f"cluster0.{_rand(rng, _LOWER, 5)}.mongodb.net"
        return f"{scheme}://{user}:{password}@{host}/app?retryWrites=true&w=majority"
    port, hosts, paths, queries = _SCHEMES[_FAMILY[scheme]]
    if scheme == "rediss" or scheme == "amqps":
        port += 1
    if scheme.startswith("redis") and rng.random() < 0.3:
        # A password alone (`requirepass`): the user part is empty or "default".
        user = "" if rng.random() < 0.5 else "default"
    host, path, query = rng.choice(hosts), rng.choice(paths), rng.choice(queries)
    return f"{scheme}://{user}:{password}@{host}:{port}{path}{query}"


CONTEXTS: dict[str, list[Context]] = {
    "tether-token": [
        ("env", "TETHER_TOKEN={s}\n"),
        ("yaml", "  tether_token: {s}\n"),
        ("json", '  "tether_token": "{s}",\n'),
        ("py", '    client = TetherClient("https://tether.internal:8200", token="{s}")\n'),
        ("js", "    headers: {{ Authorization: `Bearer {s}` }},\n"),
        ("go", '\treq.Header.Set("Authorization", "Bearer {s}")\n'),
        ("applog", "DEBUG http.client send: b'Authorization: Bearer {s}\\r\\n'\n"),
        ("access", '"POST /v1/leases/renew?token={s} HTTP/1.1" 200 312\n'),
        ("docker", "ENV TETHER_TOKEN={s}\n"),
        ("shell", "curl -sf -H 'Authorization: Bearer {s}' https://tether.internal/v1/tasks\n"),
    ],
    "tether-jwt": [
        ("applog", "DEBUG upstream request headers={{'authorization': 'Bearer {s}'}}\n"),
        ("access", '"GET /v1/ledger/entries HTTP/1.1" 200 2211 "-" "curl/8.5" auth="Bearer {s}"\n'),
        ("json", '  "access_token": "{s}",\n'),
        ("env", "LEDGER_ACCESS_TOKEN={s}\n"),
        ("py", '    TOKEN = "{s}"\n'),
        ("yaml", "  bearer: {s}\n"),
        ("shell", "curl -H 'Authorization: Bearer {s}' https://ledger.internal/v1/entries\n"),
    ],
    "github-token": [
        ("env", "GITHUB_TOKEN={s}\n"),
        ("yaml", "  github_token: {s}\n"),
        ("json", '  "token": "{s}",\n'),
        ("py", '    gh = Github("{s}")\n'),
        ("js", "const octokit = new Octokit({{ auth: '{s}' }});\n"),
        ("go", '\tts := oauth2.StaticTokenSource(&oauth2.Token{{AccessToken: "{s}"}})\n'),
        ("ini", '[url "https://x-access-token:{s}@github.com/"]\n'),
        ("applog", "INFO  git: cloning https://{s}@github.com/acme/infra.git into /tmp/w\n"),
        ("docker", "ARG GH_TOKEN={s}\n"),
        ("tf", '  token = "{s}"\n'),
        ("shell", "export GH_TOKEN={s}\n"),
    ],
    "github-fine-grained-pat": [
        ("env", "GH_PAT={s}\n"),
        ("yaml", "  github_pat: {s}\n"),
        ("json", '  "pat": "{s}",\n'),
        ("py", '    HEADERS = {{"Authorization": "token {s}"}}\n'),
        ("shell", "git remote set-url origin https://bot:{s}@github.com/acme/app.git\n"),
        ("java", '    private static final String GITHUB_PAT = "{s}";\n'),
    ],
    "gitlab-pat": [
        ("env", "GITLAB_TOKEN={s}\n"),
        ("yaml", "  gitlab_token: {s}\n"),
        ("py", '    gl = gitlab.Gitlab("https://gitlab.acme.io", private_token="{s}")\n'),
        ("shell", "curl --header 'PRIVATE-TOKEN: {s}' https://gitlab.acme.io/api/v4/projects\n"),
        ("applog", "DEBUG gitlab request header PRIVATE-TOKEN={s}\n"),
        ("json", '  "gitlab": "{s}",\n'),
    ],
    "aws-access-key-id": [
        ("ini", "aws_access_key_id = {s}\n"),
        ("env", "AWS_ACCESS_KEY_ID={s}\n"),
        ("json", '  "AccessKeyId": "{s}",\n'),
        ("yaml", "  access_key_id: {s}\n"),
        ("py", '    s3 = boto3.client("s3", aws_access_key_id="{s}")\n'),
        ("tf", '  access_key = "{s}"\n'),
        ("applog", "INFO  botocore.credentials: loaded credentials AccessKeyId={s}\n"),
        ("js", "  accessKeyId: '{s}',\n"),
    ],
    "aws-secret-access-key": [
        ("ini", "aws_secret_access_key = {s}\n"),
        ("env", "AWS_SECRET_ACCESS_KEY={s}\n"),
        ("yaml", "  aws_secret_access_key: {s}\n"),
        ("json", '  "aws_secret_access_key": "{s}",\n'),
        ("py", '        aws_secret_access_key="{s}",\n'),
        ("shell", "export AWS_SECRET_ACCESS_KEY={s}\n"),
        ("docker", "ENV AWS_SECRET_ACCESS_KEY={s}\n"),
    ],
    "slack-token": [
        ("env", "SLACK_BOT_TOKEN={s}\n"),
        ("yaml", "  slack_token: {s}\n"),
        ("py", '    client = WebClient(token="{s}")\n'),
        ("js", "const web = new WebClient('{s}');\n"),
        ("applog", "WARN  notifier: slack post failed for {s}: ratelimited\n"),
        ("json", '  "bot": "{s}",\n'),
    ],
    "stripe-key": [
        ("env", "STRIPE_SECRET_KEY={s}\n"),
        ("py", '    stripe.api_key = "{s}"\n'),
        ("js", "const stripe = require('stripe')('{s}');\n"),
        ("go", '\tstripe.Key = "{s}"\n'),
        ("java", '        Stripe.apiKey = "{s}";\n'),
        ("yaml", "  stripe: {s}\n"),
        ("applog", "ERROR payments: charge failed key={s} code=card_declined\n"),
    ],
    "npm-token": [
        ("npmrc", "//registry.npmjs.org/:_authToken={s}\n"),
        ("env", "NPM_TOKEN={s}\n"),
        ("yaml", "          NODE_AUTH_TOKEN: {s}\n"),
        ("docker", 'RUN echo "//registry.npmjs.org/:_authToken={s}" > /root/.npmrc\n'),
        ("json", '  "npm": "{s}",\n'),
    ],
    "pypi-token": [
        ("ini", "password = {s}\n"),
        ("env", "TWINE_PASSWORD={s}\n"),
        ("yaml", "          password: {s}\n"),
        ("docker", "ENV UV_PUBLISH_TOKEN={s}\n"),
        ("shell", "twine upload -u __token__ -p {s} dist/*\n"),
    ],
    "openai-key": [
        ("env", "OPENAI_API_KEY={s}\n"),
        ("py", '    client = OpenAI(api_key="{s}")\n'),
        ("js", 'const openai = new OpenAI({{ apiKey: "{s}" }});\n'),
        ("yaml", "  openai_api_key: {s}\n"),
        ("json", '  "openai": "{s}",\n'),
        ("applog", "DEBUG httpx: Authorization: Bearer {s}\n"),
    ],
    "google-api-key": [
        ("env", "GOOGLE_API_KEY={s}\n"),
        ("js", '  apiKey: "{s}",\n'),
        ("access", '"GET /maps/api/geocode/json?address=Main+St&key={s} HTTP/1.1" 200 1180\n'),
        ("yaml", "  maps_key: {s}\n"),
        ("json", '  "google": "{s}",\n'),
        ("java", '    private static final String MAPS = "{s}";\n'),
        ("go", '\tclient, _ := maps.NewClient(maps.WithAPIKey("{s}"))\n'),
    ],
    "jwt": [
        ("applog", "DEBUG auth middleware: Authorization: Bearer {s}\n"),
        ("access", '"GET /sso/callback?id_token={s} HTTP/1.1" 302 0\n'),
        ("access", '"GET /account HTTP/1.1" 200 5120 "-" "Mozilla/5.0" cookie="session={s}"\n'),
        ("json", '  "id_token": "{s}",\n'),
        ("env", "SERVICE_JWT={s}\n"),
        ("py", '    SESSION = "{s}"\n'),
        ("yaml", "  jwt: {s}\n"),
    ],
    "database-url": [
        ("env", "DATABASE_URL={url}\n"),
        ("yaml", "  url: {url}\n"),
        ("json", '  "dsn": "{url}",\n'),
        ("py", '    engine = create_engine("{url}")\n'),
        ("js", "const pool = new Pool({{ connectionString: '{url}' }});\n"),
        ("go", '\tdb, err := sql.Open(driver, "{url}")\n'),
        ("tf", '  connection_string = "{url}"\n'),
        ("applog", "INFO  db: connecting to {url} (attempt 1)\n"),
        ("docker", "ENV DATABASE_URL={url}\n"),
        ("ini", "sqlalchemy.url = {url}\n"),
    ],
    "generic-secret": [
        ("env", "DB_PASSWORD={s}\n"),
        ("env", "CLIENT_SECRET={s}\n"),
        ("env", "API_KEY={s}\n"),
        ("yaml", "  password: {s}\n"),
        ("yaml", '  client_secret: "{s}"\n'),
        ("json", '  "password": "{s}",\n'),
        ("json", '  "api_key": "{s}",\n'),
        ("py", '    password = "{s}"\n'),
        ("py", "SECRET_KEY = '{s}'\n"),
        ("js", 'const dbPassword = "{s}";\n'),
        ("go", '\tpassword := "{s}"\n'),
        ("java", '    private static final String PASSWORD = "{s}";\n'),
        ("tf", '  password = "{s}"\n'),
        ("ini", "passwd = {s}\n"),
        ("ini", "pwd={s}\n"),
        ("applog", "DEBUG ldap bind dn=cn=svc,dc=acme password={s}\n"),
        ("docker", "ENV AUTH_TOKEN={s}\n"),
        ("shell", "mysql -u root --password={s} -h 10.0.0.12\n"),
    ],
}

#: Private keys are blocks, by how a file embeds them: (category, before, after, escaped).
_KEY_HOMES: list[tuple[str, str, str, bool]] = [
    ("keyfile", "", "\n", False),
    ("keyfile", "", "\n", False),
    ("yaml", "  tls.key: |\n    ", "\n", False),
    ("json", '  "private_key": "', '\\n",\n', True),
    ("tf", "  private_key = <<EOT\n", "\nEOT\n", False),
    ("py", 'DEPLOY_KEY = """', '"""\n', False),
    ("env", 'SSH_PRIVATE_KEY="', '"\n', False),
]


def _key_snippet(secret_block: str, rng: random.Random) -> tuple[str, str, str]:
    """(category, text, the secret as it appears in the text)."""
    category, before, after, escaped = rng.choice(_KEY_HOMES)
    if escaped:
        shown = secret_block.replace("\n", "\\n")
    elif before.endswith("    "):
        shown = secret_block.replace("\n", "\n    ")
    else:
        shown = secret_block
    return category, before + shown + after, shown


# -- decoys: look like secrets to a careless scanner; none is one --


def _uuid(rng: random.Random) -> str:
    return _uuid_of(rng.randbytes(16).hex())


def _uuid_of(h: str) -> str:
    """A version 4 UUID from 32 random hex digits."""
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _decoys(rng: random.Random) -> list[tuple[str, str, str]]:
    """(kind, category, text) of one round of decoys."""
    gh, npm, tth = (
        fake("github-token", rng),
        fake("npm-token", rng),
        fake("tether-token", rng),
    )
    uuid, sha1, sha256 = _uuid(rng), rng.randbytes(20).hex(), rng.randbytes(32).hex()
    ex_key = "AKIA" + _rand(rng, _B32, 9) + "EXAMPLE"
    return [
        ("bad-checksum", "env", f"GITHUB_TOKEN={bad_checksum(gh)}\n"),
        ("bad-checksum", "yaml", f"  github_token: {bad_checksum(fake('github-token', rng))}\n"),
        ("bad-checksum", "npmrc", f"//registry.npmjs.org/:_authToken={bad_checksum(npm)}\n"),
        ("bad-checksum", "env", f"TETHER_TOKEN={bad_checksum(tth)}\n"),
        (
            "bad-checksum",
            "applog",
            f"WARN  auth: refused Bearer {bad_checksum(fake('tether-token', rng))}"
            " (checksum mismatch)\n",
        ),
        ("placeholder", "py", '    password = os.environ["DB_PASSWORD"]\n'),
        ("placeholder", "py", '    api_key = os.getenv("PAYMENTS_API_KEY")\n'),
        ("placeholder", "yaml", "  password: ${DB_PASSWORD}\n"),
        ("placeholder", "ini", "password=<your-password>\n"),
        ("placeholder", "yaml", "  secret: changeme\n"),
        ("placeholder", "py", '    token = "xxxxxxxxxxxxxxxx"\n'),
        ("placeholder", "js", "const password = process.env.DB_PASSWORD;\n"),
        ("placeholder", "go", '\tpassword := os.Getenv("DB_PASSWORD")\n'),
        ("placeholder", "env", "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY}\n"),
        ("placeholder", "json", '  "client_secret": "<client-secret>",\n'),
        ("placeholder", "env", "DATABASE_URL=postgres://app:${DB_PASSWORD}@db.internal:5432/app\n"),
        ("placeholder", "yaml", '  password: "********"\n'),
        ("low-entropy", "ini", "password = password123\n"),
        ("low-entropy", "yaml", "  secret: aaaaaaaabbbbbbbb\n"),
        ("low-entropy", "env", "API_KEY=1111111111111111\n"),
        ("low-entropy", "py", '    password = "testtesttest"\n'),
        ("uuid-or-hash", "yaml", f"  token_id: {uuid}\n"),
        ("uuid-or-hash", "json", f'  "token_sha256": "{sha256}",\n'),
        ("uuid-or-hash", "py", f'    cache_key = "{sha1}"\n'),
        ("uuid-or-hash", "applog", f"INFO  api: rotated secret version={_uuid(rng)} ok\n"),
        ("uuid-or-hash", "env", f"API_KEY_ID={_uuid(rng)}\n"),
        ("uuid-or-hash", "yaml", f"  secret_hash: {rng.randbytes(32).hex()}\n"),
        ("url-without-password", "env", "DATABASE_URL=postgres://app@db.internal:5432/app\n"),
        ("url-without-password", "yaml", "  url: redis://cache.internal:6379/0\n"),
        (
            "url-without-password",
            "json",
            '  "dsn": "mongodb://mongo-0.mongo:27017,mongo-1.mongo:27017/app?replicaSet=rs0",\n',
        ),
        ("url-without-password", "applog", "INFO  amqp: connected to amqp://rabbitmq:5672/%2F\n"),
        # AWS's documentation examples, in their shape: made here, not written down.
        ("aws-example", "ini", f"aws_access_key_id = {ex_key}\n"),
        (
            "aws-example",
            "ini",
            f"aws_secret_access_key = {_rand(rng, _B62 + '/+', 30)}EXAMPLEKEY\n",
        ),
        ("aws-example", "env", f"AWS_ACCESS_KEY_ID={ex_key}\n"),
        ("stripe-publishable", "js", f"const stripe = Stripe('pk_live_{_rand(rng, _B62, 24)}');\n"),
        ("ssh-public-key", "keyfile", _ssh_public(rng)),
    ]


def _ssh_public(rng: random.Random) -> str:
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32)
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} deploy@ci-{rng.randrange(99)}\n"


def _public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_bytes(_PEM, spki).decode()


# -- noise --

_WORDS = [
    "account",
    "order",
    "invoice",
    "ledger",
    "payment",
    "customer",
    "report",
    "batch",
    "queue",
    "worker",
    "cache",
    "shard",
    "region",
    "cluster",
    "node",
    "lease",
    "task",
    "job",
    "event",
    "stream",
    "record",
    "entry",
    "audit",
    "policy",
    "profile",
    "owner",
    "vendor",
    "window",
    "budget",
    "quota",
    "metric",
    "sample",
    "bucket",
    "object",
    "manifest",
    "release",
    "build",
    "deploy",
    "artifact",
    "image",
    "layer",
    "volume",
    "mount",
    "route",
    "handler",
    "request",
    "response",
    "session",
    "client",
    "server",
    "proxy",
    "gateway",
    "upstream",
    "service",
    "module",
    "config",
    "schedule",
    "retry",
    "backoff",
    "timeout",
    "deadline",
    "limit",
    "offset",
    "cursor",
    "page",
    "filter",
    "sort",
    "index",
    "table",
    "column",
    "schema",
    "migration",
    "snapshot",
    "backup",
    "restore",
    "archive",
    "export",
    "import",
]
_VERBS = [
    "get",
    "put",
    "list",
    "load",
    "save",
    "fetch",
    "sync",
    "apply",
    "build",
    "parse",
    "render",
    "check",
    "emit",
    "flush",
]
_MESSAGES = [
    "request completed",
    "cache miss, loading from store",
    "retrying upstream after backoff",
    "connection pool exhausted, waiting",
    "scheduled job started",
    "scheduled job finished",
    "rate limited by upstream",
    "slow query",
    "health check ok",
    "worker heartbeat",
    "batch committed",
    "message acknowledged",
    "shutdown requested",
    "config reloaded",
]
_LEVELS = ["INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"]
_PATHS = [
    "/api/v1/orders",
    "/api/v1/orders/{}",
    "/api/v1/customers/{}/invoices",
    "/healthz",
    "/metrics",
    "/static/app.{}.js",
    "/api/v2/ledger/entries?page={}",
    "/login",
    "/api/v1/reports/{}/export",
]
_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
    "curl/8.5.0",
    "python-httpx/0.27.0",
    "Go-http-client/2.0",
    "kube-probe/1.29",
]


class _Pool:
    """Hex drawn in bulk: request ids, trace ids, hashes without a per-character loop."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._hex = ""
        self._at = 0

    def hex(self, n: int) -> str:
        if self._at + n > len(self._hex):
            self._hex = self._rng.randbytes(1 << 16).hex()
            self._at = 0
        out = self._hex[self._at : self._at + n]
        self._at += n
        return out

    def uuid(self) -> str:
        return _uuid_of(self.hex(32))


def _ident(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}"


def _camel(rng: random.Random) -> str:
    return rng.choice(_WORDS) + rng.choice(_WORDS).capitalize()


def _timestamp(rng: random.Random, base: int) -> str:
    t = time.gmtime(base)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{rng.randrange(1000):03d}Z"


def _app_log(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    base = 1_714_000_000 + rng.randrange(10_000_000)
    out = []
    for i in range(n):
        ts = _timestamp(rng, base + i // 20)
        out.append(
            f"{ts} {rng.choice(_LEVELS)} [{rng.choice(_WORDS)}-{rng.randrange(8)}] "
            f"request_id={pool.uuid()} trace_id={pool.hex(32)} span_id={pool.hex(16)} "
            f'msg="{rng.choice(_MESSAGES)}" {rng.choice(_WORDS)}_id={rng.randrange(10**6)} '
            f"duration_ms={rng.randrange(1, 2500)}"
        )
    return out


def _access_log(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    base = 1_714_000_000 + rng.randrange(10_000_000)
    out = []
    for i in range(n):
        t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(base + i // 30))
        path = rng.choice(_PATHS).format(rng.randrange(10**5))
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        out.append(
            f'{ip} - - [{t}] "{rng.choice(["GET", "GET", "POST", "PUT"])} {path} HTTP/1.1" '
            f"{rng.choice([200, 200, 200, 201, 204, 301, 404, 500])} {rng.randrange(50, 90000)} "
            f'"-" "{rng.choice(_AGENTS)}" rt={rng.random():.3f} req={pool.hex(16)}'
        )
    return out


def _py(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = ['"""' + " ".join(rng.choices(_WORDS, k=8)) + '."""', "", "import logging", ""]
    while len(out) < n:
        name, arg = _ident(rng), rng.choice(_WORDS)
        out += [
            "",
            f"def {rng.choice(_VERBS)}_{name}({arg}, *, limit={rng.randrange(1, 500)}):",
            f'    """{rng.choice(_VERBS).capitalize()} the {arg} of a {rng.choice(_WORDS)}."""',
            f"    items = [{arg}.{rng.choice(_WORDS)} for _ in range(limit)]",
            f'    log.info("{rng.choice(_MESSAGES)}", extra={{"id": "{pool.uuid()}"}})',
            f"    if len(items) > {rng.randrange(10, 999)}:",
            f"        raise ValueError('{rng.choice(_MESSAGES)}')",
            f'    return {{"{rng.choice(_WORDS)}": items, "digest": "{pool.hex(40)}"}}',
        ]
    return out


def _js(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = ["'use strict';", "const path = require('path');", ""]
    while len(out) < n:
        name = _camel(rng)
        out += [
            "",
            f"export async function {rng.choice(_VERBS)}{name.capitalize()}(opts = {{}}) {{",
            f"  const {rng.choice(_WORDS)} = await fetch(`/api/v1/{rng.choice(_WORDS)}s`);",
            f"  if (!opts.{rng.choice(_WORDS)}) throw new Error('{rng.choice(_MESSAGES)}');",
            f"  return {{ id: '{pool.uuid()}', etag: '{pool.hex(32)}', n: {rng.randrange(99)} }};",
            "}",
        ]
    return out


def _go(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = [f"package {rng.choice(_WORDS)}", "", 'import "context"', ""]
    while len(out) < n:
        name = _camel(rng).capitalize()
        out += [
            "",
            f"// {name} {rng.choice(_VERBS)}s the {rng.choice(_WORDS)}.",
            f"func {name}(ctx context.Context, id string) (*{rng.choice(_WORDS).capitalize()},"
            " error) {",
            f'\tif id == "{pool.uuid()}" {{',
            f'\t\treturn nil, fmt.Errorf("{rng.choice(_MESSAGES)}: %s", id)',
            "\t}",
            f'\treturn load(ctx, id, "{pool.hex(40)}", {rng.randrange(1000)})',
            "}",
        ]
    return out


def _java(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = [f"package com.acme.{rng.choice(_WORDS)};", "", "public final class Service {"]
    while len(out) < n - 1:
        name = _camel(rng)
        out += [
            "",
            f"    public {rng.choice(_WORDS).capitalize()} {name}(String id, int limit) {{",
            f'        LOG.info("{rng.choice(_MESSAGES)} {{}}", "{pool.uuid()}");',
            f"        return repository.find{rng.choice(_WORDS).capitalize()}(id, limit);",
            "    }",
        ]
    return [*out, "}"]


def _yaml(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out.append(f"{_ident(rng)}:")
        for _ in range(rng.randrange(3, 9)):
            value = rng.choice(
                [
                    str(rng.randrange(10**5)),
                    rng.choice(_WORDS),
                    f'"{pool.uuid()}"',
                    f"{rng.choice(_WORDS)}-{pool.hex(8)}",
                    "true",
                    f"sha256:{pool.hex(64)}",
                ]
            )
            out.append(f"  {_ident(rng)}: {value}")
    return out


def _json_lines(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = []
    for _ in range(n):
        value = rng.choice(
            [
                str(rng.randrange(10**6)),
                f'"{pool.uuid()}"',
                f'"{rng.choice(_WORDS)} {rng.choice(_WORDS)}"',
                f'"sha512-{base64.b64encode(rng.randbytes(64)).decode()}"',
                "null",
                f'"{pool.hex(40)}"',
            ]
        )
        out.append(f'  "{_ident(rng)}_{rng.randrange(10**4)}": {value},')
    return out


def _env(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = []
    for _ in range(n):
        value = rng.choice(
            [str(rng.randrange(10**4)), rng.choice(_WORDS), "true", pool.uuid(), "eu-west-1"]
        )
        out.append(f"{_ident(rng).upper()}={value}")
    return out


def _ini(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out.append(f"[{rng.choice(_WORDS)}]")
        for _ in range(rng.randrange(2, 7)):
            value = rng.choice([str(rng.randrange(10**4)), rng.choice(_WORDS), pool.hex(12)])
            out.append(f"{_ident(rng)} = {value}")
        out.append("")
    return out


def _tf(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        out += [
            f'resource "aws_{rng.choice(_WORDS)}" "{_ident(rng)}" {{',
            f'  name   = "{rng.choice(_WORDS)}-{pool.hex(6)}"',
            f"  count  = {rng.randrange(1, 9)}",
            f'  tags   = {{ owner = "{rng.choice(_WORDS)}", id = "{pool.uuid()}" }}',
            "}",
            "",
        ]
    return out


def _docker(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = [f"FROM python:3.11-slim@sha256:{pool.hex(64)}", "WORKDIR /app"]
    while len(out) < n:
        out += [
            f"ENV {_ident(rng).upper()}={rng.choice(_WORDS)}",
            f"RUN pip install --no-cache-dir {rng.choice(_WORDS)}=={rng.randrange(9)}.0",
            f"COPY {rng.choice(_WORDS)}/ /app/{rng.choice(_WORDS)}/",
        ]
    return [*out, 'CMD ["python", "-m", "app"]']


def _shell(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    out = ["#!/usr/bin/env bash", "set -euo pipefail"]
    while len(out) < n:
        out += [
            f"echo '{rng.choice(_MESSAGES)}'",
            f"kubectl -n {rng.choice(_WORDS)} rollout restart deploy/{rng.choice(_WORDS)}",
            f"git checkout {pool.hex(40)}",
        ]
    return out


def _npmrc(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    return ["registry=https://registry.npmjs.org/", "save-exact=true", "fund=false"]


def _keyfile(rng: random.Random, pool: _Pool, n: int) -> list[str]:
    return []


_NOISE: dict[str, tuple[Callable[[random.Random, _Pool, int], list[str]], str, int]] = {
    # category: (lines, file name pattern, lines per file)
    "py": (_py, "src/{svc}/{name}.py", 900),
    "js": (_js, "web/{svc}/{name}.js", 900),
    "go": (_go, "go/{svc}/{name}.go", 900),
    "java": (_java, "java/com/acme/{svc}/{Name}.java", 900),
    "yaml": (_yaml, "deploy/{svc}/{name}.yaml", 700),
    "json": (_json_lines, "config/{svc}/{name}.json", 700),
    "env": (_env, "env/{svc}/{name}.env", 120),
    "ini": (_ini, "etc/{svc}/{name}.ini", 300),
    "tf": (_tf, "infra/{svc}/{name}.tf", 600),
    "docker": (_docker, "docker/{svc}/{name}/Dockerfile", 90),
    "shell": (_shell, "scripts/{svc}/{name}.sh", 200),
    "npmrc": (_npmrc, "web/{svc}/{name}/.npmrc", 3),
    "keyfile": (_keyfile, "keys/{svc}/{name}", 0),
    "applog": (_app_log, "logs/{svc}/{name}.log", 12_000),
    "access": (_access_log, "logs/nginx/{name}.access.log", 12_000),
}


def _scrub(text: str) -> str:
    """Random base64 now and then spells a key prefix; noise must hold no secret."""
    for prefix, other in (("AKIA", "AKIB"), ("ASIA", "ASIB"), ("AIza", "AIzb")):
        text = text.replace(prefix, other)
    return text


# -- files --


@dataclass(slots=True)
class _Snippet:
    text: str
    #: (rule, secret) of each secret in `text`; empty for a decoy.
    found: tuple[tuple[str, str], ...] = ()


_SOURCE_SHARE = {
    "py": 0.20,
    "js": 0.14,
    "go": 0.12,
    "java": 0.10,
    "yaml": 0.12,
    "json": 0.12,
    "tf": 0.06,
    "ini": 0.04,
    "env": 0.03,
    "docker": 0.03,
    "shell": 0.04,
    "npmrc": 0.0,
    "keyfile": 0.0,
}


@dataclass(slots=True)
class _Builder:
    root: Path
    rng: random.Random
    pool: _Pool
    planted: list[Planted] = field(default_factory=list)
    decoys: Counter[str] = field(default_factory=Counter)
    queues: dict[str, list[_Snippet]] = field(default_factory=dict)
    files: int = 0
    size: int = 0
    names: set[str] = field(default_factory=set)

    def add(self, category: str, snippet: _Snippet) -> None:
        self.queues.setdefault(category, []).append(snippet)

    def name(self, category: str) -> str:
        pattern = _NOISE[category][1]
        while True:
            svc, word = self.rng.choice(_WORDS), _ident(self.rng)
            name = pattern.format(svc=svc, name=word, Name=_camel(self.rng).capitalize())
            if category == "keyfile":
                name += self.rng.choice([".pem", ".key", "_id_ed25519", "_id_rsa"])
            if name not in self.names:
                self.names.add(name)
                return name

    def assemble(
        self,
        display: str,
        noise: list[str],
        snippets: Sequence[_Snippet],
        *,
        head: str = "",
        tail: str = "",
    ) -> str:
        """The text of a file: `snippets` between noise lines, each secret's line noted."""
        positions = sorted(self.rng.randrange(len(noise) + 1) for _ in snippets)
        parts = [head]
        line = 1 + head.count("\n")
        prev = 0
        for pos, snippet in zip(positions, snippets, strict=True):
            if pos > prev:
                parts.append("\n".join(noise[prev:pos]) + "\n")
                line += pos - prev
                prev = pos
            for rule, secret in snippet.found:
                at = snippet.text.index(secret)
                self.planted.append(
                    Planted(rule, display, line + snippet.text.count("\n", 0, at), secret)
                )
            parts.append(snippet.text)
            line += snippet.text.count("\n")
        if prev < len(noise):
            parts.append("\n".join(noise[prev:]) + "\n")
        parts.append(tail)
        return "".join(parts)

    def write(self, rel: str, text: str | bytes) -> int:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode() if isinstance(text, str) else text
        path.write_bytes(data)
        self.files += 1
        self.size += len(data)
        return len(data)

    def take(self, category: str, n: int) -> list[_Snippet]:
        queue = self.queues.get(category, [])
        taken, self.queues[category] = queue[:n], queue[n:]
        return taken


def _place(b: _Builder, rule: str, secret: str) -> None:
    rng = b.rng
    if rule == "private-key":
        category, text, shown = _key_snippet(secret, rng)
        b.add(category, _Snippet(text, ((rule, shown),)))
        return
    category, template = rng.choice(CONTEXTS[rule])
    if rule == "database-url":
        text = template.format(url=_db_url(secret, rng))
    else:
        text = template.format(s=secret)
    if text.count(secret) != 1:  # a password short enough to recur in its own URL
        text = template.format(s=secret, url=f"postgresql://app:{secret}@db.internal:5432/app")
    b.add(category, _Snippet(text, ((rule, secret),)))


def _plant_all(b: _Builder, per_rule: int, extra: Mapping[str, Sequence[str]]) -> None:
    rng = b.rng
    for rule in RULES:
        for _ in range(per_rule // 2 if rule == "private-key" else per_rule):
            _place(b, rule, fake(rule, rng))
    for rule, secrets in extra.items():
        if rule not in RULES:
            raise ValueError(f"no rule {rule!r}")
        for secret in secrets:
            for _ in range(3):
                _place(b, rule, secret)
    # An access key id and its secret on one line, as a shell history keeps them.
    for _ in range(max(5, per_rule // 10)):
        key_id, key = fake("aws-access-key-id", rng), fake("aws-secret-access-key", rng)
        text = f"AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={key} aws s3 ls s3://backups\n"
        found = (("aws-access-key-id", key_id), ("aws-secret-access-key", key))
        b.add("shell", _Snippet(text, found))
    for _ in range(max(10, per_rule // 4)):
        for kind, category, text in _decoys(rng):
            b.add(category, _Snippet(text))
            b.decoys[kind] += 1
    for _ in range(max(3, per_rule // 20)):
        b.add("keyfile", _Snippet(_public_pem()))
        b.decoys["public-key"] += 1
    for queue in b.queues.values():
        rng.shuffle(queue)


def _write_source(b: _Builder, budget: int) -> None:
    rng = b.rng
    for category, share in _SOURCE_SHARE.items():
        make, _, lines = _NOISE[category]
        cat_budget, written = int(budget * share), 0
        while written < cat_budget or b.queues.get(category):
            left = len(b.queues.get(category, []))
            if category in ("keyfile", "npmrc"):
                snippets = b.take(category, 1 if category == "keyfile" else rng.randrange(1, 3))
                noise = make(rng, b.pool, 0)
                rel = b.name(category)
                b.write(rel, b.assemble(rel, noise, snippets))
                continue
            n = rng.randrange(lines // 2, lines * 3 // 2)
            # Spread what is left over the files the budget still allows (~40 B a line).
            files_left = max(1, (cat_budget - written) // (n * 40))
            snippets = b.take(category, max(1, -(-left // files_left)) if left else 0)
            rel = b.name(category)
            head, tail = ("{\n", '  "version": 1\n}\n') if category == "json" else ("", "")
            text = b.assemble(rel, make(rng, b.pool, n), snippets, head=head, tail=tail)
            written += b.write(rel, text)


def _log_prefix(category: str, rng: random.Random, pool: _Pool) -> str:
    if category == "applog":
        ts = _timestamp(rng, 1_714_000_000 + rng.randrange(10_000_000))
        return f"{ts} [{rng.choice(_WORDS)}-{rng.randrange(8)}] request_id={pool.uuid()} "
    t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(1_714_000_000 + rng.randrange(10**7)))
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)} - - [{t}] "


def _log_snippets(b: _Builder, category: str, n: int) -> list[_Snippet]:
    return [
        _Snippet(_log_prefix(category, b.rng, b.pool) + s.text, s.found)
        for s in b.take(category, n)
    ]


def _write_logs(b: _Builder, budget: int, archive_share: float) -> list[tuple[str, list[_Snippet]]]:
    """Plain log files within `budget`; the log snippets kept for the archives."""
    rng = b.rng
    for_archives: list[tuple[str, list[_Snippet]]] = []
    for category in ("applog", "access"):
        queue = b.queues.get(category, [])
        keep = int(len(queue) * archive_share)
        for_archives.append((category, _log_snippets(b, category, keep)))
        make, _, lines = _NOISE[category]
        cat_budget, written = budget // 2, 0
        while written < cat_budget or b.queues.get(category):
            left = len(b.queues.get(category, []))
            n = rng.randrange(lines // 2, lines * 3 // 2)
            files_left = max(1, (cat_budget - written) // (n * 200))
            snippets = _log_snippets(b, category, -(-left // files_left) if left else 0)
            rel = b.name(category)
            written += b.write(rel, b.assemble(rel, make(rng, b.pool, n), snippets))
    return for_archives


def _write_archives(b: _Builder, held: list[tuple[str, list[_Snippet]]]) -> None:
    rng = b.rng
    for index, month in enumerate(("2024-04", "2024-05")):
        rel = f"archives/logs-{month}.tar.gz"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
            for category, snippets in held:
                for part in range(2):
                    mine = snippets[index * 2 + part :: 4]
                    member = (
                        f"var/log/{'app' if category == 'applog' else 'nginx'}/"
                        f"{rng.choice(_WORDS)}-{part + 1}.log"
                    )
                    noise = _NOISE[category][0](rng, b.pool, 3000)
                    data = b.assemble(f"{rel}!{member}", noise, mine).encode()
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime, info.mode = len(data), 1_714_000_000, 0o644
                    tar.addfile(info, io.BytesIO(data))
        b.write(rel, buf.getvalue())


def _write_noise(b: _Builder, budget: int) -> None:
    """Base64, hex, hashes, git SHAs and UUIDs: the high-entropy text that is no secret."""
    rng, pool = b.rng, b.pool
    written, index = 0, 0
    while written < budget:
        kind = index % 6
        index += 1
        size = rng.randrange(256 << 10, 2 << 20)
        if kind == 0:
            rel = f"data/blobs/{_ident(rng)}-{index}.b64"
            text = _scrub(base64.encodebytes(rng.randbytes(size * 3 // 4)).decode())
        elif kind == 1:
            rel = f"data/dumps/{_ident(rng)}-{index}.hex"
            h = rng.randbytes(size // 2).hex()
            text = "\n".join(h[i : i + 64] for i in range(0, len(h), 64)) + "\n"
        elif kind == 2:
            rel = f"dist/{_ident(rng)}-{index}.sha256"
            h = rng.randbytes(size // 3).hex()
            text = "".join(
                f"{h[i : i + 64]}  dist/{rng.choice(_WORDS)}-{i % 97}.{i % 13}.tar.gz\n"
                for i in range(0, len(h) - 64, 64)
            )
        elif kind == 3:
            rel = f"data/history/{_ident(rng)}-{index}.gitlog"
            text = "".join(
                f"commit {pool.hex(40)}\nAuthor: {rng.choice(_WORDS).capitalize()} "
                f"<{rng.choice(_WORDS)}@acme.io>\nDate:   Mon May 13 10:{i % 60:02d}:00 2024 "
                f"+0000\n\n    {rng.choice(_VERBS)} {rng.choice(_WORDS)} ({pool.hex(7)})\n\n"
                for i in range(size // 160)
            )
        elif kind == 4:
            rel = f"data/exports/{_ident(rng)}-{index}.csv"
            rows = [
                f"{pool.uuid()},{pool.uuid()},2024-05-{1 + i % 28:02d},{rng.choice(_WORDS)}"
                for i in range(size // 100)
            ]
            text = "id,account_id,created_at,state\n" + "\n".join(rows) + "\n"
        else:
            rel = f"vendor/{_ident(rng)}-{index}/go.sum"
            text = _scrub(
                "".join(
                    f"github.com/{rng.choice(_WORDS)}/{rng.choice(_WORDS)} v1.{i % 40}.{i % 9} "
                    f"h1:{base64.b64encode(rng.randbytes(32)).decode()}\n"
                    for i in range(size // 90)
                )
            )
        written += b.write(rel, text)


def generate(
    root: Path,
    *,
    size_mb: int = 50,
    seed: int = 0,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> Corpus:
    """Write the corpus under `root` (empty or absent) and return what it holds."""
    started = time.perf_counter()
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    b = _Builder(root, rng, _Pool(rng))
    per_rule = max(60, size_mb * 4)
    _plant_all(b, per_rule, extra or {})
    target = size_mb * MB
    _write_source(b, int(target * 0.28))
    held = _write_logs(b, int(target * 0.40), archive_share=0.15)
    _write_archives(b, held)
    _write_noise(b, target - b.size)
    assert not any(b.queues.values()), "every snippet has a file"
    b.planted.sort(key=lambda p: (p.file, p.line, p.rule))
    return Corpus(b.planted, b.decoys, b.files, b.size, time.perf_counter() - started)


def build_corpus(
    root: Path,
    *,
    size_mb: int = 50,
    seed: int = 0,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> list[Planted]:
    """Write the corpus under `root`; the planted secrets, where a scanner must find them."""
    return generate(root, size_mb=size_mb, seed=seed, extra=extra).planted


def archived(planted: Planted) -> bool:
    """Whether the secret is inside an archive (which not every scanner reads)."""
    return "!" in planted.file


# -- scoring --


@dataclass(frozen=True, slots=True)
class Score:
    """One rule's result on the planted set. Locations only: never a secret."""

    rule: str
    planted: int
    found: int
    reported: int
    misses: tuple[tuple[str, int], ...]
    false_positives: tuple[tuple[str, int], ...]

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else 1.0

    @property
    def precision(self) -> float:
        return self.found / self.reported if self.reported else 1.0


def score(
    planted: Sequence[Planted], reported: Sequence[tuple[str, str, int, str]]
) -> dict[str, Score]:
    """Per rule: a planted secret is found by a report of the same rule, file and line
    whose secret is equal; every other report is a false positive. `reported` holds
    (rule, file relative to the corpus root, line, secret)."""
    truth = Counter((p.rule, p.file, p.line, p.secret) for p in planted)
    hits: Counter[str] = Counter()
    false: dict[str, list[tuple[str, int]]] = {}
    for rule, file, line, secret in reported:
        key = (rule, file, line, secret)
        if truth[key] > 0:
            truth[key] -= 1
            hits[rule] += 1
        else:
            false.setdefault(rule, []).append((file, line))
    misses: dict[str, list[tuple[str, int]]] = {}
    for (rule, file, line, _), left in truth.items():
        misses.setdefault(rule, []).extend([(file, line)] * left)
    per_rule = Counter(p.rule for p in planted)
    return {
        rule: Score(
            rule,
            per_rule[rule],
            hits[rule],
            hits[rule] + len(false.get(rule, [])),
            tuple(sorted(misses.get(rule, []))),
            tuple(sorted(false.get(rule, []))),
        )
        for rule in sorted(set(per_rule) | set(false))
    }
