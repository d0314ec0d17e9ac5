"""Fetching an issuer's discovery document and JWKS, defensively.

An IdP (or whoever sits between us and it) controls these responses, so every fetch is
short, small and stays on the origin it was asked for: a timeout, a size cap read from
the stream rather than trusted from Content-Length, and redirects followed only within
the same scheme, host and port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether.attest._jose import loads_object

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT = 5.0
#: A JWKS of 100 RSA-4096 keys is ~90 KiB; discovery documents are a few KiB.
MAX_RESPONSE_BYTES = 256 * 1024
MAX_REDIRECTS = 3


class FetchError(Exception):
    """Why a document could not be fetched. The message is safe to log and to show."""


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def check_url(url: str) -> httpx.URL:
    import httpx  # here, not at import: it costs a node's start ~0.4 s

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise FetchError("not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise FetchError("only http(s) URLs with a host are fetched")
    return parsed


def fetch_json(client: httpx.Client, url: str, timeout: float) -> dict[str, Any]:
    """GET `url` and return its JSON object body, or raise FetchError saying why."""
    import httpx

    target = check_url(url)
    origin = _origin(target)
    for _ in range(MAX_REDIRECTS + 1):
        request = client.build_request(
            "GET", target, headers={"Accept": "application/json"}, timeout=timeout
        )
        try:
            response = client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise FetchError(f"timed out fetching {target.host}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"could not reach {target.host}: {type(exc).__name__}") from None
        try:
            if response.is_redirect:
                location = response.headers.get("Location")
                if not location:
                    raise FetchError(f"HTTP {response.status_code} without a Location")
                following = target.join(location)
                if _origin(following) != origin:
                    raise FetchError("refused a redirect to another origin")
                target = following
                continue
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} from {target.host}")
            body = _read_capped(response)
        except httpx.HTTPError as exc:
            raise FetchError(f"could not read from {target.host}: {type(exc).__name__}") from None
        finally:
            response.close()
        try:
            return loads_object(body)
        except ValueError:
            raise FetchError(f"the response from {target.host} is not a JSON object") from None
    raise FetchError("too many redirects")


def _read_capped(response: httpx.Response) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise FetchError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise FetchError(f"response larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
