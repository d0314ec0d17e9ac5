"""Why issuance refused, in its own words. Transports map these to their protocol (the
API: RFC 6749 error codes and statuses, in tether.api._oauth_errors)."""

from tether.errors import TetherError


class IssuanceError(TetherError):
    """Issuance refused a request; the message says why and names no secret."""

    code = "issuance_error"


class InvalidRequest(IssuanceError):
    """The request is malformed or incomplete (a missing token, an unknown token type)."""

    code = "invalid_request"


class InvalidGrant(IssuanceError):
    """The presented evidence or credential is not (or no longer) valid."""

    code = "invalid_grant"


class InvalidScope(IssuanceError):
    """The request asks for scopes beyond what it may have (a derived credential's
    scopes beyond the one it was exchanged from)."""

    code = "invalid_scope"


class UnauthorizedClient(IssuanceError):
    """The actor may not act for the subject (`may_act`)."""

    code = "unauthorized_client"


class InvalidTarget(IssuanceError):
    """Nothing, or more than one thing, serves what the request asks for."""

    code = "invalid_target"


class UnknownTarget(InvalidTarget):
    """The profile names a target system that is not registered."""


class AccessDenied(IssuanceError):
    """Policy or an ended justification refused the request."""

    code = "access_denied"


class WindowFull(AccessDenied):
    """An agent run's window has no room for one more credential (its count, or its
    distinct audiences)."""


class NotFound(IssuanceError):
    """An object an administrative request names does not exist (for this caller)."""

    code = "not_found"


class AttestationUnavailable(IssuanceError):
    """The attestation could not be checked now (the IdP's keys cannot be fetched); a
    retry may succeed."""

    code = "temporarily_unavailable"


class TaskTokenRequired(IssuanceError):
    """The request needs a task token and another credential was presented."""

    code = "invalid_token"
