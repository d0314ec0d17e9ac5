from tether.errors import TetherError


class AttestationError(TetherError):
    """Attestation evidence was refused. The message says why; it never quotes the token."""

    status_code = 401
    code = "invalid_attestation"


class NoMatchingIdentity(AttestationError):
    """The evidence is valid but no active identity's registration rule matches it."""

    code = "no_matching_identity"


class AmbiguousIdentity(AttestationError):
    """The evidence matches more than one identity: the estate's rules overlap."""

    code = "ambiguous_identity"


class ReplayedToken(AttestationError):
    """A single-use issuer's token was presented a second time."""

    code = "replayed_token"


class IssuerUnavailable(AttestationError):
    """The issuer's keys could not be fetched and none are cached: retry later."""

    status_code = 503
    code = "issuer_unavailable"
