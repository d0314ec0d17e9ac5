from tether.errors import TetherError


class SpiffeError(TetherError):
    """Workload identity (SPIFFE) could not do what was asked; the message says why."""

    code = "spiffe_error"


class InvalidSpiffeId(SpiffeError):
    """A SPIFFE ID or trust domain name breaks the SPIFFE ID specification."""

    status_code = 422
    code = "invalid_spiffe_id"


class CaUnavailable(SpiffeError):
    """The trust domain's CA cannot sign or publish: Tether is sealed, or the estate
    names no trust domain."""

    status_code = 503
    code = "ca_unavailable"


class PermissionDenied(SpiffeError):
    """The Workload API caller is entitled to nothing it asked for."""

    status_code = 403
    code = "permission_denied"


class InvalidJwtSvid(SpiffeError):
    """A JWT-SVID was refused: not signed by this trust domain, expired, or not meant for
    the audience. The message says which; it never quotes the token."""

    status_code = 401
    code = "invalid_jwt_svid"
