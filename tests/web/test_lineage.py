"""The lineage page: an identity's graph reaches its profiles and their targets, every node
is a link to its own lineage, a target lists who can reach it, a lease shows its task and
derived leases, and an owner sees only its own."""

from __future__ import annotations

import copy
import html.parser
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.factories import estate_document
from tests.govern.world import AdminApi
from tests.web.dash import Dash, dashboard, session_as
from tether.web._lineage import (
    KIND_RANK,
    REACH,
    REACHERS,
    Facts,
    Graph,
    build_lineage,
    columns_of,
    layout,
    node_key,
)

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
API_AUDIENCE = "https://api.example.com"


def estate() -> dict[str, Any]:
    """The factory estate, with team-a's nhi-00000 and team-b's nhi-00001 also entitled
    to `db-ro` (postgres, `target: db`); nhi-00002 is not."""
    doc = copy.deepcopy(estate_document(8))
    for index in (0, 1):
        doc["identities"][index]["entitlements"].append({"profile": "db-ro"})
    return doc


class _Page(html.parser.HTMLParser):
    """The links of a page and the rows of its node table (kind, id, href)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.rows: list[dict[str, Any]] = []
        self._href: str | None = None
        self._text: list[str] = []
        self._row: dict[str, Any] | None = None
        self._cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "a":
            self._href, self._text = attr.get("href"), []
            if self._row is not None and len(self._cells) == 2 and "href" not in self._row:
                self._row["href"] = attr.get("href")
        elif tag == "tr" and "data-node" in attr:
            self._row, self._cells = {}, []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None
        elif tag == "td" and self._cell is not None:
            self._cells.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            kind = self._cells[1].removesuffix(" (this page)")
            self._row.update(kind=kind, id=self._cells[2], cells=list(self._cells))
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def nodes(text: str) -> set[tuple[str, str]]:
    """The (kind, id) of every node the page lists."""
    return {(row["kind"], row["id"]) for row in parse(text).rows}


def href_of(text: str, kind: str, object_id: str) -> str:
    row = next(r for r in parse(text).rows if (r["kind"], r["id"]) == (kind, object_id))
    href = row.get("href")
    assert href, row
    return str(href).replace("&amp;", "&")


def follow(dash: Dash, href: str) -> Any:
    """Open a link of the page as the browser would (its query kept)."""
    parts = urllib.parse.urlsplit(href)
    return dash.get(parts.path, **dict(urllib.parse.parse_qsl(parts.query)))


def lineage(dash: Dash, **query: str) -> Any:
    response = dash.get("/ui/lineage", **query)
    assert response.status_code == 200, response.text
    return response


def exchange(api: AdminApi, subject_token: str) -> dict[str, Any]:
    """An RFC 8693 exchange of `subject_token` for a JWT of the api-read profile."""
    issued = api.client.post(
        "/oauth2/token",
        data={
            "grant_type": EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS,
            "audience": API_AUDIENCE,
        },
    )
    assert issued.status_code == 200, issued.text
    return dict(issued.json())


# -- the graph, without HTML --
def test_the_graph_of_an_identity_reaches_its_profile_and_the_profiles_target(
    tmp_path: Path,
) -> None:
    with dashboard(tmp_path, estate()) as (api, _dash):
        view = api.node.view.current
        graph = build_lineage(view, "identity", "nhi-00000", REACH, Facts(), lambda _o: True)
    assert graph.root == node_key("identity", "nhi-00000")
    edges = {(e.src, e.dst) for e in graph.edges}
    owner, identity = node_key("owner", "team-a"), node_key("identity", "nhi-00000")
    entitlement = node_key("entitlement", "nhi-00000/db-ro")
    profile, target = node_key("profile", "db-ro"), node_key("target", "db")
    assert {(owner, identity), (identity, entitlement), (entitlement, profile)} <= edges
    assert (profile, target) in edges
    # The profile's grants are what it reaches on the target.
    privileges = {graph.node(dst).label for src, dst in edges if src == profile if graph.node(dst)}
    assert {"privileges SELECT", "schema app"} <= privileges
    # The narrowed entitlement says so.
    narrowed = graph.node(node_key("entitlement", "nhi-00000/api-read"))
    assert narrowed is not None and narrowed.label == "scopes read of read, list"


def test_reachers_are_only_the_identities_the_viewer_may_see(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, _dash):
        view = api.node.view.current
        everyone = build_lineage(view, "target", "db", REACHERS, Facts(), lambda _o: True)
        team_a = build_lineage(view, "target", "db", REACHERS, Facts(), lambda o: o == "team-a")
    assert {n.id for n in everyone.of_kind("identity")} == {"nhi-00000", "nhi-00001"}
    assert {n.id for n in team_a.of_kind("identity")} == {"nhi-00000"}
    assert team_a.node(node_key("owner", "team-b")) is None


def test_the_layout_keeps_every_id_whole_and_puts_columns_in_kind_order(
    tmp_path: Path,
) -> None:
    long_id = "nhi-" + "x" * 120
    doc = estate()
    doc["identities"][0]["id"] = long_id
    with dashboard(tmp_path, doc) as (api, _dash):
        graph = build_lineage(
            api.node.view.current, "identity", long_id, REACH, Facts(), lambda _o: True
        )
    placed = layout(graph)
    assert len(placed.boxes) == len(graph.nodes)
    for box in placed.boxes:
        shown = "".join(text for text, cls in box.lines if cls == "ln-id")
        assert shown == box.node.id  # wrapped, never cut
    column = columns_of(graph)
    for edge in graph.edges:
        assert column[edge.src] < column[edge.dst], edge
    ranks = sorted(graph.nodes, key=lambda n: column[n.key])
    assert [KIND_RANK[n.kind] for n in ranks] == sorted(KIND_RANK[n.kind] for n in ranks)
    assert placed.width > 0 and placed.height > 0
    assert len(placed.wires) == len(graph.edges)


def test_a_cycle_does_not_hang_the_layout() -> None:
    from tether.web._lineage import Edge, Node

    a, b = Node("a", "actor"), Node("b", "actor")
    graph = Graph(a.key, (a, b), (Edge(a.key, b.key, "x"), Edge(b.key, a.key, "y")))
    assert len(layout(graph).boxes) == 2


# -- the page --
def test_the_identity_page_draws_its_profile_and_target_as_links(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (_api, dash):
        page = lineage(dash, identity="nhi-00000")
    text = page.text
    assert {("profile", "db-ro"), ("target", "db"), ("owner", "team-a")} <= nodes(text)
    assert ("identity", "nhi-00002") not in nodes(text)
    # The SVG's nodes are links too, and the graph names what it shows.
    assert 'role="group"' in text and "<title" in text
    assert 'href="/ui/lineage?profile=db-ro"' in text
    assert 'href="/ui/lineage?target=db&amp;direction=reachers"' in text
    assert '<script src="/ui/static/lineage.js" defer></script>' in text
    links = dict((label, href) for href, label in parse(text).links)
    assert links["What can this reach?"] == "/ui/lineage?identity=nhi-00000"
    assert links["Who can reach target db?"] == "/ui/lineage?target=db&direction=reachers"


def test_following_the_graph_from_identity_to_profile_to_target(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (_api, dash):
        first = lineage(dash, identity="nhi-00000").text
        to_profile = href_of(first, "profile", "db-ro")
        second = follow(dash, to_profile)
        assert second.status_code == 200, second.text
        assert ("target", "db") in nodes(second.text)
        to_target = href_of(second.text, "target", "db")
        third = follow(dash, to_target)
        assert third.status_code == 200, third.text
    # Who can reach the target: the identity we came from, and the other entitled one.
    reached = nodes(third.text)
    assert {("identity", "nhi-00000"), ("identity", "nhi-00001"), ("profile", "db-ro")} <= reached
    assert "Who can reach target" in third.text


def test_the_reachers_of_a_target_are_the_identities_entitled_to_it(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, dash):
        admin = nodes(lineage(dash, target="db", direction="reachers").text)
        owner = nodes(
            lineage(session_as(api, "owner:team-a"), target="db", direction="reachers").text
        )
        auditor = nodes(lineage(session_as(api, "auditor"), target="db", direction="reachers").text)
    identities = {i for kind, i in admin if kind == "identity"}
    assert identities == {"nhi-00000", "nhi-00001"}
    assert ("entitlement", "nhi-00000/db-ro") in admin
    assert {i for kind, i in auditor if kind == "identity"} == identities
    # An owner sees only its own among those who can reach it.
    assert {i for kind, i in owner if kind == "identity"} == {"nhi-00000"}
    assert ("owner", "team-b") not in owner


def test_a_lease_shows_its_identity_task_parent_and_derived_lease(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, dash):
        task = api.task("nhi-00000")
        issued = exchange(api, str(task["token"]))
        derived = exchange(api, str(issued["access_token"]))
        lease_id, derived_id = str(issued["tether_lease"]), str(derived["tether_lease"])
        task_lease = api.get(f"/v1/leases/{lease_id}")["parent"]
        page = lineage(dash, lease=lease_id).text
        identity_page = lineage(dash, identity="nhi-00000").text
        task_page = lineage(dash, task=str(task["id"])).text
    shown = nodes(page)
    assert {
        ("identity", "nhi-00000"),
        ("task", str(task["id"])),
        ("lease", task_lease),
        ("lease", lease_id),
        ("lease", derived_id),
        ("profile", "api-read"),
    } <= shown
    rows = {(r["kind"], r["id"]): r for r in parse(page).rows}
    assert rows[("lease", derived_id)]["href"] == f"/ui/lineage?lease={derived_id}"
    leads_to = " ".join(rows[("lease", lease_id)]["cells"][4].split())
    assert f"derived → lease {derived_id}" in leads_to
    # The identity's own graph has the task and both leases; the task's too.
    for other in (identity_page, task_page):
        assert {("task", str(task["id"])), ("lease", lease_id), ("lease", derived_id)} <= nodes(
            other
        )
    # No credential ever reaches the page.
    for secret in (str(task["token"]), str(issued["access_token"]), str(derived["access_token"])):
        assert secret not in page and secret not in identity_page


def test_the_derived_edge_runs_from_parent_to_child(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, _dash):
        task = api.task("nhi-00000")
        issued = exchange(api, str(task["token"]))
        derived = exchange(api, str(issued["access_token"]))
        with api.node.store.read() as tx:
            leases = tuple(
                lease
                for lease in (tx.get_lease(str(x["tether_lease"])) for x in (issued, derived))
                if lease is not None
            )
            started = tx.get_task(str(task["id"]))
        assert started is not None
        graph = build_lineage(
            api.node.view.current,
            "lease",
            leases[0].id,
            REACH,
            Facts(leases=leases, tasks=(started,)),
            lambda _o: True,
        )
    edges = {(e.src, e.dst): e.label for e in graph.edges}
    assert edges[(node_key("lease", leases[0].id), node_key("lease", leases[1].id))] == "derived"
    assert (node_key("identity", "nhi-00000"), node_key("task", started.id)) in edges


def test_a_static_secret_and_where_discovery_found_it(tmp_path: Path) -> None:
    value = "legacy-value-0123456789abcdef"
    with dashboard(tmp_path, estate()) as (api, dash):
        api.post(
            "/v1/credentials",
            {
                "id": "legacy-db-password",
                "owner": "team-a",
                "readers": ["nhi-00000"],
                "value": value,
            },
        )
        api.post(
            "/v1/exposures",
            {"secrets": [{"secret": value, "location": {"file": "deploy/env.sh", "line": 3}}]},
        )
        api.post("/v1/findings/evaluate")
        leaked = api.get("/v1/findings", rule="leaked")["items"]
        page = lineage(dash, identity="nhi-00000").text
        finding_page = lineage(dash, finding=leaked[0]["id"]).text
    assert {("static", "legacy-db-password"), ("exposure", "deploy/env.sh:3")} <= nodes(page)
    assert ("finding", leaked[0]["id"]) in nodes(page)
    # A finding's lineage is its identity's, with the finding in it.
    assert {("finding", leaked[0]["id"]), ("identity", "nhi-00000")} <= nodes(finding_page)
    assert ("profile", "db-ro") in nodes(finding_page)
    assert value not in page and value not in finding_page


def test_an_owner_sees_a_targets_static_secrets_only_through_its_own_readers(
    tmp_path: Path,
) -> None:
    with dashboard(tmp_path, estate()) as (api, dash):
        for secret, reader in (("a-secret", "nhi-00000"), ("b-secret", "nhi-00001")):
            api.post(
                "/v1/credentials",
                {
                    "id": secret,
                    "owner": "team-a" if reader == "nhi-00000" else "team-b",
                    "readers": [reader],
                    "target": "db",
                    "value": f"value-of-{secret}-0123456789",
                },
            )
        admin = nodes(lineage(dash, target="db").text)
        owner = nodes(lineage(session_as(api, "owner:team-a"), target="db").text)
    assert {("static", "a-secret"), ("static", "b-secret")} <= admin
    assert ("static", "a-secret") in owner
    assert ("static", "b-secret") not in owner


def test_a_big_estate_is_bounded(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, dash):
        task = api.task("nhi-00000")
        for _ in range(52):
            exchange(api, str(task["token"]))
        page = lineage(dash, identity="nhi-00000").text
    leases = [i for kind, i in nodes(page) if kind == "lease"]
    assert len(leases) == 50
    assert "and 3 more leases" in page  # 52 issued + the task token's own lease


def test_an_owner_gets_404_for_another_owners_identity_lease_and_finding(
    tmp_path: Path,
) -> None:
    with dashboard(tmp_path, estate()) as (api, dash):
        task = api.task("nhi-00000")
        lease_id = str(exchange(api, str(task["token"]))["tether_lease"])
        api.post("/v1/findings/evaluate")
        theirs = [f for f in api.get("/v1/findings", owner="team-a")["items"] if f["identity"]]
        owner_b = session_as(api, "owner:team-b")
        refused = {
            "identity": owner_b.get("/ui/lineage", identity="nhi-00000"),
            "lease": owner_b.get("/ui/lineage", lease=lease_id),
            "task": owner_b.get("/ui/lineage", task=str(task["id"])),
            "finding": owner_b.get("/ui/lineage", finding=theirs[0]["id"]),
        }
        missing = owner_b.get("/ui/lineage", identity="no-such-identity")
        own = owner_b.get("/ui/lineage", identity="nhi-00001")
        admin = dash.get("/ui/lineage", finding=theirs[0]["id"])
    for kind, response in refused.items():
        assert response.status_code == 404, (kind, response.text)
        assert "nhi-00000" not in response.text or kind == "identity"
    # The same answer as for one that does not exist.
    assert missing.status_code == 404
    assert own.status_code == 200 and ("identity", "nhi-00001") in nodes(own.text)
    assert admin.status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        {"identity": "no-such-identity"},
        {"lease": "lse_00000000000000000000"},
        {"task": "tsk_00000000000000000000"},
        {"finding": "fnd_000000000000000000000000"},
        {"profile": "no-such-profile"},
        {"target": "no-such-target"},
        {"target": "no-such-target", "direction": "reachers"},
    ],
)
def test_unknown_ids_are_404(tmp_path: Path, query: dict[str, str]) -> None:
    with dashboard(tmp_path, estate()) as (_api, dash):
        response = dash.get("/ui/lineage", **query)
    assert response.status_code == 404, response.text
    assert "Not found" in response.text


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({}, "give one of identity"),
        ({"identity": "nhi-00000", "target": "db"}, "Give only one of"),
        ({"identity": "nhi-00000", "direction": "sideways"}, "direction"),
        ({"lease": "lse_x", "direction": "reachers"}, "direction"),
    ],
)
def test_a_bad_query_is_a_400_page_naming_the_problem(
    tmp_path: Path, query: dict[str, str], says: str
) -> None:
    with dashboard(tmp_path, estate()) as (_api, dash):
        response = dash.get("/ui/lineage", **query)
    assert response.status_code == 400, response.text
    assert says in response.text


def test_the_auditor_reads_the_page_and_gets_no_action(tmp_path: Path) -> None:
    with dashboard(tmp_path, estate()) as (api, _dash):
        auditor = session_as(api, "auditor")
        page = lineage(auditor, identity="nhi-00000").text
    assert ("target", "db") in nodes(page)
    forms = page.count("<form")
    assert forms == 1  # sign-out only
    assert "style=" not in page and "onclick" not in page.lower()


def test_a_shadow_secret_finding_shows_where_it_was_found(tmp_path: Path) -> None:
    from tests.scan.fakes import fake

    leaked = fake("github-token")
    with dashboard(tmp_path, estate()) as (api, dash):
        api.post(
            "/v1/exposures",
            {"secrets": [{"secret": leaked, "location": {"file": "ci.yml", "line": 2}}]},
        )
        [shadow] = api.get("/v1/findings", rule="shadow-nhi")["items"]
        page = lineage(dash, finding=shadow["id"]).text
        owner = session_as(api, "owner:team-a").get("/ui/lineage", finding=shadow["id"])
    assert nodes(page) == {("finding", shadow["id"]), ("exposure", "ci.yml:2")}
    assert leaked not in page
    # Nobody's identity: an owner is not shown it.
    assert owner.status_code == 404


def test_a_delegated_lease_shows_its_actor_chain(tmp_path: Path) -> None:
    import dataclasses

    with dashboard(tmp_path, estate()) as (api, _dash):
        task = api.task("nhi-00004")
        issued = exchange(api, str(task["token"]))
        with api.node.store.read() as tx:
            lease = tx.get_lease(str(issued["tether_lease"]))
        assert lease is not None
        # The chain as a delegated exchange records it: nearest actor first.
        delegated = dataclasses.replace(
            lease, actor="nhi-00002", delegation=("nhi-00002", "nhi-00001")
        )
        graph = build_lineage(
            api.node.view.current,
            "lease",
            lease.id,
            REACH,
            Facts(leases=(delegated,)),
            lambda owner: owner == "team-a",
        )
    edges = {(e.src, e.dst): e.label for e in graph.edges}
    nearest, before = node_key("actor", "nhi-00002"), node_key("actor", "nhi-00001")
    assert edges[(node_key("lease", lease.id), nearest)] == "acted by"
    assert edges[(nearest, before)] == "delegated by"
    # An actor is a link only when the viewer may see that identity (team-b's is not).
    near, prior = graph.node(nearest), graph.node(before)
    assert near is not None and near.href == "/ui/lineage?identity=nhi-00002"
    assert prior is not None and prior.href is None
