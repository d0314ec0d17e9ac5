"""Confidentiality keys and the approvals of dual control (tether.keys).

Key admins (API tokens with `key-admin` or `admin`) administer; workloads use a key with
their task token, each use a policy decision; approvers (`key-approver`) vote. The
access table keeps an API token off the use routes, and the service checks each role
again. Binary values are standard base64 (with padding).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tether.api._deps import Caller, Node, TaskOrApiToken, client_ip
from tether.api._routing import TetherRoute
from tether.keys import Approver, BatchResult, InvalidKeyRequest, KeyAdmin, KeyUser

router = APIRouter(route_class=TetherRoute, tags=["keys"])

_NAME = r"^[A-Za-z0-9]([A-Za-z0-9_.-]){0,127}$"
_B64_MAX = 4 * 1024 * 1024
_B64 = Field(max_length=_B64_MAX)
_OPTIONAL_B64 = Field(default=None, max_length=_B64_MAX)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateKey(_Strict):
    name: str = Field(pattern=_NAME)
    type: str = Field(max_length=32)
    identity: str = Field(max_length=128)
    escrow: dict[str, Any] | None = None
    approver_group: str | None = Field(default=None, max_length=128)
    usage_limit: int | None = None
    max_age: str | None = Field(default=None, max_length=16)


class Reason(_Strict):
    reason: str | None = Field(default=None, max_length=500)


class Deletion(Reason):
    #: Delete these versions' material only (each below min_decryption_version).
    versions: list[int] | None = Field(default=None, min_length=1, max_length=1000)


class Comment(_Strict):
    comment: str | None = Field(default=None, max_length=500)


class Plain(_Strict):
    plaintext: str = _B64
    aad: str | None = _OPTIONAL_B64


class Cipher(_Strict):
    ciphertext: str = _B64
    aad: str | None = _OPTIONAL_B64


class DataKeyAsk(_Strict):
    bits: int = 256
    wrapped_only: bool = False
    aad: str | None = _OPTIONAL_B64


class Message(_Strict):
    message: str = _B64
    prehashed: bool = False
    marshaling: str = Field(default="der", pattern="^(der|raw)$")


class Signed(Message):
    signature: str = Field(max_length=64 * 1024)


class Batch(_Strict):
    items: list[dict[str, Any]] = Field(max_length=1000)


class Export(_Strict):
    approval: str = Field(max_length=64)


def _bytes(field: str, value: str | None) -> bytes:
    if value is None:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKeyRequest(f"{field}: is not base64") from None


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _admin(caller: Any) -> KeyAdmin:
    return KeyAdmin(caller.name)


def _user(admitted: Any, request: Request) -> KeyUser:
    subject = admitted.task_subject
    if subject is None:
        # The table admits only task tokens here; a caller without one is no key user.
        raise InvalidKeyRequest("a key is used with a workload's task token")
    task = subject.task
    return KeyUser(
        name=f"task:{task.id}" if task is not None else f"workload:{subject.identity.id}",
        identity_id=subject.identity.id,
        attested=subject.attested,
        task_id=task.id if task is not None else None,
        task_name=task.name if task is not None else None,
        issuer_id=subject.issuer_id,
        claims=dict(subject.claims),
        source_ip=client_ip(request),
    )


def _items(results: list[BatchResult], field: str) -> dict[str, Any]:
    out = []
    for result in results:
        if result.error is not None:
            out.append({"error": result.error, "code": result.code})
        else:
            value = result.value
            out.append({field: _b64(value) if isinstance(value, bytes) else value})
    return {"items": out}


# -- administration --
@router.post("/v1/keys", status_code=201)
def create_key(body: CreateKey, caller: Caller, node: Node) -> dict[str, Any]:
    options = body.model_dump(exclude={"name", "type", "identity"}, exclude_none=True)
    return node.keys.create(_admin(caller), body.name, body.type, body.identity, options).to_dict()


@router.get("/v1/keys")
def list_keys(caller: Caller, node: Node) -> dict[str, Any]:
    return {"items": [info.to_dict() for info in node.keys.list_keys(_admin(caller))]}


@router.get("/v1/keys/{name}")
def show_key(name: str, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.get(_admin(caller), name).to_dict()


@router.patch("/v1/keys/{name}")
async def configure_key(name: str, request: Request, caller: Caller, node: Node) -> Any:
    changes = await request.json()
    if not isinstance(changes, dict):
        raise InvalidKeyRequest("(body): must be an object of the fields to change")
    reason = changes.pop("reason", None)
    result = node.keys.configure(_admin(caller), name, changes, reason)
    return {
        "key": result.key.to_dict(),
        "approvals": [approval.to_dict() for approval in result.approvals],
    }


@router.delete("/v1/keys/{name}", status_code=202)
async def delete_key(name: str, request: Request, caller: Caller, node: Node) -> Any:
    raw = await request.body()
    body = Deletion.model_validate_json(raw) if raw else Deletion()
    if body.versions is None:
        approval = node.keys.request_delete(_admin(caller), name, body.reason)
    else:
        approval = node.keys.request_delete_versions(
            _admin(caller), name, body.versions, body.reason
        )
    return {"approval": approval.to_dict()}


@router.post("/v1/keys/{name}/trim", status_code=202)
def trim_key(name: str, body: Reason, caller: Caller, node: Node) -> dict[str, Any]:
    approval = node.keys.trim(_admin(caller), name, body.reason)
    return {"approval": approval.to_dict()}


@router.post("/v1/keys/{name}/rotate")
def rotate_key(name: str, body: Reason, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.rotate(_admin(caller), name, body.reason).to_dict()


@router.post("/v1/keys/{name}/deletion/cancel")
def cancel_deletion(name: str, body: Reason, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.cancel_deletion(_admin(caller), name, body.reason).to_dict()


@router.post("/v1/keys/{name}/escrow/recovery", status_code=202)
def escrow_recovery(name: str, body: Reason, caller: Caller, node: Node) -> dict[str, Any]:
    approval = node.keys.request_escrow_recovery(_admin(caller), name, body.reason)
    return {"approval": approval.to_dict()}


@router.post("/v1/keys/{name}/escrow/export")
def escrow_export(name: str, body: Export, caller: Caller, node: Node) -> JSONResponse:
    bundles = node.keys.escrow_export(_admin(caller), name, body.approval)
    return JSONResponse({"bundles": bundles}, headers={"Cache-Control": "no-store"})


@router.post("/v1/keys/{name}/escrow/verify")
def escrow_verify(name: str, caller: Caller, node: Node) -> dict[str, Any]:
    principal = (
        KeyAdmin(caller.name) if "key-approver" not in caller.roles else Approver(caller.name)
    )
    return node.keys.escrow_verify(principal, name).to_dict()


# -- use: a workload's task token, each call a policy decision --
def _no_store(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/v1/keys/{name}/encrypt")
def encrypt(
    name: str, body: Plain | Batch, request: Request, caller: TaskOrApiToken, node: Node
) -> JSONResponse:
    user = _user(caller, request)
    if isinstance(body, Batch):
        pairs = [
            (
                _bytes(f"items[{i}].plaintext", item.get("plaintext")),
                _bytes(f"items[{i}].aad", item.get("aad")),
            )
            for i, item in enumerate(body.items)
        ]
        return _no_store(_items(node.keys.encrypt_batch(user, name, pairs), "ciphertext"))
    ciphertext = node.keys.encrypt(
        user, name, _bytes("plaintext", body.plaintext), _bytes("aad", body.aad)
    )
    return _no_store({"ciphertext": ciphertext})


@router.post("/v1/keys/{name}/decrypt")
def decrypt(
    name: str, body: Cipher | Batch, request: Request, caller: TaskOrApiToken, node: Node
) -> JSONResponse:
    user = _user(caller, request)
    if isinstance(body, Batch):
        pairs = [
            (str(item.get("ciphertext", "")), _bytes(f"items[{i}].aad", item.get("aad")))
            for i, item in enumerate(body.items)
        ]
        return _no_store(_items(node.keys.decrypt_batch(user, name, pairs), "plaintext"))
    plaintext = node.keys.decrypt(user, name, body.ciphertext, _bytes("aad", body.aad))
    return _no_store({"plaintext": _b64(plaintext)})


@router.post("/v1/keys/{name}/rewrap")
def rewrap(
    name: str, body: Cipher, request: Request, caller: TaskOrApiToken, node: Node
) -> JSONResponse:
    user = _user(caller, request)
    return _no_store(
        {"ciphertext": node.keys.rewrap(user, name, body.ciphertext, _bytes("aad", body.aad))}
    )


@router.post("/v1/keys/{name}/datakey")
def datakey(
    name: str, body: DataKeyAsk, request: Request, caller: TaskOrApiToken, node: Node
) -> JSONResponse:
    user = _user(caller, request)
    made = node.keys.datakey(
        user, name, body.bits, wrapped_only=body.wrapped_only, aad=_bytes("aad", body.aad)
    )
    answer: dict[str, Any] = {"ciphertext": made.ciphertext, "bits": made.bits}
    if made.plaintext is not None:
        answer["plaintext"] = _b64(made.plaintext)
    return _no_store(answer)


@router.post("/v1/keys/{name}/sign")
def sign(
    name: str, body: Message, request: Request, caller: TaskOrApiToken, node: Node
) -> dict[str, Any]:
    user = _user(caller, request)
    signature = node.keys.sign(
        user,
        name,
        _bytes("message", body.message),
        prehashed=body.prehashed,
        marshaling=body.marshaling,
    )
    return {"signature": signature}


@router.post("/v1/keys/{name}/verify")
def verify(
    name: str, body: Signed, request: Request, caller: TaskOrApiToken, node: Node
) -> dict[str, Any]:
    user = _user(caller, request)
    valid = node.keys.verify(
        user,
        name,
        _bytes("message", body.message),
        body.signature,
        prehashed=body.prehashed,
        marshaling=body.marshaling,
    )
    return {"valid": valid}


@router.post("/v1/keys/{name}/hmac")
def hmac(
    name: str, body: Message, request: Request, caller: TaskOrApiToken, node: Node
) -> dict[str, Any]:
    user = _user(caller, request)
    return {"hmac": node.keys.hmac(user, name, _bytes("message", body.message))}


# -- approvals --
@router.get("/v1/approvals")
def list_approvals(
    caller: Caller,
    node: Node,
    state: Annotated[
        str | None, Query(pattern="^(pending|approved|denied|expired|executed|cancelled)$")
    ] = None,
    key: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    found = node.keys.approvals(Approver(caller.name), state, key)
    return {"items": [approval.to_dict() for approval in found]}


@router.get("/v1/approvals/{approval_id}")
def show_approval(approval_id: str, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.approval(Approver(caller.name), approval_id).to_dict()


@router.post("/v1/approvals/{approval_id}/approve")
def approve(approval_id: str, body: Comment, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.approve(Approver(caller.name), approval_id, body.comment).to_dict()


@router.post("/v1/approvals/{approval_id}/deny")
def deny(approval_id: str, body: Comment, caller: Caller, node: Node) -> dict[str, Any]:
    return node.keys.deny(Approver(caller.name), approval_id, body.comment).to_dict()
