"""The policy decision point: the estate's applications (and Tether's own), compiled once
per estate version, deciding from memory; searches paged with opaque tokens; decisions
tallied for the audit summary.

Which application a caller reaches is its API token's role: `pdp:<application>` that
application (`pdp:tether`: Tether's identities and profiles), bare `pdp` the one
application the estate declares (never `tether`: its searches would list the inventory),
refused with the role to use when there are none or several.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tether._internal.canonical import canonical_json
from tether.audit import AuditLog, AuditUnavailable
from tether.authzen._audit import DecisionTally, summary_events
from tether.authzen._compile import CompiledApplication
from tether.authzen._model import (
    TETHER_APPLICATION,
    Action,
    Application,
    AuditSettings,
    Evaluation,
    Party,
    Verdict,
)
from tether.authzen._tether import TetherApplication
from tether.authzen.errors import BadEvaluationRequest, PdpForbidden
from tether.policy import PolicyEngine
from tether.store import Store, StoreError

log = logging.getLogger("tether.authzen")

EXECUTE_ALL = "execute_all"
DENY_ON_FIRST_DENY = "deny_on_first_deny"
PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"
SEMANTICS = (EXECUTE_ALL, DENY_ON_FIRST_DENY, PERMIT_ON_FIRST_PERMIT)
PDP_ROLE = "pdp"
#: Results per search page when the request gives no (or a zero) limit, and at most.
DEFAULT_LIMIT = 1000
#: Candidates one search request evaluates at most; past it the page ends early, with a
#: next_token (work per request is bounded whatever the estate's size).
SCAN_LIMIT = 10_000
_CHUNK = 512
_INVALID = Evaluation(
    Party("(invalid)", "(invalid)"), Action("(invalid)"), Party("(invalid)", "(invalid)")
)


class Decider(Protocol):
    """An application, compiled: what the PDP asks of it."""

    @property
    def id(self) -> str: ...
    def evaluate_many(self, evaluations: Sequence[Evaluation]) -> list[Verdict]: ...
    def candidates(self, kind: str, type_: str) -> Sequence[str]: ...


class _Broken:
    """An application that failed to compile: everything is denied (fail closed)."""

    def __init__(self, app_id: str, error: str) -> None:
        self.id = app_id
        self._reason = f"application {app_id} failed to compile; denied: {error}"

    def evaluate_many(self, evaluations: Sequence[Evaluation]) -> list[Verdict]:
        return [Verdict(False, (), (self._reason,))] * len(evaluations)

    def candidates(self, kind: str, type_: str) -> Sequence[str]:
        return ()


@dataclass(frozen=True, slots=True)
class Search:
    """A search: `kind` is subject, resource or action; the searched entity's id (and its
    properties) are ignored, as AuthZEN says."""

    kind: str
    subject: Party
    resource: Party
    action: Action | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    token: str | None = None
    limit: int | None = None

    def fingerprint(self) -> str:
        def party(p: Party, searched: bool) -> Any:
            return [p.type] if searched else [p.type, p.id, dict(p.properties)]

        query = [
            self.kind,
            party(self.subject, self.kind == "subject"),
            party(self.resource, self.kind == "resource"),
            None
            if self.action is None or self.kind == "action"
            else [self.action.name, dict(self.action.properties)],
            dict(self.context),
            self.limit,
        ]
        return hashlib.sha256(canonical_json(query).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SearchPage:
    #: Ids of subjects or resources, or action names.
    results: tuple[str, ...]
    #: "" when there is nothing after this page.
    next_token: str


def _token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}.{fingerprint}".encode()).decode().rstrip("=")


def _offset(token: str, fingerprint: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        offset_text, _, given = text.partition(".")
        offset = int(offset_text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadEvaluationRequest("page.token is not a token this PDP gave") from None
    if given != fingerprint or offset < 0:
        raise BadEvaluationRequest(
            "page.token belongs to another query: every entity, the context and page.limit "
            "must be those of the request that returned it"
        )
    return offset


@dataclass(frozen=True, slots=True)
class PdpParts:
    store: Store
    audit: AuditLog
    view: Callable[[], Any]
    policy: Callable[[], PolicyEngine | None]
    clock: Callable[[], dt.datetime]


class Pdp:
    """AuthZEN decisions and searches against the estate's applications. Thread-safe: the
    compiled applications are swapped whole on an estate change."""

    def __init__(self, parts: PdpParts) -> None:
        self._parts = parts
        self._tether = TetherApplication(parts.view, parts.policy, parts.clock)
        self._apps: Mapping[str, Decider] = {}
        self._settings: Mapping[str, AuditSettings] = {}
        self._tally = DecisionTally()

    # -- the estate --
    def update(self, view: Any) -> None:
        """Compile the view's applications (once per estate version)."""
        apps: dict[str, Decider] = {}
        settings: dict[str, AuditSettings] = {}
        for app_id, spec in sorted(getattr(view, "applications", {}).items()):
            try:
                application = Application.from_spec(spec)
                settings[app_id] = application.audit
                apps[app_id] = CompiledApplication.compile(application, f"applications[{app_id}]")
            except Exception as exc:  # fail closed: the application denies everything
                log.error("application %s failed to compile; denying its decisions", app_id)
                apps[app_id] = _Broken(app_id, str(exc))
        self._apps, self._settings = apps, settings

    @property
    def applications(self) -> tuple[str, ...]:
        """The declared applications' ids (Tether's own, `tether`, is always there too)."""
        return tuple(self._apps)

    def application_for(self, roles: Sequence[str]) -> str:
        """The application a token with these roles evaluates against; PdpForbidden says
        which role to use when there is none."""
        named = sorted({r.split(":", 1)[1] for r in roles if r.startswith(PDP_ROLE + ":")})
        if len(named) > 1:
            raise PdpForbidden(
                f"this token names several applications ({', '.join(named)}): "
                "a PDP token has one pdp:<application> role"
            )
        if named:
            app_id = named[0]
            if app_id != TETHER_APPLICATION and app_id not in self._apps:
                raise PdpForbidden(
                    f"the estate declares no application {app_id!r} (role pdp:{app_id})"
                )
            return app_id
        if PDP_ROLE not in roles:
            raise PdpForbidden("this needs an API token with the role pdp or pdp:<application>")
        declared = sorted(self._apps)
        if len(declared) == 1:
            return declared[0]
        if not declared:
            raise PdpForbidden(
                "the estate declares no application for role pdp; Tether's own identities "
                "and profiles need a token with the role pdp:tether"
            )
        raise PdpForbidden(
            f"the estate declares {len(declared)} applications ({', '.join(declared)}): "
            "role pdp is ambiguous, use a token with the role pdp:<application>"
        )

    def _decider(self, app_id: str) -> Decider:
        if app_id == TETHER_APPLICATION:
            return self._tether
        decider = self._apps.get(app_id)
        if decider is None:
            raise PdpForbidden(f"the estate declares no application {app_id!r}")
        return decider

    # -- deciding --
    def evaluate(self, app_id: str, evaluation: Evaluation, actor: str) -> Verdict:
        return self.evaluate_batch(app_id, [evaluation], actor)[0]

    def evaluate_batch(
        self,
        app_id: str,
        items: Sequence[Evaluation | Verdict],
        actor: str,
        semantic: str = EXECUTE_ALL,
    ) -> list[Verdict]:
        """Decide each item in order; an item that is already a Verdict could not be read
        and stays what it is (a deny with its reason). With `deny_on_first_deny` or
        `permit_on_first_permit` the answer ends at the first deny (or permit)."""
        if semantic not in SEMANTICS:
            raise BadEvaluationRequest(
                f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}"
            )
        decider = self._decider(app_id)
        evaluations = [item for item in items if isinstance(item, Evaluation)]
        decided = iter(decider.evaluate_many(evaluations) if evaluations else ())
        out: list[Verdict] = []
        asked: list[Evaluation] = []
        for item in items:
            verdict = next(decided) if isinstance(item, Evaluation) else item
            out.append(verdict)
            asked.append(item if isinstance(item, Evaluation) else _INVALID)
            if (semantic == DENY_ON_FIRST_DENY and not verdict.decision) or (
                semantic == PERMIT_ON_FIRST_PERMIT and verdict.decision
            ):
                break
        self._tally.add(
            app_id, actor, self._audit_settings(app_id), asked, out, self._parts.clock()
        )
        return out

    def _audit_settings(self, app_id: str) -> AuditSettings:
        return self._settings.get(app_id) or AuditSettings()

    # -- searching --
    def search(self, app_id: str, search: Search, actor: str) -> SearchPage:
        """The subjects, resources or actions permitted, one page at a time."""
        decider = self._decider(app_id)
        fingerprint = search.fingerprint()
        offset = 0 if not search.token else _offset(search.token, fingerprint)
        limit = min(search.limit or DEFAULT_LIMIT, DEFAULT_LIMIT)
        searched_type = {"subject": search.subject.type, "resource": search.resource.type}.get(
            search.kind, ""
        )
        candidates = decider.candidates(search.kind, searched_type)
        results: list[str] = []
        position = offset
        end = min(len(candidates), offset + SCAN_LIMIT)
        while position < end and len(results) < limit:
            chunk = candidates[position : min(end, position + _CHUNK)]
            verdicts = decider.evaluate_many([self._probe(search, c) for c in chunk])
            for n, (candidate, verdict) in enumerate(zip(chunk, verdicts, strict=True)):
                if verdict.decision:
                    results.append(candidate)
                    if len(results) == limit:
                        position += n + 1
                        break
            else:
                position += len(chunk)
        self._tally.searched(
            app_id, actor, self._audit_settings(app_id), search.kind, self._parts.clock()
        )
        more = position < len(candidates)
        return SearchPage(tuple(results), _token(position, fingerprint) if more else "")

    @staticmethod
    def _probe(search: Search, candidate: str) -> Evaluation:
        if search.kind == "subject":
            assert search.action is not None
            return Evaluation(
                Party(search.subject.type, candidate),
                search.action,
                search.resource,
                search.context,
            )
        if search.kind == "resource":
            assert search.action is not None
            return Evaluation(
                search.subject,
                search.action,
                Party(search.resource.type, candidate),
                search.context,
            )
        return Evaluation(search.subject, Action(candidate), search.resource, search.context)

    # -- the audit summary --
    def flush_audit(self, force: bool = False) -> int:
        """Write the summary entries whose window is over (every one with `force`); returns
        how many. Call it every few seconds and on stop. A store failure keeps them."""
        now = self._parts.clock()
        windows = self._tally.due(now, force)
        if not windows:
            return 0
        events = summary_events(windows)
        try:
            with self._parts.store.transaction() as tx:
                self._parts.audit.append(tx, events, now)
        except (StoreError, AuditUnavailable):
            log.warning("decision summaries could not be written; kept for the next flush")
            self._tally.restore(windows)
            return 0
        return len(events)
