"""Registered target systems, and the credentials a workload gets for one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tether._internal.timeutil import format_time
from tether.api._access import bearer_of
from tether.api._deps import Caller, Node, client_ip, optional_duration
from tether.api._oauth_errors import OAuthError
from tether.api._routing import TetherRoute
from tether.api._schemas import CredsRequest, TargetAddRequest

router = APIRouter(route_class=TetherRoute, tags=["targets"])


@router.post("/v1/targets", status_code=201)
def add_target(body: TargetAddRequest, caller: Caller, node: Node) -> dict[str, Any]:
    node.targets.add(body.name, body.kind, body.dsn, caller.actor)
    return {"name": body.name, "kind": body.kind}


@router.get("/v1/targets")
def list_targets(caller: Caller, node: Node) -> dict[str, Any]:
    return {"items": [{"name": n, "kind": k} for n, k in sorted(node.targets.kinds().items())]}


@router.get("/v1/targets/{name}/health")
def target_health(name: str, caller: Caller, node: Node) -> dict[str, Any]:
    return {"name": name, **node.targets.provider(name).health()}


@router.post("/v1/targets/{name}/rotate-root")
def rotate_target_root(name: str, caller: Caller, node: Node) -> dict[str, Any]:
    node.targets.rotate_root(name, caller.actor)
    return {"name": name, "rotated": True}


@router.post("/v1/creds/{profile_id}")
def creds(profile_id: str, body: CredsRequest, request: Request, node: Node) -> JSONResponse:
    """Credentials for a target system, authorized by a task token or attestation."""
    bearer = bearer_of(request.headers)
    if bearer is None:
        raise OAuthError(
            "invalid_request",
            "send a task token or an attestation token as a bearer token",
            401,
        )
    result = node.issuance.issue_credential(
        profile_id,
        bearer,
        task_id=body.task,
        ttl=optional_duration("ttl", body.ttl),
        intent=body.intent,
        source_ip=client_ip(request),
    )
    node.worker.wake()
    return JSONResponse(
        {
            **result.details,
            "password": result.secret,
            "lease": result.lease.id,
            "expires_at": format_time(result.lease.expires_at),
            "bounded_by": result.bounded_by,
            "task": result.lease.task_id,
        },
        headers={"Cache-Control": "no-store"},
    )
