"""Lineage and blast radius: what an identity, lease, task, finding, profile or target
reaches (owner → identity → entitlement → profile → target and privileges; identity →
task → lease → derived leases and delegation; static secrets and where discovery found
them), or who can reach a target or profile.

Three steps, kept apart: `_load` asks the services and the store (and applies the
principal's owner scope), `build_lineage` turns what was loaded into a `Graph` (pure),
and `layout` places the graph's nodes in columns by kind for the page's SVG (pure).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from tether.errors import NotFoundError, TetherError
from tether.estate import EstateView
from tether.govern import FindingFilter
from tether.model import Identity, Lease, LeaseState, Profile, Task
from tether.static import StaticCredential
from tether.store import LeaseFilter, TaskFilter
from tether.web._pages import Ctx, Pages, url, visible_identity

pages = Pages()

#: How much of a big estate one page draws; the rest is counted ("and N more").
MAX_LEASES = 50
MAX_TASKS = 20
MAX_FINDINGS = 50
MAX_REACHERS = 100
#: How far up a lease's ancestry is followed.
MAX_ANCESTORS = 10
#: How many leases are read to pick the newest from.
_LEASE_SCAN = 1000

REACH = "reach"
REACHERS = "reachers"
#: What a lineage can be asked about (the query parameter names), in this order.
SUBJECTS = ("identity", "lease", "task", "finding", "profile", "target")
#: Left-to-right order of the kinds: a node is drawn at least this far right.
KIND_RANK: Mapping[str, int] = {
    "finding": 0,
    "owner": 0,
    "identity": 1,
    "entitlement": 2,
    "task": 2,
    "static": 2,
    "profile": 3,
    "lease": 3,
    "exposure": 3,
    "target": 4,
    "privilege": 4,
    "actor": 4,
}
_LIVE_FIRST = (LeaseState.PENDING, LeaseState.ACTIVE, LeaseState.REVOKING)
_ENDED = (LeaseState.REVOKED, LeaseState.EXPIRED)


class LineageQueryError(TetherError):
    """The page was asked about nothing, or about two things at once."""

    status_code = 400
    code = "invalid_query"


# -- the graph --
@dataclass(frozen=True, slots=True)
class Node:
    #: The object's own id, in full (an identity id, a lease id, a target name ...).
    id: str
    kind: str
    #: What else a reader wants at a glance (a state, a profile, scopes).
    label: str = ""
    #: The lineage page of this node (None: it has none).
    href: str | None = None

    @property
    def key(self) -> str:
        return node_key(self.kind, self.id)


@dataclass(frozen=True, slots=True)
class Edge:
    #: Node keys (`kind:id`).
    src: str
    dst: str
    label: str


@dataclass(frozen=True, slots=True)
class Graph:
    root: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    #: What was left out to keep the page bounded, as sentences ("and 12 more leases").
    more: tuple[str, ...] = ()

    def node(self, key: str) -> Node | None:
        return next((n for n in self.nodes if n.key == key), None)

    def out_of(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.src == key]

    def into(self, key: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == key]

    def of_kind(self, kind: str) -> list[Node]:
        return [n for n in self.nodes if n.kind == kind]


def node_key(kind: str, object_id: str) -> str:
    return f"{kind}:{object_id}"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the store and services said about the subject's neighbourhood, already
    narrowed to what the principal may see."""

    leases: tuple[Lease, ...] = ()
    tasks: tuple[Task, ...] = ()
    findings: tuple[Mapping[str, Any], ...] = ()
    statics: tuple[StaticCredential, ...] = ()
    more: tuple[str, ...] = ()


def lineage_url(kind: str, object_id: str, direction: str = REACH) -> str:
    return url("/lineage", **{kind: object_id}, direction=None if direction == REACH else direction)


class _Builder:
    def __init__(self, view: EstateView, may_see: Callable[[str], bool]) -> None:
        self.view = view
        self.may_see = may_see
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str], Edge] = {}

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.key, node)
        return node.key

    def link(self, src: str, dst: str, label: str) -> None:
        if src != dst:
            self.edges.setdefault((src, dst), Edge(src, dst, label))

    # -- estate --
    def owner(self, owner_id: str) -> str:
        owner = self.view.owners.get(owner_id)
        label = "" if owner is None else owner.name + (" (departed)" if owner.departed else "")
        return self.add(Node(owner_id, "owner", label, url("/identities", owner=owner_id)))

    def identity(self, identity: Identity) -> str:
        label = f"{identity.kind.value}, {identity.environment}, {identity.status.value}"
        key = self.add(Node(identity.id, "identity", label, lineage_url("identity", identity.id)))
        self.link(self.owner(identity.owner_id), key, "owns")
        return key

    def profile(self, profile_id: str, privileges: bool = True) -> str:
        profile = self.view.profiles.get(profile_id)
        label = "(not in the estate)" if profile is None else profile.provider
        key = self.add(Node(profile_id, "profile", label, lineage_url("profile", profile_id)))
        if profile is None:
            return key
        if profile.target:
            self.link(key, self.target(profile.target), "on target")
        if privileges:
            for what in privileges_of(profile):
                self.link(key, self.add(Node(f"{profile.id}#{what}", "privilege", what)), "grants")
        return key

    def target(self, name: str) -> str:
        return self.add(Node(name, "target", "", lineage_url("target", name, REACHERS)))

    def entitlements(self, identity: Identity, only: set[str] | None = None) -> None:
        ikey = self.identity(identity)
        for entitlement in identity.entitlements:
            if only is not None and entitlement.profile_id not in only:
                continue
            profile = self.view.profiles.get(entitlement.profile_id)
            label = _entitlement_label(entitlement.scopes, profile)
            ekey = self.add(
                Node(
                    f"{identity.id}/{entitlement.profile_id}",
                    "entitlement",
                    label,
                    lineage_url("profile", entitlement.profile_id),
                )
            )
            self.link(ikey, ekey, "entitled")
            self.link(
                ekey, self.profile(entitlement.profile_id, privileges=only is None), "of profile"
            )

    # -- what was issued --
    def task(self, task: Task) -> str:
        label = f"{task.name}, {task.status.value}"
        key = self.add(Node(task.id, "task", label, lineage_url("task", task.id)))
        identity = self.view.identities.get(task.identity_id)
        if identity is not None:
            self.link(self.identity(identity), key, "ran")
        return key

    def leases(self, leases: Sequence[Lease], tasks: Iterable[Task], to_profile: bool) -> None:
        task_keys = {t.id: self.task(t) for t in tasks}
        shown = {lease.id for lease in leases}
        for lease in leases:
            label = f"{lease.state.value}, {lease.profile_id or lease.provider}"
            key = self.add(Node(lease.id, "lease", label, lineage_url("lease", lease.id)))
            if lease.parent_id and lease.parent_id in shown:
                self.link(node_key("lease", lease.parent_id), key, "derived")
            elif lease.task_id and lease.task_id in task_keys:
                self.link(task_keys[lease.task_id], key, "issued")
            else:
                identity = self.view.identities.get(lease.identity_id)
                if identity is not None:
                    self.link(self.identity(identity), key, "issued")
            if to_profile and lease.profile_id:
                self.link(key, self.profile(lease.profile_id), "of profile")
            elif lease.target:
                self.link(key, self.target(lease.target), "on target")
            self.delegation(key, lease.delegation or ((lease.actor,) if lease.actor else ()))

    def delegation(self, lease_key: str, chain: Sequence[str]) -> None:
        previous, label = lease_key, "acted by"
        for actor in chain:
            identity_id = actor.removeprefix("identity:")
            identity = self.view.identities.get(identity_id)
            href = (
                lineage_url("identity", identity_id)
                if identity is not None and self.may_see(identity.owner_id)
                else None
            )
            key = self.add(Node(actor, "actor", "delegation", href))
            self.link(previous, key, label)
            previous, label = key, "delegated by"

    def statics(self, credentials: Iterable[StaticCredential], identity_id: str | None) -> None:
        for credential in credentials:
            label = f"{credential.kind}, {len(credential.readers)} reader(s)"
            key = self.add(Node(credential.id, "static", label))
            for reader in credential.readers:
                identity = self.view.identities.get(reader)
                if identity is None or not self.may_see(identity.owner_id):
                    continue
                if identity_id is not None and reader != identity_id:
                    continue
                self.link(self.identity(identity), key, "may read")
            if credential.target:
                self.link(key, self.target(credential.target), "on target")

    def finding(self, finding: Mapping[str, Any]) -> str:
        label = f"{finding.get('rule')}, {finding.get('severity')}, {finding.get('state')}"
        key = self.add(
            Node(str(finding["id"]), "finding", label, lineage_url("finding", str(finding["id"])))
        )
        identity = self.view.identities.get(str(finding.get("identity")))
        if identity is not None and self.may_see(identity.owner_id):
            self.link(key, self.identity(identity), "on")
        evidence = finding.get("evidence")
        credential = evidence.get("credential") if isinstance(evidence, Mapping) else None
        holder = key
        for kind in ("static", "lease"):
            if credential is not None and node_key(kind, str(credential)) in self.nodes:
                holder = node_key(kind, str(credential))
                self.link(key, holder, "about")
        for where in exposure_locations(evidence):
            self.link(holder, self.add(Node(where, "exposure", "found by discovery")), "found at")
        return key

    def graph(self, root: str, more: Sequence[str]) -> Graph:
        return Graph(root, tuple(self.nodes.values()), tuple(self.edges.values()), tuple(more))


def privileges_of(profile: Profile) -> list[str]:
    """What a profile grants, one line each: its scopes, audience and grants."""
    out = [f"scope {s}" for s in profile.scopes]
    if profile.audience:
        out.append(f"audience {profile.audience}")
    for name, value in sorted((profile.grants or {}).items()):
        if isinstance(value, list | tuple):
            out += [f"{name} {v}" for v in value]
        else:
            out.append(f"{name} {value}")
    return out


def _entitlement_label(scopes: tuple[str, ...] | None, profile: Profile | None) -> str:
    if scopes is None:
        return "all of the profile's scopes"
    if profile is not None and profile.scopes:
        return f"scopes {', '.join(scopes) or '(none)'} of {', '.join(profile.scopes)}"
    return f"scopes {', '.join(scopes) or '(none)'}"


def exposure_locations(evidence: Any) -> list[str]:
    """Where discovery found a secret, as `file:line` (and commit), from a finding's
    evidence: a shadow secret's `locations`, an exposure's `location`, or a static
    secret's exposure note."""
    out: list[str] = []

    def where(location: Mapping[str, Any]) -> str:
        at = f"{location.get('file')}:{location.get('line', 0)}"
        commit = location.get("commit")
        return f"{at} in commit {commit}" if commit else at

    def walk(value: Any, depth: int) -> None:
        if depth > 3 or not isinstance(value, Mapping):
            return
        for location in value.get("locations") or ():
            if isinstance(location, Mapping) and "file" in location:
                out.append(where(location))
        location = value.get("location")
        if isinstance(location, Mapping) and "file" in location:
            out.append(where(location))
        inner = value.get("evidence")
        if isinstance(inner, str) and " at " in inner:
            out.append(inner.split(" at ", 1)[1])
        walk(inner, depth + 1)

    walk(evidence, 0)
    return list(dict.fromkeys(out))


def build_lineage(
    view: EstateView,
    kind: str,
    subject_id: str,
    direction: str,
    facts: Facts,
    may_see: Callable[[str], bool],
) -> Graph:
    """The lineage graph of one subject, from what was loaded (no I/O).

    `kind` is one of SUBJECTS; `may_see(owner_id)` says whose identities the viewer may
    see (reachers are narrowed by it; the subject itself was checked when loaded)."""
    b = _Builder(view, may_see)
    more = list(facts.more)
    if direction == REACHERS:
        root = _reachers(b, kind, subject_id, facts, more)
        return b.graph(root, more)
    if kind in ("identity", "finding"):
        finding = facts.findings[0] if kind == "finding" and facts.findings else None
        identity_id = subject_id if finding is None else str(finding.get("identity"))
        identity = view.identities.get(identity_id)
        if identity is not None and not may_see(identity.owner_id):
            identity = None
        if identity is not None:
            b.entitlements(identity)
            for task in facts.tasks:
                b.task(task)
            b.leases(facts.leases, facts.tasks, to_profile=False)
            b.statics(facts.statics, identity.id)
        for each in facts.findings:
            b.finding(each)
        root = node_key(kind, subject_id)
        if identity is not None and kind == "identity":
            root = node_key("identity", identity.id)
        return b.graph(root, more)
    if kind in ("lease", "task"):
        for lease in facts.leases:
            identity = view.identities.get(lease.identity_id)
            if identity is not None and may_see(identity.owner_id):
                b.identity(identity)
        b.leases(facts.leases, facts.tasks, to_profile=True)
        for task in facts.tasks:
            b.task(task)
        return b.graph(node_key(kind, subject_id), more)
    if kind == "profile":
        return b.graph(b.profile(subject_id), more)
    # A target reaches nothing further: what is granted on it, by which profiles.
    root = b.target(subject_id)
    for profile in view.profiles.values():
        if profile.target == subject_id:
            b.profile(profile.id)
    b.statics([c for c in facts.statics if c.target == subject_id], None)
    return b.graph(root, more)


def _reachers(b: _Builder, kind: str, subject_id: str, facts: Facts, more: list[str]) -> str:
    view = b.view
    if kind == "identity":
        identity = view.identities[subject_id]
        root = b.identity(identity)
        actors = [
            view.identities[i]
            for i in identity.may_act
            if i in view.identities and b.may_see(view.identities[i].owner_id)
        ]
        for actor in actors:
            b.link(b.identity(actor), root, "may act for")
        return root
    if kind == "profile":
        root = b.profile(subject_id, privileges=False)
        profiles = {subject_id}
    else:
        root = b.target(subject_id)
        profiles = {p.id for p in view.profiles.values() if p.target == subject_id}
        for profile_id in sorted(profiles):
            b.profile(profile_id, privileges=False)
        b.statics([c for c in facts.statics if c.target == subject_id], None)
    entitled = [
        i
        for i in sorted(view.identities.values(), key=lambda i: i.id)
        if b.may_see(i.owner_id) and any(e.profile_id in profiles for e in i.entitlements)
    ]
    for identity in entitled[:MAX_REACHERS]:
        b.entitlements(identity, only=profiles)
    if len(entitled) > MAX_REACHERS:
        more.append(f"and {len(entitled) - MAX_REACHERS} more identities entitled to it")
    return root


# -- layout --
#: Box geometry (px) of the SVG; ids wrap at `_WRAP` characters, never truncated.
_BOX_W, _COL_GAP, _ROW_GAP, _LINE, _PAD, _WRAP = 210, 48, 12, 15, 8, 29


@dataclass(frozen=True, slots=True)
class Box:
    index: int
    node: Node
    column: int
    x: int
    y: int
    w: int
    h: int
    #: (text, class) lines: the kind, the id wrapped, the label wrapped.
    lines: tuple[tuple[str, str], ...]
    root: bool


@dataclass(frozen=True, slots=True)
class Wire:
    src: int
    dst: int
    path: str
    label: str
    text: str


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    boxes: tuple[Box, ...]
    wires: tuple[Wire, ...]
    columns: tuple[tuple[Box, ...], ...] = field(default_factory=tuple)


def columns_of(graph: Graph) -> dict[str, int]:
    """Each node's column: at least its kind's rank, and right of everything leading to
    it (derived leases go right of their parents). Bounded, so a cycle cannot loop."""
    column = {n.key: KIND_RANK.get(n.kind, 5) for n in graph.nodes}
    for _ in range(len(graph.nodes)):
        moved = False
        for edge in graph.edges:
            if edge.src in column and edge.dst in column and column[edge.dst] <= column[edge.src]:
                column[edge.dst] = column[edge.src] + 1
                moved = True
        if not moved:
            break
    used = sorted(set(column.values()))
    packed = {c: i for i, c in enumerate(used)}
    return {k: packed[c] for k, c in column.items()}


def layout(graph: Graph) -> Layout:
    """Columns by kind, left to right; nodes stacked in each, ordered by where what
    leads to them sits (fewer crossing edges); edges as curves."""
    column = columns_of(graph)
    count = max(column.values(), default=-1) + 1
    preds: dict[str, list[str]] = {}
    for edge in graph.edges:
        preds.setdefault(edge.dst, []).append(edge.src)
    order = {n.key: i for i, n in enumerate(graph.nodes)}
    centre: dict[str, float] = {}
    boxes: list[Box] = []
    heights = [0] * count
    for col in range(count):
        members = [n for n in graph.nodes if column[n.key] == col]

        def anchor(node: Node) -> tuple[float, int]:
            seen = [centre[p] for p in preds.get(node.key, ()) if p in centre]
            return (sum(seen) / len(seen) if seen else float("inf"), order[node.key])

        for node in sorted(members, key=anchor) if col else members:
            lines = [(node.kind, "ln-kind")]
            lines += [(part, "ln-id") for part in _wrap(node.id)]
            lines += [(part, "ln-label") for part in _wrap(node.label)] if node.label else []
            h = 2 * _PAD + _LINE * len(lines)
            x, y = col * (_BOX_W + _COL_GAP) + 4, heights[col] + 4
            box = Box(
                order[node.key], node, col, x, y, _BOX_W, h, tuple(lines), node.key == graph.root
            )
            boxes.append(box)
            centre[node.key] = y + h / 2
            heights[col] += h + _ROW_GAP
    by_key = {b.node.key: b for b in boxes}
    wires: list[Wire] = []
    for edge in graph.edges:
        a, z = by_key.get(edge.src), by_key.get(edge.dst)
        if a is None or z is None:
            continue
        x1, y1 = a.x + a.w, a.y + a.h // 2
        x2, y2 = z.x, z.y + z.h // 2
        bend = max(30, (x2 - x1) // 2)
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
        text = f"{a.node.kind} {a.node.id} {edge.label} {z.node.kind} {z.node.id}"
        wires.append(Wire(a.index, z.index, path, edge.label, text))
    width = len(heights) * (_BOX_W + _COL_GAP) - _COL_GAP + 8 if heights else 8
    height = max(heights, default=0) + 8
    cols = tuple(tuple(b for b in boxes if b.column == c) for c in range(count))
    return Layout(max(width, 8), height, tuple(boxes), tuple(wires), cols)


def _wrap(text: str) -> list[str]:
    """Lines of at most `_WRAP` characters that join back to `text`, every character
    kept: a line ends after a space where it can, else anywhere."""
    lines: list[str] = []
    while len(text) > _WRAP:
        cut = text.rfind(" ", 0, _WRAP) + 1 or _WRAP
        lines.append(text[:cut])
        text = text[cut:]
    return [*lines, text] if text or not lines else lines


# -- loading (the only I/O) --
def _subject(query: Mapping[str, str]) -> tuple[str, str, str]:
    given = [(k, query.get(k, "").strip()) for k in SUBJECTS if query.get(k, "").strip()]
    if not given:
        raise LineageQueryError(
            "Say whose lineage to show: give one of identity, lease, task, finding, profile"
            " or target (for example ?identity=ID)."
        )
    if len(given) > 1:
        asked = ", ".join(k for k, _ in given)
        raise LineageQueryError(f"Give only one of {', '.join(SUBJECTS)}; this asked for {asked}.")
    kind, object_id = given[0]
    if len(object_id) > 512:
        raise LineageQueryError(f"{kind}: at most 512 characters")
    direction = query.get("direction", "").strip() or REACH
    if direction not in (REACH, REACHERS):
        raise LineageQueryError("direction: must be reach or reachers")
    if direction == REACHERS and kind not in ("identity", "profile", "target"):
        raise LineageQueryError(
            "direction: reachers (who can reach this?) is for an identity, a profile or a target"
        )
    return kind, object_id, direction


def _newest(leases: Iterable[Lease]) -> list[Lease]:
    return sorted(leases, key=lambda lease: lease.issued_at, reverse=True)


def _identity_facts(ctx: Ctx, identity: Identity) -> Facts:
    node, scope = ctx.node, ctx.principal.owner_scope()
    more: list[str] = []
    with node.store.read() as tx:
        live = tx.find_leases(
            LeaseFilter(identity_id=identity.id, states=_LIVE_FIRST, limit=_LEASE_SCAN)
        )
        ended = tx.find_leases(
            LeaseFilter(identity_id=identity.id, states=_ENDED, limit=_LEASE_SCAN)
        )
        ordered = _newest(live) + sorted(
            ended, key=lambda lease: lease.ended_at or lease.issued_at, reverse=True
        )
        leases = ordered[:MAX_LEASES]
        if len(ordered) > MAX_LEASES:
            plus = "+" if len(live) == _LEASE_SCAN or len(ended) == _LEASE_SCAN else ""
            more.append(
                f"and {len(ordered) - MAX_LEASES}{plus} more leases (the {MAX_LEASES} shown"
                " are the newest live ones first, then the most recently ended)"
            )
        active = tx.list_tasks(
            TaskFilter(identity_id=identity.id, status="active", limit=_LEASE_SCAN)
        )
        recent = tx.list_tasks(TaskFilter(identity_id=identity.id, status="ended", limit=200))
        tasks = sorted(active, key=lambda t: t.created_at, reverse=True) + sorted(
            recent, key=lambda t: t.ended_at or t.created_at, reverse=True
        )
        wanted = {lease.task_id for lease in leases if lease.task_id}
        chosen = [t for t in tasks if t.id in wanted]
        chosen += [t for t in tasks if t.id not in wanted][: max(0, MAX_TASKS - len(chosen))]
        if len(tasks) > len(chosen):
            more.append(f"and {len(tasks) - len(chosen)} more tasks (active and recent shown)")
        have = {t.id for t in chosen}
        chosen += [t for t in (tx.get_task(i) for i in wanted - have) if t is not None]
    findings = node.govern.findings(
        FindingFilter(identity=identity.id, owner_in=scope, state="open", limit=MAX_FINDINGS + 1)
    )
    if len(findings) > MAX_FINDINGS:
        more.append(f"and more open findings (the first {MAX_FINDINGS} shown)")
    statics = tuple(c for c in node.statics.all() if identity.id in c.readers)
    return Facts(
        leases=tuple(leases),
        tasks=tuple(chosen),
        findings=tuple(findings[:MAX_FINDINGS]),
        statics=statics,
        more=tuple(more),
    )


def _lease_facts(ctx: Ctx, lease: Lease) -> Facts:
    """The lease, its ancestry, and its descendants (breadth first, bounded)."""
    more: list[str] = []
    with ctx.node.store.read() as tx:
        chain = [lease]
        while chain[0].parent_id and len(chain) <= MAX_ANCESTORS:
            parent = tx.get_lease(chain[0].parent_id)
            if parent is None or parent.owner_id != lease.owner_id:
                break
            chain.insert(0, parent)
        found = {x.id: x for x in chain}
        frontier = [lease.id]
        while frontier and len(found) < MAX_LEASES:
            children = tx.find_leases(
                LeaseFilter(
                    parent_ids=tuple(frontier), states=tuple(LeaseState), limit=MAX_LEASES + 1
                )
            )
            frontier = []
            for child in _newest(children):
                if child.id in found:
                    continue
                if len(found) >= MAX_LEASES:
                    more.append("and more derived leases (the newest shown)")
                    break
                found[child.id] = child
                frontier.append(child.id)
        task_ids = {x.task_id for x in found.values() if x.task_id}
        tasks = [t for t in (tx.get_task(i) for i in sorted(task_ids)) if t is not None]
    return Facts(leases=tuple(found.values()), tasks=tuple(tasks), more=tuple(dict.fromkeys(more)))


def _task_facts(ctx: Ctx, task: Task) -> Facts:
    with ctx.node.store.read() as tx:
        leases = tx.find_leases(
            LeaseFilter(task_id=task.id, states=tuple(LeaseState), limit=_LEASE_SCAN)
        )
    ordered = _newest(leases)
    more = (
        (f"and {len(ordered) - MAX_LEASES} more leases of the task (the newest shown)",)
        if len(ordered) > MAX_LEASES
        else ()
    )
    return Facts(leases=tuple(ordered[:MAX_LEASES]), tasks=(task,), more=more)


def _load(ctx: Ctx, view: EstateView, kind: str, object_id: str, direction: str) -> Facts:
    """What the graph is built from, for what the principal may see (404 otherwise)."""
    node, principal = ctx.node, ctx.principal
    if kind == "identity":
        identity: Identity = visible_identity(principal, view, object_id)
        return Facts() if direction == REACHERS else _identity_facts(ctx, identity)
    if kind == "lease":
        with node.store.read() as tx:
            lease = tx.get_lease(object_id)
        if lease is None or not principal.may_see_owner(lease.owner_id):
            raise NotFoundError(f"no lease {object_id!r}")
        return _lease_facts(ctx, lease)
    if kind == "task":
        with node.store.read() as tx:
            task = tx.get_task(object_id)
        runner = view.identities.get(task.identity_id) if task is not None else None
        if task is None or runner is None or not principal.may_see_owner(runner.owner_id):
            raise NotFoundError(f"no task {object_id!r}")
        return _task_facts(ctx, task)
    if kind == "finding":
        # 404 (UnknownGovernObject) for one the principal may not see.
        finding = node.govern.finding(object_id, principal.owner_scope())
        subject = view.identities.get(str(finding.get("identity")))
        if subject is None or not principal.may_see_owner(subject.owner_id):
            return Facts(findings=(finding,))
        facts = _identity_facts(ctx, subject)
        others = tuple(f for f in facts.findings if f.get("id") != object_id)
        return Facts(
            leases=facts.leases,
            tasks=facts.tasks,
            findings=(finding, *others),
            statics=facts.statics,
            more=facts.more,
        )
    if kind == "profile":
        if object_id not in view.profiles:
            raise NotFoundError(f"no profile {object_id!r}")
        return Facts()
    known = {p.target for p in view.profiles.values() if p.target} | set(node.targets.kinds())
    statics = tuple(
        c
        for c in node.statics.all()
        if c.target == object_id and _may_see_static(view, principal, c)
    )
    if object_id not in known and not statics:
        raise NotFoundError(f"no target {object_id!r}")
    return Facts(statics=statics)


def _risk(ctx: Ctx, kind: str, object_id: str, facts: Facts) -> dict[str, Any] | None:
    """The blast radius of the identity an identity or finding page is about."""
    identity_id = object_id if kind == "identity" else None
    if kind == "finding" and facts.findings:
        identity_id = str(facts.findings[0].get("identity"))
        identity = ctx.node.view.current.identities.get(identity_id)
        if identity is None or not ctx.principal.may_see_owner(identity.owner_id):
            return None
    if identity_id is None:
        return None
    risk: dict[str, Any] | None = ctx.node.govern.risk([identity_id]).get(identity_id)
    return None if risk is None else {"identity": identity_id, **risk}


@pages.view("/lineage")
def lineage(ctx: Ctx) -> Response:
    """The lineage and blast radius of one identity, lease, task, finding, profile or
    target, as a graph to follow by clicking and as tables."""
    kind, object_id, direction = _subject(ctx.query)
    view: EstateView = ctx.node.view.current
    facts = _load(ctx, view, kind, object_id, direction)
    graph = build_lineage(view, kind, object_id, direction, facts, ctx.principal.may_see_owner)
    placed = layout(graph)
    nodes = {n.key: n for n in graph.nodes}
    rows = [
        (
            box,
            [(e.label, nodes[e.dst]) for e in graph.out_of(box.node.key)],
            [(e.label, nodes[e.src]) for e in graph.into(box.node.key)],
        )
        for column in placed.columns
        for box in column
    ]
    # "Who can reach this target?": the subject itself when it is one, else what it reaches.
    # Targets first: from a profile, the next step is its target.
    reachers = [
        ("target", n.id) for n in graph.of_kind("target") if (kind, n.id) != ("target", object_id)
    ]
    if kind in ("profile", "target", "identity"):
        reachers.append((kind, object_id))
    return ctx.render(
        "lineage.html",
        kind=kind,
        noun=kind,
        subject_id=object_id,
        direction=direction,
        graph=graph,
        placed=placed,
        rows=rows,
        reach_href=lineage_url(kind, object_id),
        reachers=[(k, i, lineage_url(k, i, REACHERS)) for k, i in reachers],
        risk=_risk(ctx, kind, object_id, facts),
        REACH=REACH,
        REACHERS=REACHERS,
    )


def _may_see_static(view: EstateView, principal: Any, credential: StaticCredential) -> bool:
    """Static secrets are admins' and auditors' (GET /v1/credentials); an owner sees one
    only through a reader of its own."""
    if principal.owner_scope() is None:
        return True
    readers = (view.identities.get(r) for r in credential.readers)
    return any(i is not None and principal.may_see_owner(i.owner_id) for i in readers)
