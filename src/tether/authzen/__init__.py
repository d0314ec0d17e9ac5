"""Tether as an OpenID AuthZEN Authorization API 1.0 policy decision point.

An estate declares `applications` (a Cedar namespace each, with entities and policies);
`Pdp` compiles them once per estate version and decides AuthZEN evaluations, batches
(`execute_all`, `deny_on_first_deny`, `permit_on_first_permit`) and subject, resource and
action searches from memory. Tether's own identities and profiles are the application
`tether`, decided by Tether's policy (tether.authzen._tether documents the mapping).
Callers are API tokens with the role `pdp:<application>` (or `pdp`, when the estate
declares exactly one application). Decisions are audited as periodic summaries
(`authzen.decisions`), not one chain entry each. docs/authzen.md has the whole story.
"""

from tether.authzen._audit import AUDIT_ACTION
from tether.authzen._model import (
    TETHER_APPLICATION,
    Action,
    Application,
    AuditSettings,
    Entity,
    EntityRef,
    Evaluation,
    Party,
    Verdict,
    application_problems,
    failed,
)
from tether.authzen._pdp import (
    DEFAULT_LIMIT,
    DENY_ON_FIRST_DENY,
    EXECUTE_ALL,
    PDP_ROLE,
    PERMIT_ON_FIRST_PERMIT,
    SEMANTICS,
    Pdp,
    PdpParts,
    Search,
    SearchPage,
)
from tether.authzen.errors import (
    ApplicationInvalid,
    ApplicationProblem,
    AuthzenError,
    BadEvaluationRequest,
    PdpForbidden,
)

__all__ = [
    "AUDIT_ACTION",
    "DEFAULT_LIMIT",
    "DENY_ON_FIRST_DENY",
    "EXECUTE_ALL",
    "PDP_ROLE",
    "PERMIT_ON_FIRST_PERMIT",
    "SEMANTICS",
    "TETHER_APPLICATION",
    "Action",
    "Application",
    "ApplicationInvalid",
    "ApplicationProblem",
    "AuditSettings",
    "AuthzenError",
    "BadEvaluationRequest",
    "Entity",
    "EntityRef",
    "Evaluation",
    "Party",
    "Pdp",
    "PdpForbidden",
    "PdpParts",
    "Search",
    "SearchPage",
    "Verdict",
    "application_problems",
    "failed",
]
