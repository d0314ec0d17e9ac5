"""The client's address, believing forwarding headers only from configured proxies.

Policy (`context.source_ip`), the audit trail, rate limits and usage evidence all read the
one address this resolves, so a header a client sets itself can move none of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What the address is when a trusted proxy forwarded something that is not one: policy
#: then sees no `source_ip` (and a condition on it fails closed), never the proxy's own.
UNKNOWN = "unknown"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # RFC 7239: "[2001:db8::1]:4711"
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # "192.0.2.1:4711"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The `for=` of each element of RFC 7239 `Forwarded` headers, in order."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, content = pair.strip().partition("=")
                if name.lower() == "for":
                    hops.append(content)
    return hops


class ClientAddress:
    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in trusted_proxies
        )

    def _trusted(self, text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in net for net in self._networks)

    def resolve(self, peer: str | None, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The client behind `peer`: the nearest hop, walking the forwarding chain from
        the right, that is not itself a trusted proxy."""
        if peer is None or not self._networks or not self._trusted(peer):
            return peer
        forwarded = [v.decode("latin-1") for k, v in headers if k == b"forwarded"]
        if forwarded:
            hops = _forwarded_for(forwarded)
        else:
            hops = [
                hop
                for k, v in headers
                if k == b"x-forwarded-for"
                for hop in v.decode("latin-1").split(",")
            ]
        if not hops:
            return peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return UNKNOWN
            if not any(address in net for net in self._networks):
                return str(address)
        return str(_address(hops[0]))
