"""Who may call which route: one table, read by the router, checked when the app is built.

Every route names the kinds of caller it admits and whether it changes state. A route
that changes state can never admit the auditor role: read-only roles are read-only by
construction, not by each handler remembering to check. Routes that name an object in
their path (a task, a lease, an identity) say so, and an `owner:` token reaches only its
own owners' objects; anything else is answered as if the object did not exist.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether._internal.tokens import is_well_formed
from tether.auth import Forbidden, Principal, Unauthenticated
from tether.errors import NotFoundError
from tether.scan._github import SIGNATURE_HEADER

#: Bodies a route accepts by default; the estate is the one large document.
SMALL_BODY = 256 * 1024
ESTATE_BODY = 16 * 1024 * 1024
#: Reports of found secrets: batches of up to 2,000.
EXPOSURES_BODY = 4 * 1024 * 1024
#: AuthZEN batches of up to 1,000 evaluations.
AUTHZEN_BODY = 1024 * 1024


class Who(enum.StrEnum):
    """A kind of caller, by what it presents."""

    #: Nothing needed: health, discovery, init and unseal, or routes whose proof is in the
    #: body (RFC 8693 `subject_token`, RFC 7009 possession of the token given up).
    ANYONE = "anyone"
    ADMIN = "admin"
    AUDITOR = "auditor"
    #: An `owner:<id>` token, limited to that owner's identities and their objects.
    OWNER = "owner"
    INTROSPECT = "introspect"
    #: Feeds usage evidence (POST /v1/usage): cloud audit-log shippers.
    USAGE = "usage"
    #: A task token; where the path names a task or lease, the token of that task.
    TASK = "task"
    #: An attestation JWT or a one-time join token, verified by issuance.
    WORKLOAD = "workload"
    #: Reports found secrets (POST /v1/exposures): scanners, partners' relays.
    EXPOSURE = "exposure"
    #: Administers confidentiality keys (create, rotate, configure, ask to delete); never
    #: uses them: a key's use is a workload's task token, decided by policy.
    KEY_ADMIN = "key-admin"
    #: Votes on the approval requests of dual control (tether.keys).
    KEY_APPROVER = "key-approver"
    #: Asks AuthZEN decisions (tether.authzen): a `pdp:<application>` or `pdp` token.
    PDP = "pdp"
    #: A partner's signed alert (GitHub secret scanning): no bearer token; the
    #: signature over the body, named by PARTNER_SIGNATURE, is verified by the handler.
    PARTNER = "partner"


#: The header that makes a request a signed partner alert.
PARTNER_SIGNATURE = SIGNATURE_HEADER


_ROLE_OF: Mapping[str, Who] = {
    "admin": Who.ADMIN,
    "auditor": Who.AUDITOR,
    "introspect": Who.INTROSPECT,
    "usage": Who.USAGE,
    "exposure": Who.EXPOSURE,
    "key-admin": Who.KEY_ADMIN,
    "key-approver": Who.KEY_APPROVER,
}


class Subject(enum.StrEnum):
    """The object a route's path names, for owner and task scoping."""

    TASK = "task_id"
    LEASE = "lease_id"
    IDENTITY = "identity_id"


@dataclass(frozen=True, slots=True)
class Rule:
    who: frozenset[Who]
    changes_state: bool
    subject: Subject | None = None
    body_limit: int = SMALL_BODY

    def describe(self) -> str:
        return " or ".join(sorted(w.value for w in self.who))


def _rule(
    *who: Who,
    writes: bool,
    subject: Subject | None = None,
    body_limit: int = SMALL_BODY,
) -> Rule:
    return Rule(frozenset(who), writes, subject, body_limit)


_U = Who.USAGE
_KA, _KP = Who.KEY_ADMIN, Who.KEY_APPROVER
_A, _R, _O, _I, _T, _W, _ANY = (
    Who.ADMIN,
    Who.AUDITOR,
    Who.OWNER,
    Who.INTROSPECT,
    Who.TASK,
    Who.WORKLOAD,
    Who.ANYONE,
)

#: (method, path) → rule. The router refuses to build an app with a route missing here.
ROUTES: Mapping[tuple[str, str], Rule] = {
    # -- system --
    ("GET", "/v1/sys/health"): _rule(_ANY, writes=False),
    ("GET", "/v1/sys/status"): _rule(_ANY, writes=False),
    ("POST", "/v1/sys/init"): _rule(_ANY, writes=True),
    ("POST", "/v1/sys/unseal"): _rule(_ANY, writes=True),
    ("POST", "/v1/sys/seal"): _rule(_A, writes=True),
    ("POST", "/v1/sys/rotate"): _rule(_A, writes=True),
    ("GET", "/openapi.json"): _rule(_ANY, writes=False),
    ("GET", "/metrics"): _rule(_A, _R, writes=False),
    # -- API tokens --
    ("POST", "/v1/tokens"): _rule(_A, writes=True),
    ("GET", "/v1/tokens"): _rule(_A, writes=False),
    ("DELETE", "/v1/tokens/{token_id}"): _rule(_A, writes=True),
    # -- estate and inventory --
    ("GET", "/v1/estate/schema"): _rule(_A, _R, _O, _I, writes=False),
    ("POST", "/v1/estate/apply"): _rule(_A, writes=True, body_limit=ESTATE_BODY),
    ("GET", "/v1/identities"): _rule(_A, _R, _O, writes=False),
    ("GET", "/v1/identities/{identity_id}"): _rule(
        _A, _R, _O, writes=False, subject=Subject.IDENTITY
    ),
    # -- audit --
    ("GET", "/v1/audit"): _rule(_A, _R, writes=False),
    ("GET", "/v1/audit/verify"): _rule(_A, _R, writes=False),
    ("GET", "/v1/audit/export"): _rule(_A, _R, writes=False),
    ("GET", "/v1/alerts"): _rule(_A, _R, writes=False),
    # Computes the HMAC a value would have in the log; stores nothing.
    ("POST", "/v1/audit/hmac"): _rule(_A, _R, writes=False),
    # -- OAuth --
    ("GET", "/.well-known/openid-configuration"): _rule(_ANY, writes=False),
    ("GET", "/.well-known/jwks.json"): _rule(_ANY, writes=False),
    ("POST", "/oauth2/token"): _rule(_ANY, writes=True),
    ("POST", "/oauth2/introspect"): _rule(_A, _I, writes=False),
    ("POST", "/oauth2/revoke"): _rule(_ANY, writes=True),
    # -- tasks --
    ("POST", "/v1/tasks"): _rule(_W, writes=True),
    ("POST", "/v1/agents/check"): _rule(_A, _I, writes=False),
    ("GET", "/v1/tasks"): _rule(_A, _R, _O, writes=False),
    ("GET", "/v1/tasks/{task_id}"): _rule(_A, _R, _O, writes=False, subject=Subject.TASK),
    ("POST", "/v1/tasks/{task_id}/end"): _rule(_A, _O, _T, writes=True, subject=Subject.TASK),
    ("POST", "/v1/join-tokens"): _rule(_A, writes=True),
    # -- leases --
    ("GET", "/v1/leases"): _rule(_A, _R, _O, writes=False),
    ("GET", "/v1/leases/{lease_id}"): _rule(_A, _R, _O, writes=False, subject=Subject.LEASE),
    ("POST", "/v1/leases/{lease_id}/renew"): _rule(_A, _T, writes=True, subject=Subject.LEASE),
    # Owners only by `owner` naming one of their own (checked against the body).
    ("POST", "/v1/leases/revoke"): _rule(_A, _O, writes=True),
    # -- target systems --
    ("POST", "/v1/targets"): _rule(_A, writes=True),
    ("GET", "/v1/targets"): _rule(_A, _R, writes=False),
    ("GET", "/v1/targets/{name}/health"): _rule(_A, _R, writes=False),
    ("POST", "/v1/targets/{name}/rotate-root"): _rule(_A, writes=True),
    ("POST", "/v1/creds/{profile_id}"): _rule(_W, _T, writes=True),
    # -- static secrets --
    ("POST", "/v1/credentials"): _rule(_A, writes=True),
    ("GET", "/v1/credentials"): _rule(_A, _R, writes=False),
    # A reader identity's task token gets the secret; admins and auditors its metadata.
    ("GET", "/v1/credentials/{credential_id}"): _rule(_A, _R, _T, writes=False),
    ("POST", "/v1/credentials/{credential_id}/rotate"): _rule(_A, writes=True),
    ("POST", "/v1/credentials/{credential_id}/exposed"): _rule(_A, writes=True),
    # Records use of an old version as an alert: evidence, by the checking system.
    ("POST", "/v1/credentials/{credential_id}/verify"): _rule(_A, _I, writes=True),
    # -- governance --
    ("POST", "/v1/usage"): _rule(_A, _U, writes=True, body_limit=ESTATE_BODY),
    ("GET", "/v1/findings"): _rule(_A, _R, _O, writes=False),
    ("POST", "/v1/findings/evaluate"): _rule(_A, writes=True),
    ("POST", "/v1/findings/{finding_id}/assign"): _rule(_A, _O, writes=True),
    ("GET", "/v1/identities/{identity_id}/findings"): _rule(
        _A, _R, _O, writes=False, subject=Subject.IDENTITY
    ),
    ("GET", "/v1/reviews"): _rule(_A, _R, _O, writes=False),
    ("POST", "/v1/reviews"): _rule(_A, writes=True),
    ("GET", "/v1/reviews/{campaign_id}"): _rule(_A, _R, _O, writes=False),
    ("GET", "/v1/reviews/{campaign_id}/export"): _rule(_A, _R, _O, writes=False),
    # Owners decide their own identities' items (checked against the item).
    ("POST", "/v1/reviews/items/{item_id}/decide"): _rule(_A, _O, writes=True),
    ("GET", "/v1/exceptions"): _rule(_A, _R, _O, writes=False),
    # Owners request waivers for their identities; another principal approves.
    ("POST", "/v1/exceptions"): _rule(_A, _O, writes=True),
    ("POST", "/v1/exceptions/{exception_id}/approve"): _rule(_A, writes=True),
    ("POST", "/v1/exceptions/{exception_id}/revoke"): _rule(_A, writes=True),
    ("GET", "/v1/reports/evidence"): _rule(_A, _R, writes=False),
    ("GET", "/v1/reports/migration"): _rule(_A, _R, writes=False),
    ("GET", "/v1/sinks/{sink_id}/key"): _rule(_A, writes=False),
    # -- discovery --
    ("POST", "/v1/exposures"): _rule(
        _A, Who.EXPOSURE, Who.PARTNER, writes=True, body_limit=EXPOSURES_BODY
    ),
    ("GET", "/v1/exposures/key"): _rule(_A, Who.EXPOSURE, writes=False),
    # -- workload identity --
    # The bundle and the CRLs are public, like JWKS: relying parties fetch them.
    ("GET", "/v1/spiffe/bundle"): _rule(_ANY, writes=False),
    ("GET", "/v1/spiffe/crl"): _rule(_ANY, writes=False),
    ("GET", "/v1/spiffe/ca"): _rule(_A, _R, writes=False),
    ("POST", "/v1/spiffe/ca/rotate"): _rule(_A, writes=True),
    # -- confidentiality keys: administered by key admins, used by workloads' task
    # tokens (never by an API token), approved by key approvers --
    ("POST", "/v1/keys"): _rule(_A, _KA, writes=True),
    ("GET", "/v1/keys"): _rule(_A, _R, _KA, _KP, writes=False),
    ("GET", "/v1/keys/{name}"): _rule(_A, _R, _KA, _KP, writes=False),
    ("PATCH", "/v1/keys/{name}"): _rule(_A, _KA, writes=True),
    ("DELETE", "/v1/keys/{name}"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/rotate"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/trim"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/deletion/cancel"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/escrow/recovery"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/escrow/export"): _rule(_A, _KA, writes=True),
    ("POST", "/v1/keys/{name}/escrow/verify"): _rule(_A, _KA, _KP, writes=False),
    **{
        ("POST", f"/v1/keys/{{name}}/{use}"): _rule(_T, writes=True)
        for use in ("encrypt", "decrypt", "rewrap", "datakey", "sign", "verify", "hmac")
    },
    ("GET", "/v1/approvals"): _rule(_A, _R, _KA, _KP, writes=False),
    ("GET", "/v1/approvals/{approval_id}"): _rule(_A, _R, _KA, _KP, writes=False),
    ("POST", "/v1/approvals/{approval_id}/approve"): _rule(_A, _KP, writes=True),
    ("POST", "/v1/approvals/{approval_id}/deny"): _rule(_A, _KP, writes=True),
    # -- AuthZEN: decisions change nothing (they are audited as summaries) --
    ("GET", "/.well-known/authzen-configuration"): _rule(_ANY, writes=False),
    ("POST", "/access/v1/evaluation"): _rule(Who.PDP, writes=False),
    ("POST", "/access/v1/evaluations"): _rule(Who.PDP, writes=False, body_limit=AUTHZEN_BODY),
    ("POST", "/access/v1/search/subject"): _rule(Who.PDP, writes=False),
    ("POST", "/access/v1/search/resource"): _rule(Who.PDP, writes=False),
    ("POST", "/access/v1/search/action"): _rule(Who.PDP, writes=False),
}


def check_table(routes: Mapping[tuple[str, str], Rule]) -> None:
    """Refuse a table that would let a read-only role change state."""
    for (method, path), rule in routes.items():
        if method == "GET" and rule.changes_state:
            raise AssertionError(f"{method} {path}: a GET must not change state")
        if rule.changes_state and Who.AUDITOR in rule.who:
            raise AssertionError(f"{method} {path}: the auditor role is read-only")
        if Who.ANYONE in rule.who and len(rule.who) > 1:
            raise AssertionError(f"{method} {path}: `anyone` admits every caller already")


check_table(ROUTES)


def rule_for(method: str, path: str) -> Rule:
    try:
        return ROUTES[(method, path)]
    except KeyError:
        raise LookupError(
            f"{method} {path} has no entry in tether.api._access.ROUTES: say who may call it"
        ) from None


def bearer_of(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass(frozen=True, slots=True)
class Admitted:
    """What the table admitted: an API token's principal, a task token, or neither
    (public routes, and workload routes whose evidence issuance verifies)."""

    principal: Principal | None = None
    #: A task token's subject (tether.issuance.Subject), already matched to the path.
    task_subject: Any = None

    @property
    def actor(self) -> str:
        """Who the audit trail names: the task's workload, or the API token."""
        if self.task_subject is not None:
            return f"workload:{self.task_subject.identity.id}"
        if self.principal is None:
            raise Unauthenticated("a task token or an API token is required")
        return self.principal.actor


#: How each role of an API token is written, to tell a caller what a route needs.
_ROLE_NAMES: Mapping[Who, str] = {
    Who.ADMIN: "admin",
    Who.AUDITOR: "auditor",
    Who.INTROSPECT: "introspect",
    Who.USAGE: "usage",
    Who.EXPOSURE: "exposure",
    Who.KEY_ADMIN: "key-admin",
    Who.KEY_APPROVER: "key-approver",
    Who.OWNER: "owner:<id>",
    Who.PDP: "pdp or pdp:<application>",
}


def _needed(rule: Rule) -> str:
    """What a caller must present, in words: "an API token with the admin role"."""
    roles = " or ".join(_ROLE_NAMES[who] for who in sorted(rule.who) if who in _ROLE_NAMES)
    api_token = f"an API token with the {roles} role"
    return f"a task token or {api_token}" if Who.TASK in rule.who else api_token


def admit(node: Any, rule: Rule, bearer: str | None, path_params: Mapping[str, str]) -> Admitted:
    """Apply `rule` to the caller presenting `bearer`. Raises 401, 403 or 404."""
    if Who.ANYONE in rule.who:
        return Admitted()
    if bearer is None and Who.WORKLOAD in rule.who:
        return Admitted()  # a client certificate over mTLS may be the evidence: issuance decides
    if bearer is None:
        raise Unauthenticated(
            f"a bearer token is required ({rule.describe()}): set TETHER_TOKEN or send one"
        )
    if Who.WORKLOAD in rule.who and not is_well_formed(bearer):
        return Admitted()  # an attestation JWT: issuance verifies it
    try:
        principal: Principal = node.auth.authenticate(bearer)
    except Unauthenticated as refused:
        if Who.WORKLOAD in rule.who:
            return Admitted()  # a join token or task token: issuance decides
        if Who.TASK not in rule.who or not is_well_formed(bearer):
            raise node.auth.refusal(bearer, refused, _needed(rule)) from None
        subject = node.issuance.task_of(bearer)
        _task_may_reach(node, rule, subject, path_params)
        return Admitted(task_subject=subject)
    return admit_principal(node, rule, principal, path_params)


def admit_principal(
    node: Any, rule: Rule, principal: Principal, path_params: Mapping[str, str]
) -> Admitted:
    """Apply `rule` to an API token's `principal` (from a bearer, or the dashboard's
    session). Raises 403, or 404 for an owner reaching another owner's object."""
    kinds = {_ROLE_OF[r] for r in principal.roles if r in _ROLE_OF}
    if principal.owned():
        kinds.add(Who.OWNER)
    if any(r == "pdp" or r.startswith("pdp:") for r in principal.roles):
        kinds.add(Who.PDP)
    allowed = kinds & rule.who
    if not allowed:
        raise Forbidden(f"this needs {rule.describe()}; the token has {', '.join(principal.roles)}")
    if allowed == {Who.OWNER} and rule.subject is not None:
        _owner_may_reach(node, principal, rule.subject, path_params)
    return Admitted(principal=principal)


def _owner_of(node: Any, subject: Subject, object_id: str) -> str | None:
    """The owner of the object the path names, or None when there is no such object."""
    with node.store.read() as tx:
        if subject is Subject.LEASE:
            lease = tx.get_lease(object_id)
            return None if lease is None else str(lease.owner_id)
        identity_id = object_id
        if subject is Subject.TASK:
            task = tx.get_task(object_id)
            if task is None:
                return None
            identity_id = task.identity_id
        spec = tx.get_identity(identity_id)
    return None if spec is None else str(spec["owner"])


def _owner_may_reach(
    node: Any, principal: Principal, subject: Subject, path_params: Mapping[str, str]
) -> None:
    object_id = path_params[subject.value]
    owner = _owner_of(node, subject, object_id)
    if owner is None or not principal.may_see_owner(owner):
        # The same answer as for a missing object: an owner learns nothing of others'.
        raise NotFoundError(f"no {subject.name.lower()} {object_id!r}")


def may_revoke(node: Any, principal: Principal, target: Any) -> None:
    """Whether `principal` may revoke `target` (a tether.lease.RevokeTarget), for the API
    and the dashboard alike: an admin anything; an owner what it owns (by owner, or a
    lease, task or identity of its own); nobody else. Raises Forbidden."""
    if principal.is_admin:
        return
    owned = principal.owned()
    if target.owner_id is not None:
        allowed = target.owner_id in owned
    else:
        named = [
            (subject, value)
            for subject, value in (
                (Subject.LEASE, target.lease_id),
                (Subject.TASK, target.task_id),
                (Subject.IDENTITY, target.identity_id),
            )
            if value is not None
        ]
        allowed = len(named) == 1 and _owner_of(node, *named[0]) in owned
    if not allowed:
        raise Forbidden(
            "owners may revoke only what they own: by `owner` naming one of their own, or a"
            " lease, task or identity of theirs"
        )


def _task_may_reach(node: Any, rule: Rule, subject: Any, path_params: Mapping[str, str]) -> None:
    task = subject.task
    if rule.subject is Subject.TASK:
        if task is None or task.id != path_params[Subject.TASK.value]:
            raise Forbidden("this task token belongs to another task")
    elif rule.subject is Subject.LEASE:
        with node.store.read() as tx:
            lease = tx.get_lease(path_params[Subject.LEASE.value])
        if lease is None or task is None or lease.task_id != task.id:
            raise NotFoundError(f"no lease {path_params[Subject.LEASE.value]!r} for this caller")
