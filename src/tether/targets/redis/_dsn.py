"""A Redis target's DSN, read once so that no part of it reaches an error message."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from tether.providers import ProviderError
from tether.targets._target import Target
from tether.targets.redis import KIND

#: The DSN query options accepted (TLS settings). redis-py passes any other option to
#: each new connection and fails only then; `password=` would also shadow the userinfo.
_DSN_OPTIONS = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)


@dataclass(frozen=True, slots=True)
class Dsn:
    scheme: str
    host: str
    port: int
    db: int
    username: str
    password: str
    netloc_host: str  # host[:port] as written, for rebuilding URLs
    query: str

    def url(self, username: str, password: str | None) -> str:
        auth = quote(username, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return urlunsplit((self.scheme, f"{auth}@{self.netloc_host}", f"/{self.db}", "", ""))

    def admin_url(self, password: str) -> str:
        return urlunsplit(
            (
                self.scheme,
                f"{quote(self.username, safe='')}:{quote(password, safe='')}@{self.netloc_host}",
                f"/{self.db}",
                self.query,
                "",
            )
        )


def parse_dsn(target: Target) -> Dsn:
    """Parse without letting any part of the DSN reach an error message."""
    parsed: Dsn | None = None
    try:
        parts = urlsplit(target.dsn)
        path = parts.path.strip("/")
        if (
            f"{parts.scheme}://" in KIND.dsn_schemes
            and parts.hostname
            and parts.password is not None
            and (not path or path.isdigit())
            and all(k in _DSN_OPTIONS for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        ):
            netloc_host = parts.netloc.rpartition("@")[2]
            parsed = Dsn(
                scheme=parts.scheme,
                host=parts.hostname,
                port=parts.port or 6379,
                db=int(path or "0"),
                username=unquote(parts.username or "") or "default",
                password=unquote(parts.password),
                netloc_host=netloc_host,
                query=parts.query,
            )
    except ValueError:
        parsed = None
    if parsed is None:
        raise ProviderError(
            f"redis target {target.name!r}: the DSN must be redis[s]://user:password@host"
            "[:port][/db]"
        )
    return parsed
