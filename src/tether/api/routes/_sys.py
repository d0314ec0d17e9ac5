"""System routes: health, status, init, unseal, seal, root-key rotation, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import tether
from tether.api._deps import Caller, Node
from tether.api._routing import TetherRoute, text_response
from tether.api._schemas import (
    InitRequest,
    InitResponse,
    RotateResponse,
    StatusResponse,
    UnsealRequest,
)
from tether.errors import ConflictError

router = APIRouter(route_class=TetherRoute, tags=["sys"])


@router.get("/v1/sys/health")
def health(node: Node) -> dict[str, Any]:
    return {"status": "ok", "sealed": node.barrier.sealed, "version": tether.__version__}


@router.get("/v1/sys/status", response_model=StatusResponse)
def status(node: Node) -> Any:
    return node.barrier.status()


@router.post("/v1/sys/init", response_model=InitResponse)
def init(body: InitRequest, node: Node) -> Any:
    if node.barrier.status().initialized:
        raise ConflictError("Tether is already initialized")
    return node.initialize(body.shares, body.threshold, seal_after=True)


@router.post("/v1/sys/unseal", response_model=StatusResponse)
def unseal(body: UnsealRequest, request: Request, node: Node) -> Any:
    return node.unseal(body.share, request.client.host if request.client else "unknown")


@router.post("/v1/sys/seal", response_model=StatusResponse)
def seal(caller: Caller, node: Node) -> Any:
    return node.seal(caller)


@router.post("/v1/sys/rotate", response_model=RotateResponse)
def rotate(caller: Caller, node: Node) -> Any:
    return {"term": node.rotate(caller)}


@router.get(
    "/metrics",
    response_class=Response,
    responses=text_response("text/plain", "Prometheus text exposition format"),
)
def metrics(caller: Caller, request: Request) -> Response:
    request.app.state.refresh_metrics()
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
