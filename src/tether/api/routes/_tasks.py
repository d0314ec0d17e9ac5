"""Tasks: a workload starts one by attesting; it ends by its own token or an operator;
join tokens stand in for attestation where a workload has none."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tether._internal.timeutil import InvalidValue, format_time, parse_time
from tether.api._access import bearer_of
from tether.api._deps import (
    Caller,
    Node,
    TaskOrApiToken,
    client_certificate,
    client_ip,
    duration,
)
from tether.api._oauth_errors import OAuthError
from tether.api._routing import TetherRoute
from tether.api._schemas import JoinTokenRequest, TaskStartRequest, page, task_json
from tether.errors import NotFoundError
from tether.issuance import InvalidRequest, RunAsk
from tether.providers import ACCESS_TOKEN_TYPE
from tether.store import TaskFilter

router = APIRouter(route_class=TetherRoute, tags=["tasks"])


@dataclass(frozen=True, slots=True)
class _TaskQuery:
    identity: Annotated[str | None, Query(max_length=255)] = None
    status: Annotated[str | None, Query(pattern="^(active|ended)$")] = None
    after: Annotated[str | None, Query(max_length=64)] = None
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000


@router.post("/v1/tasks", status_code=201)
def start_task(body: TaskStartRequest, request: Request, node: Node) -> dict[str, Any]:
    bearer = bearer_of(request.headers)
    certificate = client_certificate(request)
    if bearer is None and not certificate:
        raise OAuthError(
            "invalid_request",
            "send the attestation token (or a join token) as a bearer token, or present a "
            "client certificate over mTLS",
            401,
        )
    started = node.issuance.start_task(
        bearer,
        body.name,
        duration("ttl", body.ttl),
        client_ip(request),
        certificate,
        _run_ask(body),
    )
    return {**task_json(started.task), "token": started.token, "token_type": ACCESS_TOKEN_TYPE}


class RunCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=16384, repr=False)
    #: The tool (profile id or audience) the token is about to be used with.
    tool: str | None = Field(default=None, max_length=2048)
    scopes: list[str] | None = Field(default=None, max_length=200)


@router.post("/v1/agents/check")
def check_agent_token(body: RunCheck, _caller: Caller, node: Node) -> dict[str, Any]:
    """A tool gateway asks: may this agent token do this now? The live decision, with
    reasons (the lease, its run and principal, and policy as it stands)."""
    return node.issuance.check(body.token, body.tool, body.scopes)


@router.post("/v1/tasks/{task_id}/end")
def end_task(task_id: str, caller: TaskOrApiToken, node: Node) -> dict[str, Any]:
    """The task's own task token, an admin, or the owner of the task's identity."""
    ended, revoked = node.leases.end_task_by_id(task_id, "task ended", caller.actor)
    node.worker.wake()
    return {**task_json(ended), "leases_revoked": revoked}


@router.get("/v1/tasks")
def list_tasks(
    caller: Caller, node: Node, query: Annotated[_TaskQuery, Depends()]
) -> dict[str, Any]:
    where = TaskFilter(
        identity_id=query.identity,
        status=query.status,
        owner_in=caller.owner_scope(),
        after_id=query.after,
        limit=query.limit,
    )
    with node.store.read() as tx:
        tasks = tx.list_tasks(where)
    return page([task_json(t) for t in tasks], query.limit)


@router.get("/v1/tasks/{task_id}")
def show_task(task_id: str, caller: Caller, node: Node) -> dict[str, Any]:
    with node.store.read() as tx:
        task = tx.get_task(task_id)
    if task is None:
        raise NotFoundError(f"no task {task_id!r}")
    return task_json(task)


@router.post("/v1/join-tokens", status_code=201)
def create_join_token(body: JoinTokenRequest, caller: Caller, node: Node) -> dict[str, Any]:
    token_value, record = node.issuance.create_join_token(
        body.identity, duration("ttl", body.ttl), caller.actor
    )
    return {
        "id": record.id,
        "identity": record.identity_id,
        "token": token_value,
        "expires_at": format_time(record.expires_at),
    }


def _run_ask(body: TaskStartRequest) -> RunAsk | None:
    """The agent run a task start declares, if it declares one."""
    if body.intent is None:
        if body.acting_for is not None or body.window is not None:
            raise InvalidRequest("acting_for and window are an agent run's: declare its intent")
        return None
    window = body.window
    return RunAsk(
        purpose=body.intent.purpose,
        tools=body.intent.tools,
        resources=body.intent.resources,
        data_classes=body.intent.data_classes,
        acting_for=body.acting_for.token if body.acting_for is not None else None,
        starts_at=_when("window.start", window.start if window else None),
        ends_at=_when("window.end", window.end if window else None),
        max_credentials=window.max_credentials if window else None,
        max_audiences=window.max_audiences if window else None,
    )


def _when(field: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except (InvalidValue, ValueError):
        raise InvalidRequest(f"{field}: not an RFC 3339 time: {value!r}") from None
