"""`tether key` and `tether approval`: confidentiality keys and the dual control over them.

Administration (create, rotate, configure, delete, escrow) takes a `key-admin` token;
the uses (encrypt, decrypt, rewrap, datakey) take a workload's task token as
TETHER_TOKEN, and each is a policy decision; votes take a `key-approver` token.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from tether.cli._api import client, get, post, send
from tether.cli._output import (
    Column,
    emit_json,
    json_option,
    out,
    output_option,
    show_listing,
    show_record,
)
from tether.client import KeyClient

KEY_COLUMNS = (
    Column("name", "name", identifier=True),
    Column("type", "type"),
    Column("identity", "identity", identifier=True),
    Column("latest", "latest_version"),
    Column("min decrypt", "min_decryption_version"),
    Column("min encrypt", "min_encryption_version", wide=True),
    Column("escrow", lambda k: _escrow_text(k.get("escrow"))),
    Column("rotated at", "rotated_at", wide=True),
    Column("deletion", lambda k: (k.get("deletion") or {}).get("at")),
)
VERSION_COLUMNS = (
    Column("version", "version"),
    Column("created at", "created_at"),
    Column("kcv", "kcv", identifier=True),
    Column("encryptions", "encryptions"),
    Column("decryptions", "decryptions"),
    Column("last decrypted", "last_decrypted_at", wide=True),
    Column("escrowed", "escrowed"),
    Column("retired for", "retired_for"),
)
APPROVAL_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("operation", "operation"),
    Column("key", "key", identifier=True),
    Column("requester", "requester"),
    Column("state", "state"),
    Column("votes", lambda a: f"{len(a.get('approvals', []))}/{a.get('threshold')}"),
    Column("expires at", "expires_at"),
    Column("reason", "reason", wide=True),
)
_APPROVAL_STATES = ["pending", "approved", "denied", "expired", "executed", "cancelled"]
_KEY_TYPES = ["aes256-gcm", "chacha20-poly1305", "ed25519", "ecdsa-p256", "hmac-sha256"]


def _escrow_text(escrow: dict[str, Any] | None) -> str:
    if not escrow:
        return "no"
    return f"{escrow['threshold']} of {len(escrow['holders'])}"


def _aad(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    return Path(path).read_bytes()


def _write_secret(path: str, data: bytes) -> None:
    """Plaintext or shares to a new file only readable by its owner (or to stdout)."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.UsageError(f"--out: {path} exists; refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@contextmanager
def _keys_api() -> Iterator[KeyClient]:
    """The uses, with TETHER_TOKEN (a workload's task token) as bearer."""
    with client() as api:
        yield KeyClient(api)


@click.group()
def key() -> None:
    """Confidentiality keys: versioned, escrowed, under dual control; never leases."""


# -- administration --
@key.command("create")
@click.argument("name")
@click.option("--type", "key_type", type=click.Choice(_KEY_TYPES), required=True)
@click.option(
    "--identity", required=True, help="The encryption_key identity in the estate that owns it."
)
@click.option(
    "--escrow-holder",
    "holders",
    multiple=True,
    metavar="HOLDER",
    help="Escrow to this holder of the estate's escrow_holders; repeatable.",
)
@click.option("--escrow-threshold", type=click.IntRange(1), help="Shares needed (M of N).")
@click.option("--approver-group", help="The approver group of its dual control.")
@click.option(
    "--usage-limit", type=click.IntRange(1), help="Encryptions per version before it rotates."
)
@click.option("--max-age", help="Age at which a version is rotated, e.g. 90d.")
@output_option
def key_create(
    name: str,
    key_type: str,
    identity: str,
    holders: tuple[str, ...],
    escrow_threshold: int | None,
    output: str,
    **options: Any,
) -> None:
    """Create a key (version 1) owned by an encryption_key identity."""
    if bool(holders) != (escrow_threshold is not None):
        raise click.UsageError("--escrow-holder and --escrow-threshold go together")
    body: dict[str, Any] = {"name": name, "type": key_type, "identity": identity}
    if holders:
        body["escrow"] = {"holders": list(holders), "threshold": escrow_threshold}
    body.update({k: v for k, v in options.items() if v is not None})
    created = post("/v1/keys", body)
    if output in ("table", "wide"):
        out.print(f"Key {name} created ({key_type}, version {created['latest_version']}).")
    else:
        show_record(f"key {name}", created, output)


@key.command("list")
@output_option
def key_list(output: str) -> None:
    """List keys: versions and minimums, never material."""
    items = get("/v1/keys")["items"]
    show_listing(f"{len(items)} keys", KEY_COLUMNS, items, output)


@key.command("show")
@click.argument("name")
@output_option
def key_show(name: str, output: str) -> None:
    """Show a key: its settings, and each version's usage counters."""
    item = get(f"/v1/keys/{name}")
    if output not in ("table", "wide"):
        show_record(f"key {name}", item, output)
        return
    show_record(f"key {name}", {k: v for k, v in item.items() if k != "versions"}, output)
    show_listing(f"{len(item['versions'])} versions", VERSION_COLUMNS, item["versions"], output)


@key.command("rotate")
@click.argument("name")
@click.option("--reason")
@output_option
def key_rotate(name: str, reason: str | None, output: str) -> None:
    """Add a version; new ciphertext uses it, older versions still decrypt."""
    rotated = post(f"/v1/keys/{name}/rotate", {"reason": reason})
    if output in ("table", "wide"):
        out.print(f"Key {name} rotated to version {rotated['latest_version']}.")
    else:
        show_record(f"key {name}", rotated, output)


@key.command("configure")
@click.argument("name")
@click.option("--min-decryption-version", type=click.IntRange(1))
@click.option("--min-encryption-version", type=click.IntRange(0))
@click.option("--usage-limit", type=click.IntRange(1))
@click.option("--max-age", help="e.g. 90d.")
@click.option("--approver-group")
@click.option("--reason")
@json_option
def key_configure(name: str, reason: str | None, as_json: bool, **fields: Any) -> None:
    """Change a key's minimum versions or its crypto policy. Raising
    --min-decryption-version takes effect at once; lowering it, or a policy change,
    opens an approval request."""
    changes = {k: v for k, v in fields.items() if v is not None}
    if not changes:
        raise click.UsageError("name at least one setting to change")
    result = send("PATCH", f"/v1/keys/{name}", {**changes, "reason": reason})
    if as_json:
        emit_json(result)
        return
    out.print(f"Key {name}: min_decryption_version {result['key']['min_decryption_version']}.")
    for approval in result["approvals"]:
        out.print(f"Approval {approval['id']} opened: {approval['operation']}.")


@key.command("delete")
@click.argument("name")
@click.option(
    "--version",
    "versions",
    type=click.IntRange(1),
    multiple=True,
    help="Delete only this version's material; repeatable.",
)
@click.option(
    "--old-versions", is_flag=True, help="Delete every version below min_decryption_version."
)
@click.option("--cancel", is_flag=True, help="Cancel a scheduled deletion.")
@click.option("--reason")
@json_option
def key_delete(
    name: str,
    versions: tuple[int, ...],
    old_versions: bool,
    cancel: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Ask to delete a key (or versions): an approval request; once approved, a key's
    deletion is scheduled after a waiting period, and can be cancelled until then."""
    if sum((bool(versions), old_versions, cancel)) > 1:
        raise click.UsageError("--version, --old-versions and --cancel exclude each other")
    if cancel:
        result = post(f"/v1/keys/{name}/deletion/cancel", {"reason": reason})
        if as_json:
            emit_json(result)
        else:
            out.print(f"Deletion of key {name} cancelled.")
        return
    if old_versions:
        result = post(f"/v1/keys/{name}/trim", {"reason": reason})
    else:
        body: dict[str, Any] = {"reason": reason}
        if versions:
            body["versions"] = list(versions)
        result = send("DELETE", f"/v1/keys/{name}", body)
    _opened(result["approval"], as_json)


def _opened(approval: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json({"approval": approval})
    else:
        out.print(
            f"Approval {approval['id']} opened ({approval['operation']}): it needs "
            f"{approval['threshold']} approvals of group {approval['group']} by "
            f"{approval['expires_at']}."
        )


# -- uses (a workload's task token as TETHER_TOKEN) --
_AAD = click.option("--aad", help="Associated data (UTF-8) the ciphertext is bound to.")


@key.command("encrypt")
@click.argument("name")
@click.option("--plaintext", help="The text to encrypt (default: read --in).")
@click.option("--in", "source", default="-", show_default=True, help="File to encrypt, - stdin.")
@_AAD
@json_option
def key_encrypt(
    name: str, plaintext: str | None, source: str, aad: str | None, as_json: bool
) -> None:
    """Encrypt; prints the ciphertext (tether:v<N>:…)."""
    data = plaintext.encode() if plaintext is not None else _read_input(source)
    with _keys_api() as keys:
        ciphertext = keys.encrypt(name, data, _aad(aad))
    if as_json:
        emit_json({"ciphertext": ciphertext})
    else:
        click.echo(ciphertext)


@key.command("decrypt")
@click.argument("name")
@click.argument("ciphertext", required=False)
@click.option("--in", "source", default="-", show_default=True, help="File holding it, - stdin.")
@_AAD
@click.option("--out", "target", default="-", show_default=True, help="New file (0600), - stdout.")
@json_option
def key_decrypt(
    name: str,
    ciphertext: str | None,
    source: str,
    aad: str | None,
    target: str,
    as_json: bool,
) -> None:
    """Decrypt a ciphertext (the argument, else read from --in); the plaintext goes to
    --out as bytes, or base64 with --json."""
    sealed = ciphertext if ciphertext is not None else _read_input(source).decode().strip()
    with _keys_api() as keys:
        plaintext = keys.decrypt(name, sealed, _aad(aad))
    if as_json:
        emit_json({"plaintext": base64.b64encode(plaintext).decode()})
    else:
        _write_secret(target, plaintext)


@key.command("rewrap")
@click.argument("name")
@click.argument("ciphertexts", nargs=-1)
@click.option("--in", "source", default="-", show_default=True, help="One per line, - stdin.")
@_AAD
@json_option
def key_rewrap(
    name: str, ciphertexts: tuple[str, ...], source: str, aad: str | None, as_json: bool
) -> None:
    """Move ciphertexts (the arguments, else one per line of --in) to the latest version,
    in order, one per line; the plaintext never leaves the server."""
    given = list(ciphertexts) or [
        line.strip() for line in _read_input(source).decode().splitlines() if line.strip()
    ]
    if not given:
        raise click.UsageError("no ciphertext given")
    with _keys_api() as keys:
        moved = [keys.rewrap(name, c, _aad(aad)) for c in given]
    if as_json:
        emit_json({"ciphertexts": moved})
    else:
        click.echo("\n".join(moved))


@key.command("datakey")
@click.argument("name")
@click.option("--bits", type=click.Choice(["128", "256", "512"]), default="256", show_default=True)
@click.option("--wrapped-only", is_flag=True, help="Only the wrapped key, not its plaintext.")
@_AAD
def key_datakey(name: str, bits: str, wrapped_only: bool, aad: str | None) -> None:
    """A new envelope data key as JSON: wrapped under NAME, and (unless --wrapped-only)
    in plaintext (base64) to use once and forget."""
    with _keys_api() as keys:
        made = keys.datakey(name, int(bits), wrapped_only=wrapped_only, aad=_aad(aad))
    answer: dict[str, Any] = {"ciphertext": made.ciphertext, "bits": made.bits}
    if made.plaintext is not None:
        answer["plaintext"] = base64.b64encode(made.plaintext).decode()
    emit_json(answer)


# -- escrow --
@key.group("escrow")
def escrow() -> None:
    """Escrow: shares sealed to named holders, recovered offline under dual control."""


_SHARE = click.option(
    "--share",
    "shares",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A holder's share bundle (from `escrow export`); repeatable.",
)
_IDENTITY = click.option(
    "--identity",
    "identities",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A holder's private key (PEM X25519 or RSA, or base64 X25519); repeatable.",
)


@escrow.command("verify")
@click.argument("name", required=False)
@_SHARE
@_IDENTITY
@click.option("--version", "version", type=click.IntRange(1), help="Default: the newest.")
@json_option
def escrow_verify(
    name: str | None,
    shares: tuple[Path, ...],
    identities: tuple[Path, ...],
    version: int | None,
    as_json: bool,
) -> None:
    """Prove escrow works without revealing the key. With NAME: the server checks every
    version's envelopes and key check values. With --share/--identity (offline, no
    server): the holders' shares rebuild the key in memory and match its check value."""
    if shares or identities:
        from tether.keys.recover import recover_files

        recovered = recover_files(shares, identities, version)
        if name is not None and recovered.key != name:
            raise click.UsageError(f"the shares are of key {recovered.key}, not {name}")
        result: dict[str, Any] = {
            "key": recovered.key,
            "version": recovered.version,
            "kcv": recovered.kcv,
            "verified": True,
        }
    elif name is None:
        raise click.UsageError("name a key, or give --share and --identity files")
    else:
        result = post(f"/v1/keys/{name}/escrow/verify")
    if as_json:
        emit_json(result)
    elif result.get("verified") or result.get("ok"):
        out.print(f"Escrow of key {result.get('key', name)} verified.")
    else:
        show_record(f"escrow of key {name}", result, "table")
        sys.exit(1)


@escrow.command("request")
@click.argument("name")
@click.option("--reason")
@json_option
def escrow_request(name: str, reason: str | None, as_json: bool) -> None:
    """Start escrow recovery: an approval request; once approved, `escrow export`."""
    _opened(post(f"/v1/keys/{name}/escrow/recovery", {"reason": reason})["approval"], as_json)


@escrow.command("export")
@click.argument("name")
@click.option("--approval", required=True, help="The approved escrow-recovery request.")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write one bundle per holder (<holder>.json, mode 0600).",
)
def escrow_export(name: str, approval: str, directory: Path) -> None:
    """Take the holders' sealed share bundles, once, after the approvals; give each
    holder theirs. They are sealed to the holders' keys: no share is in the clear."""
    bundles = post(f"/v1/keys/{name}/escrow/export", {"approval": approval})["bundles"]
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for holder, bundle in sorted(bundles.items()):
        path = directory / f"{holder}.json"
        _write_secret(str(path), json.dumps(bundle, indent=2, sort_keys=True).encode())
        out.print(f"{holder}: {path}")


@escrow.command("recover")
@_SHARE
@_IDENTITY
@click.option("--version", "version", type=click.IntRange(1), help="Default: the newest.")
@click.option("--out", "target", required=True, help="New file (mode 0600), or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["raw", "base64", "pem"]))
def escrow_recover(
    shares: tuple[Path, ...],
    identities: tuple[Path, ...],
    version: int | None,
    target: str,
    fmt: str | None,
) -> None:
    """Offline: rebuild the key from M holders' shares, without any Tether server or
    root key (the same as `python -m tether.keys.recover`)."""
    from tether.keys.recover import encode_material, recover_files

    if not shares or not identities:
        raise click.UsageError("give the holders' --share and --identity files")
    recovered = recover_files(shares, identities, version)
    _write_secret(target, encode_material(recovered, fmt))
    if target != "-":
        out.print(
            f"Key {recovered.key} version {recovered.version} (kcv {recovered.kcv}) "
            f"written to {target}."
        )


# -- approvals --
@click.group()
def approval() -> None:
    """Approval requests of dual control: M of N distinct approvers, within a window."""


@approval.command("list")
@click.option("--state", type=click.Choice(_APPROVAL_STATES))
@click.option("--key")
@output_option
def approval_list(output: str, **filters: str | None) -> None:
    """List approval requests."""
    items = get("/v1/approvals", **filters)["items"]
    show_listing(f"{len(items)} approval requests", APPROVAL_COLUMNS, items, output)


@approval.command("show")
@click.argument("approval_id")
@output_option
def approval_show(approval_id: str, output: str) -> None:
    """Show an approval request and its votes."""
    show_record(f"approval {approval_id}", get(f"/v1/approvals/{approval_id}"), output)


def _vote(approval_id: str, verb: str, comment: str | None, as_json: bool) -> None:
    result = post(f"/v1/approvals/{approval_id}/{verb}", {"comment": comment})
    if as_json:
        emit_json(result)
        return
    votes = len(result.get("approvals", []))
    out.print(
        f"Approval {approval_id}: {result['state']} ({votes} of {result['threshold']} approvals)."
    )


@approval.command("approve")
@click.argument("approval_id")
@click.option("--comment")
@json_option
def approval_approve(approval_id: str, comment: str | None, as_json: bool) -> None:
    """Approve (a key-approver of the request's group; never its requester)."""
    _vote(approval_id, "approve", comment, as_json)


@approval.command("deny")
@click.argument("approval_id")
@click.option("--comment")
@json_option
def approval_deny(approval_id: str, comment: str | None, as_json: bool) -> None:
    """Deny: the request ends, and nothing changes."""
    _vote(approval_id, "deny", comment, as_json)


COMMANDS = [key, approval]
