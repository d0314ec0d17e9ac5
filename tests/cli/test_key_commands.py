"""`tether key` and `tether approval` against a real server: a key admin creates and
rotates an escrowed key, a workload encrypts, decrypts and rewraps with its task token,
each role is refused the other's commands, and escrow recovery and deletion run through
M-of-N approvals, ending with an offline recovery that needs 3 of the 5 holders."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from tests.cli.running import running_server, task_token
from tests.scenario.harness import CliResult, Server

HOLDERS = ("h1", "h2", "h3", "h4", "h5")


def _holders() -> tuple[list[dict[str, str]], dict[str, bytes]]:
    public, private = [], {}
    for name in HOLDERS:
        key = x25519.X25519PrivateKey.generate()
        raw = key.public_key().public_bytes_raw()
        public.append({"id": name, "recipient": "x25519:" + base64.b64encode(raw).decode()})
        private[name] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return public, private


def _estate(holders: list[dict[str, str]]) -> dict[str, Any]:
    base = {"owner": "data", "purpose": "p", "justification": "DATA-1", "environment": "prod"}
    return {
        "version": 1,
        "owners": [{"id": "data", "contact": "data@example.com"}],
        "escrow_holders": holders,
        "approver_groups": [
            {"id": "key-approvers", "members": ["bob", "carol", "dave"], "threshold": 2}
        ],
        "profiles": [
            {
                "id": "orders-dek-use",
                "provider": "key",
                "target": "orders-dek",
                "scopes": ["encrypt", "decrypt", "rewrap", "datakey"],
                "max_ttl": "1h",
            }
        ],
        "identities": [
            {
                **base,
                "id": "orders-dek",
                "kind": "encryption_key",
                "data_classification": "restricted",
            },
            {
                **base,
                "id": "orders-api",
                "kind": "service_account",
                "entitlements": [{"profile": "orders-dek-use"}],
            },
        ],
    }


@contextmanager
def _as(server: Server, token: str) -> Iterator[Server]:
    saved, server.token = server.token, token
    try:
        yield server
    finally:
        server.token = saved


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.stderr
    return result


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[Server, dict[str, str], dict[str, bytes]]]:
    public, private = _holders()
    with running_server(tmp_path, document=_estate(public)) as server:
        tokens = {}
        for name, role in (
            ("alice", "key-admin"),
            ("bob", "key-approver"),
            ("carol", "key-approver"),
            ("dave", "key-approver"),
        ):
            made = _ok(server.cli("token", "create", "--name", name, "--role", role, "--json"))
            tokens[name] = made.json()["token"]
        tokens["workload"] = task_token(server, "orders-api", tmp_path)["token"]
        yield server, tokens, private


def test_admin_creates_and_rotates_and_a_workload_uses_the_key(
    keyed: tuple[Server, dict[str, str], dict[str, bytes]],
) -> None:
    server, tokens, _ = keyed
    with _as(server, tokens["alice"]):
        refused = server.cli(
            "key",
            "create",
            "k2",
            "--type",
            "aes256-gcm",
            "--identity",
            "orders-dek",
            "--escrow-holder",
            "h1",
        )
        assert refused.code == 2 and "--escrow-threshold" in refused.stderr
        created = _ok(
            server.cli(
                "key",
                "create",
                "orders-dek",
                "--type",
                "aes256-gcm",
                "--identity",
                "orders-dek",
                "--approver-group",
                "key-approvers",
                *[arg for h in HOLDERS for arg in ("--escrow-holder", h)],
                "--escrow-threshold",
                "3",
                "--json",
            )
        ).json()
        assert created["latest_version"] == 1 and created["escrow"]["threshold"] == 3
        listed = _ok(server.cli("key", "list")).stdout
        assert "orders-dek" in listed and "3 of 5" in listed
        unknown = server.cli("key", "create", "x", "--type", "aes256-gcm", "--identity", "nope")
        assert unknown.code == 1 and "identity" in unknown.stderr

    with _as(server, tokens["workload"]):
        sealed = _ok(
            server.cli("key", "encrypt", "orders-dek", "--aad", "order-7", stdin="the secret")
        ).stdout.strip()
        assert sealed.startswith("tether:v1:")
        opened = _ok(server.cli("key", "decrypt", "orders-dek", sealed, "--aad", "order-7"))
        assert opened.stdout == "the secret"
        wrong = server.cli("key", "decrypt", "orders-dek", sealed, "--aad", "order-8")
        assert wrong.code == 1 and "the secret" not in wrong.stderr
        no_aad = _ok(server.cli("key", "encrypt", "orders-dek", "--plaintext", "x", "--json"))
        assert no_aad.json()["ciphertext"].startswith("tether:v1:")
        # A workload's token does not administer keys.
        assert server.cli("key", "rotate", "orders-dek").code == 1
        datakey = json.loads(_ok(server.cli("key", "datakey", "orders-dek")).stdout)
        assert len(base64.b64decode(datakey["plaintext"])) == 32

    with _as(server, tokens["alice"]):
        # An admin's token does not use keys.
        denied = server.cli("key", "decrypt", "orders-dek", sealed, "--aad", "order-7")
        assert denied.code == 1 and "the secret" not in denied.stdout
        rotated = _ok(server.cli("key", "rotate", "orders-dek", "--json")).json()
        assert rotated["latest_version"] == 2
        shown = _ok(server.cli("key", "show", "orders-dek")).stdout
        assert "2 versions" in shown

    with _as(server, tokens["workload"]):
        moved = _ok(
            server.cli("key", "rewrap", "orders-dek", "--aad", "order-7", stdin=sealed + "\n")
        ).stdout.strip()
        assert moved.startswith("tether:v2:")
        again = _ok(server.cli("key", "decrypt", "orders-dek", moved, "--aad", "order-7"))
        assert again.stdout == "the secret"

    with _as(server, tokens["alice"]):
        raised = _ok(
            server.cli("key", "configure", "orders-dek", "--min-decryption-version", "2", "--json")
        ).json()
        assert raised["key"]["min_decryption_version"] == 2 and raised["approvals"] == []
    with _as(server, tokens["workload"]):
        old = server.cli("key", "decrypt", "orders-dek", sealed, "--aad", "order-7")
        assert old.code == 1 and "min_decryption_version" in old.stderr

    assert _ok(server.cli("audit", "verify")).code == 0
    assert not any("the secret" in e for e in server.cli_stderr)


def test_escrow_recovery_and_deletion_need_two_distinct_approvers(
    keyed: tuple[Server, dict[str, str], dict[str, bytes]], tmp_path: Path
) -> None:
    server, tokens, private = keyed
    with _as(server, tokens["alice"]):
        _ok(
            server.cli(
                "key",
                "create",
                "orders-dek",
                "--type",
                "hmac-sha256",
                "--identity",
                "orders-dek",
                "--approver-group",
                "key-approvers",
                *[arg for h in HOLDERS for arg in ("--escrow-holder", h)],
                "--escrow-threshold",
                "3",
            )
        )
        assert "verified" in _ok(server.cli("key", "escrow", "verify", "orders-dek")).stdout
        asked = _ok(server.cli("key", "escrow", "request", "orders-dek", "--json")).json()
        approval = asked["approval"]["id"]
        early = server.cli(
            "key",
            "escrow",
            "export",
            "orders-dek",
            "--approval",
            approval,
            "--dir",
            str(tmp_path / "early"),
        )
        assert early.code == 1 and not (tmp_path / "early").exists()
        # The requester cannot approve their own request.
        assert server.cli("approval", "approve", approval).code == 1

    with _as(server, tokens["bob"]):
        pending = _ok(server.cli("approval", "list", "--state", "pending", "--json")).json()
        assert [a["id"] for a in pending] == [approval]
        first = _ok(server.cli("approval", "approve", approval, "--json")).json()
        assert first["state"] == "pending"
    with _as(server, tokens["carol"]):
        assert "approved" in _ok(server.cli("approval", "approve", approval)).stdout

    shares = tmp_path / "shares"
    with _as(server, tokens["alice"]):
        _ok(
            server.cli(
                "key",
                "escrow",
                "export",
                "orders-dek",
                "--approval",
                approval,
                "--dir",
                str(shares),
            )
        )
        # Once only.
        twice = server.cli(
            "key",
            "escrow",
            "export",
            "orders-dek",
            "--approval",
            approval,
            "--dir",
            str(tmp_path / "twice"),
        )
        assert twice.code == 1
    assert sorted(p.name for p in shares.iterdir()) == [f"{h}.json" for h in HOLDERS]
    assert all(p.stat().st_mode & 0o077 == 0 for p in shares.iterdir())

    identities = tmp_path / "identities"
    identities.mkdir()
    for name, pem in private.items():
        (identities / f"{name}.pem").write_bytes(pem)

    def offline(*names: str) -> list[str]:
        args = []
        for name in names:
            args += ["--share", str(shares / f"{name}.json")]
            args += ["--identity", str(identities / f"{name}.pem")]
        return args

    # Offline, with no TETHER_ADDR reachable: the shares alone.
    offline_server = Server(home=tmp_path / "nowhere")
    verified = _ok(offline_server.cli("key", "escrow", "verify", *offline("h1", "h3", "h5")))
    assert "verified" in verified.stdout
    material = tmp_path / "orders-dek.key"
    _ok(
        offline_server.cli(
            "key", "escrow", "recover", *offline("h2", "h4", "h5"), "--out", str(material)
        )
    )
    assert len(material.read_bytes()) == 32 and material.stat().st_mode & 0o077 == 0
    two = offline_server.cli(
        "key", "escrow", "recover", *offline("h1", "h2"), "--out", str(tmp_path / "two.key")
    )
    assert two.code == 1 and not (tmp_path / "two.key").exists()

    with _as(server, tokens["alice"]):
        deletion = _ok(server.cli("key", "delete", "orders-dek", "--json")).json()
        delete_id = deletion["approval"]["id"]
    with _as(server, tokens["bob"]):
        _ok(server.cli("approval", "approve", delete_id))
        shown = _ok(server.cli("key", "show", "orders-dek", "--json")).json()
        assert shown["deletion"] is None  # one approval of two does nothing
    with _as(server, tokens["dave"]):
        _ok(server.cli("approval", "approve", delete_id))
    with _as(server, tokens["alice"]):
        scheduled = _ok(server.cli("key", "show", "orders-dek", "--json")).json()
        assert scheduled["deletion"] is not None
        _ok(server.cli("key", "delete", "orders-dek", "--cancel"))
        assert _ok(server.cli("key", "show", "orders-dek", "--json")).json()["deletion"] is None

    with _as(server, tokens["alice"]):
        denied_id = _ok(server.cli("key", "delete", "orders-dek", "--json")).json()["approval"]
    with _as(server, tokens["carol"]):
        assert "denied" in _ok(server.cli("approval", "deny", denied_id["id"])).stdout

    audit = _ok(server.cli("audit", "export")).stdout
    for action in ("key.approval.approve", "key.approval.deny", "key.escrow.export"):
        assert action in audit, action
    assert _ok(server.cli("audit", "verify")).code == 0
