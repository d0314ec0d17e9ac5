"""One router per resource; `tether.api.create_app` includes them in this order."""

from tether.api.routes import (
    _audit,
    _authzen,
    _credentials,
    _estate,
    _exposures,
    _govern,
    _inventory,
    _keys,
    _leases,
    _oauth,
    _spiffe,
    _sys,
    _targets,
    _tasks,
    _tokens,
)

ROUTERS = (
    _sys.router,
    _tokens.router,
    _estate.router,
    _inventory.router,
    _audit.router,
    _oauth.router,
    _tasks.router,
    _leases.router,
    _targets.router,
    _credentials.router,
    _govern.router,
    _exposures.router,
    _spiffe.router,
    _keys.router,
    _authzen.router,
)

HOT_PATHS = _oauth.HOT_PATHS | _authzen.HOT_PATHS

__all__ = ["HOT_PATHS", "ROUTERS"]
