"""One use of an identity or credential, as Tether sees it or as it is reported. No I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """Evidence of use: issuance, renewal, introspection, a secret read, a session at a
    target, or a line of an external audit log (POST /v1/usage)."""

    identity_id: str
    at: dt.datetime
    action: str
    #: The credential used: a lease id, a static credential (`credential:<id>`), or a
    #: fingerprint an external log carries; "" when not known.
    credential: str = ""
    #: The profile the use was under (the entitlement); "" when not known.
    entitlement: str = ""
    source: str | None = None
    user_agent: str | None = None
    resource: str | None = None
    scopes: tuple[str, ...] = ()
    #: The attested subject (`sub` of the evidence) and the environment it attested.
    subject: str | None = None
    environment: str | None = None
    #: A target session's application name (PostgreSQL application_name, Redis name).
    application: str | None = None
    #: Whom a delegated credential acts for (the `act` subject of an agent's token).
    actor: str | None = None
