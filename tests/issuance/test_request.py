"""The request being decided: as a policy request, an expiry bound, a pending lease and
an audit entry, computed from the request alone (no store, no clock)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from tests.policy.helpers import NOW, identity
from tether.estate import EstateView
from tether.issuance import IssuanceRequest, Subject
from tether.model import (
    KIND_CONTROL_DEFAULTS,
    Approval,
    Kind,
    Lease,
    LeaseState,
    Owner,
    Placement,
    Profile,
    Task,
    TaskStatus,
    Vendor,
)
from tether.policy import Decision

MINUTE = dt.timedelta(minutes=1)
IDENTITY = identity(
    id="agent-7",
    kind=Kind.AGENT,
    owner_id="team-a",
    justification="CHG-7",
    vendor_id="acme",
    approval=Approval(by="dana@example.com", expires_at=NOW + 40 * MINUTE),
)
PROFILE = Profile(id="orders", provider="jwt", max_ttl=dt.timedelta(hours=1), scopes=("r", "w"))
VIEW = EstateView(
    identities={IDENTITY.id: IDENTITY},
    owners={"team-a": Owner("team-a", "Team A", "a@example.com")},
    vendors={"acme": Vendor("acme", "Acme", NOW + dt.timedelta(days=30))},
    profiles={PROFILE.id: PROFILE},
)
TASK = Task(
    id="tsk_1",
    identity_id=IDENTITY.id,
    name="deploy",
    status=TaskStatus.ACTIVE,
    created_at=NOW,
    deadline=NOW + 30 * MINUTE,
    issuer_id="ci",
    claims={"repository": "acme/agent"},
)
TASK_LEASE = Lease(
    id="lse_task",
    identity_id=IDENTITY.id,
    owner_id="team-a",
    provider="task",
    issued_at=NOW - MINUTE,
    expires_at=TASK.deadline,
    state=LeaseState.ACTIVE,
    task_id=TASK.id,
    placement=Placement.of(IDENTITY),
)
SUBJECT = Subject.of_lease(IDENTITY, TASK_LEASE, TASK, "task-token")


def request(**changes: object) -> IssuanceRequest:
    base = IssuanceRequest(
        action="issue",
        subject=SUBJECT,
        profile=PROFILE,
        view=VIEW,
        now=NOW,
        ttl=dt.timedelta(hours=1),
        scopes=("r",),
        entitled=("r",),
        task=TASK,
        intent="triage ticket 9",
        source_ip="192.0.2.7",
        actor="user:kim",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_it_becomes_the_policy_request_with_the_kinds_controls_and_the_vendor() -> None:
    policy = request().policy_request()
    control = KIND_CONTROL_DEFAULTS[Kind.AGENT]
    assert policy.identity is IDENTITY and policy.profile is PROFILE
    assert (policy.action, policy.requested_scopes, policy.entitled_scopes) == (
        "issue",
        ("r",),
        ("r",),
    )
    assert policy.vendor == VIEW.vendors["acme"]
    assert policy.kind_max_ttl == control.max_ttl
    assert policy.attestation_required is control.attestation_required
    assert (policy.task_id, policy.task_name) == ("tsk_1", "deploy")
    assert (policy.attested, policy.issuer_id, dict(policy.claims)) == (
        True,
        "ci",
        {"repository": "acme/agent"},
    )
    assert (policy.intent, policy.source_ip, policy.actor) == (
        "triage ticket 9",
        "192.0.2.7",
        "user:kim",
    )
    assert policy.requested_ttl == dt.timedelta(hours=1) and policy.now == NOW


def test_the_bound_is_the_earliest_justification_and_says_which() -> None:
    # Agents are capped at 15 minutes: the kind wins over an hour asked and allowed.
    assert request().bound().name == "agent max_ttl"
    assert request().bound().at == NOW + 15 * MINUTE
    assert request(ttl=5 * MINUTE).bound().name == "requested ttl"
    early_task = replace(TASK, deadline=NOW + 2 * MINUTE)
    assert request(task=early_task).bound().at == NOW + 2 * MINUTE
    approval = replace(IDENTITY, approval=Approval("dana", NOW + 3 * MINUTE))
    subject = replace(SUBJECT, identity=approval)
    assert request(subject=subject).bound().name == "approval expiry"
    parent = replace(TASK_LEASE, id="lse_parent", expires_at=NOW + MINUTE)
    bound = request(parent=parent).bound()
    assert (bound.name, bound.at) == ("parent credential expiry", NOW + MINUTE)
    ending = EstateView(
        owners=VIEW.owners, vendors={"acme": Vendor("acme", "Acme", NOW + 4 * MINUTE)}
    )
    assert request(view=ending, task=None).bound().name == "vendor contract end"


def test_the_pending_lease_records_what_it_is_justified_for() -> None:
    bound = request().bound()
    lease = request().new_lease("lse_new", bound, audience="orders", target=None)
    assert lease.state is LeaseState.PENDING and lease.expires_at == bound.at
    assert (lease.parent_id, lease.task_id, lease.actor) == ("lse_task", "tsk_1", "user:kim")
    assert lease.placement == Placement("team-a", "prod", "eu-west-1", "acme")
    assert lease.scopes == ("r",) and lease.profile_id == "orders"


def test_the_audit_event_links_identity_owner_task_decision_and_bound() -> None:
    decision = Decision(True, ("tether:default",), ("permitted by tether:default",), (), {"a": 1})
    bound = request().bound()
    lease = request().new_lease("lse_new", bound, audience="orders", target=None)
    event = request().audit_event("token.exchange", decision, lease=lease, bound=bound)
    assert (event.action, event.actor, event.result) == (
        "token.exchange",
        "workload:agent-7",
        "allow",
    )
    assert (event.identity_id, event.owner_id, event.task_id) == ("agent-7", "team-a", "tsk_1")
    assert event.justification == "CHG-7"
    assert event.reason == "permitted by tether:default"
    assert event.details["bounded_by"] == "agent max_ttl"
    assert event.details["lease_id"] == "lse_new"
    assert event.details["source_ip"] == "192.0.2.7"
    assert event.details["decision"] == {
        "allowed": True,
        "policy_ids": ["tether:default"],
        "errors": [],
    }
    denied = Decision(False, ("guardrail:x",), ("no",), (), {})
    refused = request().audit_event("lease.renew", denied, by="admin:root")
    assert (refused.actor, refused.result, refused.details["lease_id"]) == (
        "admin:root",
        "deny",
        None,
    )


def test_the_justification_is_checked_against_the_credential_it_stands_on() -> None:
    assert request().unjustified() == []
    moved = replace(IDENTITY, region="us-east-1")
    problems = request(subject=replace(SUBJECT, identity=moved)).unjustified()
    assert [p.code for p in problems] == ["placement-changed"]
    assert problems[0].reason == "identity agent-7 moved from prod/eu-west-1 to prod/us-east-1"
    # Fresh evidence stands on no earlier credential: the identity's placement is its own.
    fresh = replace(SUBJECT, identity=moved, lease=None)
    assert request(subject=fresh).unjustified() == []
    orphaned = EstateView(vendors=VIEW.vendors)
    assert [p.code for p in request(view=orphaned).unjustified()] == ["owner-removed"]
