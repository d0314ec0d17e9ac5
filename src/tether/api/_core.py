"""Routes of the core loop: discovery, RFC 8693/7662/7009, tasks, leases, join tokens."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from tether._internal.timeutil import InvalidValue, format_time, parse_duration, utcnow
from tether.api._access import Admitted, bearer_of
from tether.api._deps import Admission, Caller
from tether.api._oauth_errors import OAuthError, register
from tether.api._schemas import DURATION_PATTERN, _Body
from tether.app import Tether
from tether.auth import Forbidden
from tether.errors import NotFoundError
from tether.issuance import ExchangeRequest, Subject
from tether.lease import RevokeTarget
from tether.model import Lease, Task
from tether.providers import ACCESS_TOKEN_TYPE
from tether.static import StaticCredential
from tether.store import LeaseFilter, TaskFilter
from tether.targets import kind_names, static_kinds

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URI
_MAX_FIELD = 16 * 1024


class TaskStartRequest(_Body):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
    ttl: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)


class RevokeRequest(_Body):
    lease: str | None = Field(default=None, max_length=64)
    task: str | None = Field(default=None, max_length=64)
    identity: str | None = Field(default=None, max_length=255)
    owner: str | None = Field(default=None, max_length=255)
    all: bool = False
    reason: str = Field(default="revoked by an operator", min_length=1, max_length=500)


class TargetAddRequest(_Body):
    name: str = Field(min_length=1, max_length=128)
    kind: str = Field(pattern=f"^({'|'.join(kind_names())})$")
    dsn: str = Field(min_length=1, max_length=4096, repr=False)


class CredsRequest(_Body):
    task: str | None = Field(default=None, max_length=64)
    ttl: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)
    intent: str | None = Field(default=None, max_length=500)


class CredentialCreateRequest(_Body):
    id: str = Field(min_length=1, max_length=128)
    kind: str = Field(default="static", pattern=f"^({'|'.join(('static', *static_kinds()))})$")
    owner: str = Field(min_length=1, max_length=255)
    readers: list[str] = Field(min_length=1, max_length=100)
    overlap: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)
    rotate_every: str | None = Field(default="30d", max_length=40, pattern=DURATION_PATTERN)
    target: str | None = Field(default=None, max_length=128)
    users: tuple[str, str] | None = None
    grant_from: str | None = Field(default=None, max_length=63)
    value: str | None = Field(default=None, min_length=16, max_length=4096, repr=False)


class RotateRequest(_Body):
    overlap: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)


class ExposedRequest(_Body):
    evidence: str = Field(min_length=1, max_length=2000)


class VerifyRequest(_Body):
    secret: str = Field(min_length=1, max_length=4096, repr=False)
    caller: str = Field(min_length=1, max_length=255)


class RenewRequest(_Body):
    ttl: str | None = Field(default=None, max_length=40, pattern=DURATION_PATTERN)


class JoinTokenRequest(_Body):
    identity: str = Field(min_length=1, max_length=255)
    ttl: str = Field(default="1h", max_length=40, pattern=DURATION_PATTERN)


_DURATION = {"type": "string", "pattern": DURATION_PATTERN, "maxLength": 40}
_FORM_FIELD = {"type": "string", "maxLength": _MAX_FIELD}
_REQUIRED_FIELD = {"type": "string", "minLength": 1, "maxLength": _MAX_FIELD}


def _form_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An `application/x-www-form-urlencoded` request body, for the OpenAPI document."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required,
                    }
                }
            },
        }
    }


_TOKEN_FORM = _form_body(
    {
        "grant_type": {"type": "string", "enum": [TOKEN_EXCHANGE]},
        "subject_token": _REQUIRED_FIELD,
        "subject_token_type": {
            "type": "string",
            "enum": [
                "urn:ietf:params:oauth:token-type:access_token",
                "urn:ietf:params:oauth:token-type:jwt",
            ],
        },
        "audience": _FORM_FIELD,
        "resource": _FORM_FIELD,
        "scope": _FORM_FIELD,
        "ttl": _DURATION,
        "requested_token_type": _FORM_FIELD,
        "actor_token": _FORM_FIELD,
        "actor_token_type": _FORM_FIELD,
        "task": {"type": "string", "maxLength": 64},
        "intent": {"type": "string", "maxLength": 500},
    },
    ["grant_type", "subject_token", "subject_token_type"],
)
_TOKEN_ONLY_FORM = _form_body(
    {"token": _REQUIRED_FIELD, "token_type_hint": _FORM_FIELD},
    ["token"],
)


def _duration(field: str, text: str) -> Any:
    try:
        return parse_duration(text)
    except InvalidValue as exc:
        raise OAuthError("invalid_request", f"{field}: {exc}") from None


async def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        raw = (await request.body()).decode("utf-8")
        pairs = parse_qs(raw, keep_blank_values=False, strict_parsing=False, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body could not be parsed") from None
    form: dict[str, str] = {}
    for name, values in pairs.items():
        if len(values) > 1 and name not in ("audience", "resource"):
            raise OAuthError("invalid_request", f"{name} is given more than once")
        if any(len(v) > _MAX_FIELD for v in values):
            raise OAuthError("invalid_request", f"{name} is too long")
        form[name] = values[0]
    return form


def _client_ip(request: Request) -> str | None:
    """The peer's address, when it is one (policies compare it as an `ipaddr`)."""
    host = request.client.host if request.client else None
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


def _task_json(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "identity": task.identity_id,
        "name": task.name,
        "status": task.status.value,
        "created_at": format_time(task.created_at),
        "deadline": format_time(task.deadline),
        "ends_at": format_time(task.ends_at),
        "ended_at": None if task.ended_at is None else format_time(task.ended_at),
        "end_reason": task.end_reason,
        "implicit": task.implicit,
        "issuer": task.issuer_id,
    }


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "id": lease.id,
        "identity": lease.identity_id,
        "owner": lease.owner_id,
        "provider": lease.provider,
        "profile": lease.profile_id,
        "task": lease.task_id,
        "parent": lease.parent_id,
        "scopes": list(lease.scopes),
        "audience": lease.audience,
        "state": lease.state.value,
        "issued_at": format_time(lease.issued_at),
        "expires_at": format_time(lease.expires_at),
        "actor": lease.actor,
        "revoke_attempts": lease.revoke_attempts,
        "ended_at": None if lease.ended_at is None else format_time(lease.ended_at),
        "end_reason": lease.end_reason,
    }


def register_core_routes(app: FastAPI, node: Tether) -> None:
    register(app)

    @app.get("/.well-known/openid-configuration", tags=["oauth"])
    def discovery() -> dict[str, Any]:
        base = node.settings.issuer_url
        return {
            "issuer": base,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/oauth2/token",
            "introspection_endpoint": f"{base}/oauth2/introspect",
            "revocation_endpoint": f"{base}/oauth2/revoke",
            "grant_types_supported": [TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["bearer"],
            "revocation_endpoint_auth_methods_supported": ["none", "bearer"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    @app.get("/.well-known/jwks.json", tags=["oauth"])
    def jwks() -> dict[str, Any]:
        return node.signing_keys.jwks()

    @app.post("/oauth2/token", tags=["oauth"], openapi_extra=_TOKEN_FORM)
    async def token(request: Request) -> JSONResponse:
        form = await _form(request)
        if form.get("grant_type") != TOKEN_EXCHANGE:
            raise OAuthError("unsupported_grant_type", f"grant_type must be {TOKEN_EXCHANGE}")
        scope = form.get("scope")
        exchange = ExchangeRequest(
            subject_token=form.get("subject_token", ""),
            subject_token_type=form.get("subject_token_type", ""),
            audience=form.get("audience"),
            resource=form.get("resource"),
            scope=None if scope is None else tuple(scope.split()),
            requested_ttl=None if "ttl" not in form else _duration("ttl", form["ttl"]),
            requested_token_type=form.get("requested_token_type"),
            actor_token=form.get("actor_token"),
            actor_token_type=form.get("actor_token_type"),
            task_id=form.get("task"),
            intent=form.get("intent"),
            source_ip=_client_ip(request),
        )
        result = await run_in_threadpool(node.issuance.exchange, exchange)
        body = {
            "access_token": result.access_token,
            "issued_token_type": result.issued_token_type,
            "token_type": "Bearer",
            "expires_in": result.expires_in,
            "scope": " ".join(result.scope),
            "tether_lease": result.lease_id,
            "tether_bounded_by": result.bounded_by,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.post("/oauth2/introspect", tags=["oauth"], openapi_extra=_TOKEN_ONLY_FORM)
    async def introspect(request: Request, caller: Caller) -> JSONResponse:
        form = await _form(request)
        if not form.get("token"):
            raise OAuthError("invalid_request", "token is required")
        result = await run_in_threadpool(node.issuance.introspect, form["token"])
        return JSONResponse(result, headers={"Cache-Control": "no-store"})

    @app.post("/oauth2/revoke", tags=["oauth"], openapi_extra=_TOKEN_ONLY_FORM)
    async def revoke(request: Request) -> JSONResponse:
        form = await _form(request)
        token_value = form.get("token")
        if not token_value:
            raise OAuthError("invalid_request", "token is required")
        bearer = bearer_of(request.headers)
        actor = "holder"
        if bearer is not None:
            principal = await run_in_threadpool(node.auth.authenticate, bearer)
            actor = principal.actor
        # Possession is enough to give a credential up (RFC 7009 lets servers allow this).
        await run_in_threadpool(node.issuance.revoke_token, token_value, actor)
        return JSONResponse({}, status_code=200)

    # -- tasks --
    @app.post("/v1/tasks", tags=["tasks"], status_code=201)
    def start_task(body: TaskStartRequest, request: Request) -> dict[str, Any]:
        bearer = bearer_of(request.headers)
        if bearer is None:
            raise OAuthError(
                "invalid_request",
                "send the attestation token (or a join token) as a bearer token",
                401,
            )
        started = node.issuance.start_task(
            bearer,
            body.name,
            _duration("ttl", body.ttl),
            _client_ip(request),
        )
        return {**_task_json(started.task), "token": started.token, "token_type": ACCESS_TOKEN_TYPE}

    @app.post("/v1/tasks/{task_id}/end", tags=["tasks"])
    def end_task(task_id: str, admitted: Admission) -> dict[str, Any]:
        """The task's own task token, an admin, or the owner of the task's identity."""
        actor = _actor(admitted)
        with node.store.read() as tx:
            task = tx.get_task(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id!r}")
        revoked = node.leases.end_task(task, "task ended", actor)
        node.worker.wake()
        with node.store.read() as tx:
            ended = tx.get_task(task_id)
        assert ended is not None
        return {**_task_json(ended), "leases_revoked": revoked}

    @app.get("/v1/tasks", tags=["tasks"])
    def list_tasks(
        caller: Caller,
        identity: Annotated[str | None, Query(max_length=255)] = None,
        status: Annotated[str | None, Query(pattern="^(active|ended)$")] = None,
        after: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        with node.store.read() as tx:
            tasks = tx.list_tasks(
                TaskFilter(
                    identity_id=identity,
                    status=status,
                    owner_in=caller.owner_scope(),
                    after_id=after,
                    limit=limit,
                )
            )
        items = [_task_json(t) for t in tasks]
        return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}

    @app.get("/v1/tasks/{task_id}", tags=["tasks"])
    def show_task(task_id: str, caller: Caller) -> dict[str, Any]:
        with node.store.read() as tx:
            task = tx.get_task(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id!r}")
        return _task_json(task)

    # -- leases --
    @app.get("/v1/leases", tags=["leases"])
    def list_leases(
        caller: Caller,
        task: Annotated[str | None, Query(max_length=64)] = None,
        identity: Annotated[str | None, Query(max_length=255)] = None,
        owner: Annotated[str | None, Query(max_length=255)] = None,
        state: Annotated[
            str | None, Query(pattern="^(pending|active|revoking|revoked|expired)$")
        ] = None,
        after: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> dict[str, Any]:
        from tether.model import LeaseState

        scope = caller.owner_scope()
        if scope is not None:
            if owner is not None and owner not in scope:
                return {"items": [], "next": None}
            owner = owner or (scope[0] if len(scope) == 1 else None)
            if owner is None:
                raise Forbidden("name the owner to list its leases")
        states = tuple(LeaseState) if state is None else (LeaseState(state),)
        with node.store.read() as tx:
            leases = tx.find_leases(
                LeaseFilter(
                    task_id=task,
                    identity_id=identity,
                    owner_id=owner,
                    states=states,
                    after_id=after,
                    limit=limit,
                )
            )
        items = [_lease_json(lease) for lease in leases]
        return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}

    @app.get("/v1/leases/{lease_id}", tags=["leases"])
    def show_lease(lease_id: str, caller: Caller) -> dict[str, Any]:
        with node.store.read() as tx:
            lease = tx.get_lease(lease_id)
        if lease is None:
            raise NotFoundError(f"no lease {lease_id!r}")
        return _lease_json(lease)

    @app.post("/v1/leases/{lease_id}/renew", tags=["leases"])
    def renew_lease(lease_id: str, body: RenewRequest, admitted: Admission) -> dict[str, Any]:
        """Extend an opaque token's lease; policy decides again (action `renew`)."""
        caller: Subject | None = admitted.task_subject
        actor = _actor(admitted)
        ttl = None if body.ttl is None else _duration("ttl", body.ttl)
        lease, bound = node.issuance.renew(lease_id, caller, actor, ttl)
        return {**_lease_json(lease), "bounded_by": bound.name}

    @app.post("/v1/leases/revoke", tags=["leases"])
    def revoke_leases(body: RevokeRequest, caller: Caller) -> dict[str, Any]:
        """Revocation and the kill switch: by lease, task, identity, owner, or everything."""
        chosen = [k for k in ("lease", "task", "identity", "owner") if getattr(body, k)]
        if len(chosen) + int(body.all) != 1:
            raise OAuthError(
                "invalid_request", "give exactly one of lease, task, identity, owner or all", 422
            )
        if not caller.is_admin and (body.owner is None or body.owner not in caller.owned()):
            raise Forbidden("owners may revoke only by `owner`, naming one of their own")
        target = RevokeTarget(
            lease_id=body.lease,
            task_id=body.task,
            identity_id=body.identity,
            owner_id=body.owner,
            everything=body.all,
        )
        revoked = node.leases.revoke(target, body.reason, caller.actor)
        node.worker.wake()
        return {"revoked": revoked}

    # -- target systems and their credentials --
    @app.post("/v1/targets", tags=["targets"], status_code=201)
    def add_target(body: TargetAddRequest, caller: Caller) -> dict[str, Any]:
        node.targets.add(body.name, body.kind, body.dsn, caller.actor)
        return {"name": body.name, "kind": body.kind}

    @app.get("/v1/targets", tags=["targets"])
    def list_targets(caller: Caller) -> dict[str, Any]:
        return {"items": [{"name": n, "kind": k} for n, k in sorted(node.targets.kinds().items())]}

    @app.get("/v1/targets/{name}/health", tags=["targets"])
    def target_health(name: str, caller: Caller) -> dict[str, Any]:
        return {"name": name, **node.targets.provider(name).health()}

    @app.post("/v1/targets/{name}/rotate-root", tags=["targets"])
    def rotate_target_root(name: str, caller: Caller) -> dict[str, Any]:
        node.targets.rotate_root(name, caller.actor)
        return {"name": name, "rotated": True}

    @app.post("/v1/creds/{profile_id}", tags=["targets"])
    def creds(profile_id: str, body: CredsRequest, request: Request) -> JSONResponse:
        """Credentials for a target system, authorized by a task token or attestation."""
        bearer = bearer_of(request.headers)
        if bearer is None:
            raise OAuthError(
                "invalid_request",
                "send a task token or an attestation token as a bearer token",
                401,
            )
        ttl = None if body.ttl is None else _duration("ttl", body.ttl)
        result = node.issuance.issue_credential(
            profile_id,
            bearer,
            task_id=body.task,
            ttl=ttl,
            intent=body.intent,
            source_ip=_client_ip(request),
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

    # -- static (legacy) secrets --
    def _credential_json(credential: StaticCredential) -> dict[str, Any]:
        spec = credential.to_spec()
        for version in spec["versions"]:
            version.pop("fingerprint", None)
        return spec

    @app.post("/v1/credentials", tags=["credentials"], status_code=201)
    def create_credential(body: CredentialCreateRequest, caller: Caller) -> dict[str, Any]:
        credential = StaticCredential(
            id=body.id,
            kind=body.kind,
            owner_id=body.owner,
            readers=tuple(body.readers),
            overlap=_duration("overlap", body.overlap),
            rotate_every=None
            if body.rotate_every is None
            else _duration("rotate_every", body.rotate_every),
            last_rotated_at=utcnow(),
            target=body.target,
            users=body.users,
            grant_from=body.grant_from,
        )
        node.statics.create(credential, caller.actor, body.value)
        return _credential_json(node.statics.get(body.id))

    @app.get("/v1/credentials", tags=["credentials"])
    def list_credentials(caller: Caller) -> dict[str, Any]:
        return {"items": [_credential_json(c) for c in node.statics.all()]}

    @app.get("/v1/credentials/{credential_id}", tags=["credentials"])
    def read_credential(credential_id: str, admitted: Admission) -> JSONResponse:
        """A reader identity's task token gets the current version; admins get metadata."""
        subject = admitted.task_subject
        if subject is not None:
            secret, version = node.statics.read(credential_id, subject.identity.id)
            return JSONResponse(
                {
                    "id": credential_id,
                    "version": version.number,
                    "value": secret,
                    **version.details,
                },
                headers={"Cache-Control": "no-store"},
            )
        return JSONResponse(_credential_json(node.statics.get(credential_id)))

    @app.post("/v1/credentials/{credential_id}/rotate", tags=["credentials"])
    def rotate_credential(
        credential_id: str, body: RotateRequest, caller: Caller
    ) -> dict[str, Any]:
        overlap = None if body.overlap is None else _duration("overlap", body.overlap)
        node.statics.rotate(credential_id, caller.actor, "rotated by an operator", overlap)
        return _credential_json(node.statics.get(credential_id))

    @app.post("/v1/credentials/{credential_id}/exposed", tags=["credentials"])
    def credential_exposed(
        credential_id: str, body: ExposedRequest, caller: Caller
    ) -> dict[str, Any]:
        """Exposure evidence: rotate at once and retire the exposed version, no overlap."""
        node.statics.exposed(credential_id, body.evidence, caller.actor)
        return _credential_json(node.statics.get(credential_id))

    @app.post("/v1/credentials/{credential_id}/verify", tags=["credentials"])
    def verify_credential(
        credential_id: str, body: VerifyRequest, caller: Caller
    ) -> dict[str, Any]:
        """For systems that check a presented static secret with Tether."""
        result = node.statics.verify(credential_id, body.secret, body.caller)
        return {"valid": result.valid, "version": result.version, "state": result.state}

    # -- join tokens --
    @app.post("/v1/join-tokens", tags=["tasks"], status_code=201)
    def create_join_token(body: JoinTokenRequest, caller: Caller) -> dict[str, Any]:
        token_value, record = node.issuance.create_join_token(
            body.identity, _duration("ttl", body.ttl), caller.actor
        )
        return {
            "id": record.id,
            "identity": record.identity_id,
            "token": token_value,
            "expires_at": format_time(record.expires_at),
        }


def _actor(admitted: Admitted) -> str:
    if admitted.task_subject is not None:
        return f"workload:{admitted.task_subject.identity.id}"
    assert admitted.principal is not None
    return admitted.principal.actor
