"""The CLI's calls to the server (TETHER_ADDR, TETHER_TOKEN)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tether.client import TetherClient

#: Where the next page of a listing starts, from the page just read (None: that was all).
Cursor = Callable[[dict[str, Any]], Any]


def client() -> TetherClient:
    return TetherClient()


def by_next(page: dict[str, Any]) -> Any:
    """Listings that answer `next`: the id to start after."""
    return page["next"]


def by_seq(limit: int) -> Cursor:
    """Audit-style listings: a full page means there may be more after its last `seq`."""

    def cursor(page: dict[str, Any]) -> Any:
        items = page["items"]
        return items[-1]["seq"] if len(items) == limit else None

    return cursor


def all_pages(
    path: str, params: Mapping[str, Any], cursor: Cursor = by_next
) -> list[dict[str, Any]]:
    """Every item of a paged listing (the API pages by `after`; None params are left out)."""
    items: list[dict[str, Any]] = []
    query = dict(params)
    after = query.pop("after", None)
    with client() as api:
        while True:
            page = api.get(path, **query, after=after)
            items.extend(page["items"])
            after = cursor(page)
            if after is None:
                return items


def get(path: str, **params: Any) -> Any:
    """One GET on a client of its own."""
    with client() as api:
        return api.get(path, **params)


def post(path: str, body: Any = None, **params: Any) -> Any:
    """One POST on a client of its own."""
    with client() as api:
        return api.post(path, body, **params)


def send(method: str, path: str, body: Any = None) -> Any:
    """One request of any method with a JSON body (PATCH, DELETE), on a client of its own."""
    with client() as api:
        return api.request(method, path, json=body)
