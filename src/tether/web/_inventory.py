"""The inventory: every identity the principal may see, searched, filtered, sorted and
paged on the server. An index in memory (one row per identity, from the estate view and
the stored risk) keeps 100,000 identities fast."""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from tether.model import Kind
from tether.web._cache import Refreshed, per_node
from tether.web._pages import Ctx, Pages

pages = Pages()

PAGE_SIZE = 50
#: How stale the risk scores on the inventory may be (the engine re-scores continuously).
RISK_MAX_AGE = 5.0
STATUSES = ("active", "suspended", "retired")
SORTS = ("id", "risk", "kind", "owner", "environment", "status")
#: The risk filter's floors: a score is 0 to 100.
RISK_FLOORS = (25, 50, 75)


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    kind: str
    owner: str
    environment: str
    status: str
    criticality: str
    vendor: str | None
    purpose: str
    #: Lower-cased id, purpose, owner and system: what the search box looks in.
    text: str


@dataclass(frozen=True, slots=True)
class Index:
    rows: tuple[Row, ...]
    #: The rows in each sort order but id and risk (computed with the index).
    orders: Mapping[str, tuple[Row, ...]]
    #: (kind, status) → count, over every identity.
    by_kind_status: Mapping[tuple[str, str], int]
    environments: tuple[str, ...]
    owners: tuple[str, ...]
    version: int


@dataclass(frozen=True, slots=True)
class Risk:
    score: Mapping[str, int]
    open_findings: Mapping[str, int]
    #: The index's rows riskiest first (ties in id order), for the estate version `version`.
    ranked: tuple[Row, ...]
    version: int


def _build_index(view: Any) -> Index:
    rows = tuple(
        Row(
            id=i.id,
            kind=i.kind.value,
            owner=i.owner_id,
            environment=i.environment,
            status=i.status.value,
            criticality=i.criticality.value,
            vendor=i.vendor_id,
            purpose=i.purpose,
            text=f"{i.id}\n{i.purpose}\n{i.owner_id}\n{i.system or ''}".lower(),
        )
        for i in sorted(view.identities.values(), key=lambda i: i.id)
    )
    # Sorting is stable and the rows are in id order: ties stay in id order.
    orders = {
        field: tuple(sorted(rows, key=operator.attrgetter(field)))
        for field in SORTS
        if field not in ("id", "risk")
    }
    return Index(
        rows=rows,
        orders=orders,
        by_kind_status=Counter((r.kind, r.status) for r in rows),
        environments=tuple(sorted({r.environment for r in rows})),
        owners=tuple(sorted({r.owner for r in rows} | set(view.owners))),
        version=view.version,
    )


def _build_risk(node: Any) -> Risk:
    index = index_of(node)
    table = node.govern.risk_table()
    score = {k: v[0] for k, v in table.items() if v[0]}
    return Risk(
        score=score,
        open_findings={k: v[1] for k, v in table.items() if v[1]},
        ranked=tuple(sorted(index.rows, key=lambda r: -score.get(r.id, 0))),
        version=index.version,
    )


def index_of(node: Any) -> Index:
    """The node's identity index, as of its current estate version."""
    held: Refreshed[Index] = per_node(
        node,
        "inventory",
        lambda: Refreshed(
            lambda: _build_index(node.view.current), 3600.0, lambda: node.view.current.version
        ),
    )
    return held.get()


def _risk_model(node: Any) -> Refreshed[Risk]:
    held: Refreshed[Risk] = per_node(
        node,
        "risk",
        lambda: Refreshed(
            lambda: _build_risk(node), RISK_MAX_AGE, lambda: node.view.current.version
        ),
    )
    return held


def risk_of(node: Any) -> Risk:
    return _risk_model(node).get()


def forget_risk(node: Any) -> None:
    """Read the scores afresh on the next page (after a change made from the dashboard)."""
    _risk_model(node).forget()


@dataclass(frozen=True, slots=True)
class Query:
    q: str = ""
    kind: str = ""
    owner: str = ""
    environment: str = ""
    status: str = ""
    risk: int = 0
    findings: bool = False
    sort: str = "id"
    page: int = 1


class BadQuery(Exception):
    pass


def parse_query(values: Mapping[str, str]) -> Query:
    """The inventory's query string; a value out of its set names the field."""
    kind = values.get("kind", "")
    if kind and kind not in {k.value for k in Kind}:
        raise BadQuery(f"kind: must be one of {', '.join(k.value for k in Kind)}")
    status = values.get("status", "")
    if status and status not in STATUSES:
        raise BadQuery(f"status: must be one of {', '.join(STATUSES)}")
    sort = values.get("sort", "") or "id"
    if sort not in SORTS:
        raise BadQuery(f"sort: must be one of {', '.join(SORTS)}")
    try:
        risk = int(values.get("risk", "") or 0)
        page = int(values.get("page", "") or 1)
    except ValueError:
        raise BadQuery("risk and page: must be whole numbers") from None
    if risk and risk not in RISK_FLOORS:
        raise BadQuery(f"risk: must be one of {', '.join(map(str, RISK_FLOORS))}")
    if page < 1:
        raise BadQuery("page: must be 1 or more")
    return Query(
        q=values.get("q", "").strip()[:255],
        kind=kind,
        owner=values.get("owner", "").strip()[:255],
        environment=values.get("environment", "").strip()[:64],
        status=status,
        risk=risk,
        findings=values.get("findings", "") in ("1", "on", "yes"),
        sort=sort,
        page=page,
    )


def select(index: Index, risk: Risk, query: Query, owner_scope: Sequence[str] | None) -> list[Row]:
    """The rows that match, in the query's order. Each filter is its own pass over what
    the last one left (fast while filters are few and narrow)."""
    if query.sort == "risk":
        rows: Sequence[Row] = risk.ranked
    else:
        rows = index.rows if query.sort == "id" else index.orders[query.sort]
    if owner_scope is not None:
        scope = frozenset(owner_scope)
        rows = [r for r in rows if r.owner in scope]
    for field in ("kind", "owner", "environment", "status"):
        wanted = getattr(query, field)
        if wanted:
            rows = [r for r in rows if getattr(r, field) == wanted]
    if query.q:
        needle = query.q.lower()
        rows = [r for r in rows if needle in r.text]
    if query.risk:
        score, floor = risk.score, query.risk
        rows = [r for r in rows if score.get(r.id, 0) >= floor]
    if query.findings:
        flagged = risk.open_findings
        rows = [r for r in rows if r.id in flagged]
    return list(rows)


@pages.view("/identities")
def inventory(ctx: Ctx) -> Response:
    try:
        query = parse_query(ctx.query)
    except BadQuery as bad:
        return ctx.render("error.html", status=400, status_code=400, message=str(bad))
    index, risk = index_of(ctx.node), risk_of(ctx.node)
    scope = ctx.principal.owner_scope()
    rows = select(index, risk, query, scope)
    pages_total = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(query.page, pages_total)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    owners = index.owners if scope is None else tuple(o for o in index.owners if o in scope)
    return ctx.render(
        "inventory.html",
        query=query,
        rows=shown,
        total=len(rows),
        page=page,
        pages_total=pages_total,
        risk=risk,
        kinds=[k.value for k in Kind],
        statuses=STATUSES,
        environments=index.environments,
        owners=owners,
        risk_floors=RISK_FLOORS,
        sorts=SORTS,
        args=_args(query),
    )


def _args(query: Query) -> dict[str, Any]:
    """The query as URL parameters, for the sort links and the pager."""
    return {
        "q": query.q,
        "kind": query.kind,
        "owner": query.owner,
        "environment": query.environment,
        "status": query.status,
        "risk": query.risk or "",
        "findings": "1" if query.findings else "",
        "sort": "" if query.sort == "id" else query.sort,
    }
