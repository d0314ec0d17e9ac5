"""The trust domain's CA: its SPIFFE bundle and revocation lists (public, as JWKS is),
and its rotation (operators)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute, not_found_response, text_response
from tether.errors import NotFoundError
from tether.model import AuditEvent

router = APIRouter(route_class=TetherRoute, tags=["spiffe"])

_NO_TRUST_DOMAIN = not_found_response("The estate declares no trust_domain")


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    #: Also make the prepared authority sign now (step two); else only prepare it.
    activate: bool = False


def _ca(node: Any) -> Any:
    """The trust domain's CA; 404 when the estate declares no trust domain."""
    if node.view.current.trust_domain is None:
        raise NotFoundError("this estate declares no trust_domain")
    return node.spiffe_ca


def _summary(node: Any) -> dict[str, Any]:
    bundle = _ca(node).bundle()
    return {
        "trust_domain": bundle.trust_domain,
        "sequence": bundle.sequence,
        "refresh_hint": bundle.refresh_hint,
        "x509_authorities": [
            {
                "serial": format(cert.serial_number, "x"),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
            }
            for cert in bundle.x509_authorities
        ],
        "jwt_authorities": sorted(bundle.jwt_authorities),
    }


@router.get("/v1/spiffe/bundle", responses=_NO_TRUST_DOMAIN)
def spiffe_bundle(node: Node) -> JSONResponse:
    """The trust domain's SPIFFE bundle (JWKS with `x509-svid` and `jwt-svid` keys,
    `spiffe_sequence`, `spiffe_refresh_hint`): what relying parties trust."""
    bundle = _ca(node).bundle()
    return JSONResponse(
        bundle.to_jwks(), headers={"Cache-Control": f"max-age={bundle.refresh_hint}"}
    )


@router.get(
    "/v1/spiffe/crl",
    responses={
        **text_response("application/x-pem-file", "one CRL per published authority"),
        **_NO_TRUST_DOMAIN,
    },
)
def spiffe_crl(node: Node) -> Response:
    """The X509-SVIDs revoked before their end, for relying parties that check."""
    ca = _ca(node)
    revoked = node.revoked_svids.serials().items()
    pem = b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in ca.crls(revoked))
    return Response(pem, media_type="application/x-pem-file")


@router.get("/v1/spiffe/ca", responses=_NO_TRUST_DOMAIN)
def spiffe_ca(caller: Caller, node: Node) -> dict[str, Any]:
    return _summary(node)


@router.post("/v1/spiffe/ca/rotate")
def spiffe_ca_rotate(body: RotateRequest, caller: Caller, node: Node) -> dict[str, Any]:
    """Prepare the next authority now (published at once, signing nothing); later, with
    `activate`, make the prepared one sign (refused when none is prepared). The one it
    replaces stays published until it expires."""
    ca = _ca(node)
    # Two calls, never one: the prepared authority must reach relying parties (a refresh
    # hint) before anything it signs does.
    if body.activate:
        ca.activate_next()
    else:
        ca.prepare_next()
    summary = _summary(node)
    with node.store.transaction() as tx:
        event = AuditEvent(
            action="spiffe.ca.rotate",
            actor=caller.actor,
            details={"activate": body.activate, "sequence": summary["sequence"]},
        )
        node.audit.append(tx, [event])
    return summary
