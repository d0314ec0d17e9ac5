"""Static (legacy) secrets: register, list, read, rotate, report exposure, verify."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tether.api._deps import Caller, Node, TaskOrApiToken, duration, optional_duration
from tether.api._routing import TetherRoute
from tether.api._schemas import (
    CredentialCreateRequest,
    ExposedRequest,
    RotateRequest,
    VerifyRequest,
    credential_json,
)
from tether.static import StaticCredential

router = APIRouter(route_class=TetherRoute, tags=["credentials"])


@router.post("/v1/credentials", status_code=201)
def create_credential(body: CredentialCreateRequest, caller: Caller, node: Node) -> dict[str, Any]:
    credential = StaticCredential(
        id=body.id,
        kind=body.kind,
        owner_id=body.owner,
        readers=tuple(body.readers),
        overlap=duration("overlap", body.overlap),
        rotate_every=optional_duration("rotate_every", body.rotate_every),
        last_rotated_at=node.clock(),
        target=body.target,
        users=body.users,
        grant_from=body.grant_from,
    )
    node.statics.create(credential, caller.actor, body.value)
    return credential_json(node.statics.get(body.id))


@router.get("/v1/credentials")
def list_credentials(caller: Caller, node: Node) -> dict[str, Any]:
    return {"items": [credential_json(c) for c in node.statics.all()]}


@router.get("/v1/credentials/{credential_id}")
def read_credential(credential_id: str, caller: TaskOrApiToken, node: Node) -> JSONResponse:
    """A reader identity's task token gets the current version; admins get metadata."""
    subject = caller.task_subject
    if subject is None:
        return JSONResponse(credential_json(node.statics.get(credential_id)))
    secret, version = node.statics.read(credential_id, subject.identity.id)
    return JSONResponse(
        {"id": credential_id, "version": version.number, "value": secret, **version.details},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/v1/credentials/{credential_id}/rotate")
def rotate_credential(
    credential_id: str, body: RotateRequest, caller: Caller, node: Node
) -> dict[str, Any]:
    overlap = optional_duration("overlap", body.overlap)
    node.statics.rotate(credential_id, caller.actor, "rotated by an operator", overlap)
    return credential_json(node.statics.get(credential_id))


@router.post("/v1/credentials/{credential_id}/exposed")
def credential_exposed(
    credential_id: str, body: ExposedRequest, caller: Caller, node: Node
) -> dict[str, Any]:
    """Exposure evidence: rotate at once and retire the exposed version, no overlap."""
    node.statics.exposed(credential_id, body.evidence, caller.actor)
    return credential_json(node.statics.get(credential_id))


@router.post("/v1/credentials/{credential_id}/verify")
def verify_credential(
    credential_id: str, body: VerifyRequest, caller: Caller, node: Node
) -> dict[str, Any]:
    """For systems that check a presented static secret with Tether."""
    result = node.statics.verify(credential_id, body.secret, body.caller)
    return {"valid": result.valid, "version": result.version, "state": result.state}
