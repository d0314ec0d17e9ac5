"""Escrow: M of N shares sealed to holders' public keys; recovery offline, after
approvals, with the documented command; fewer than M shares recover nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.keys.conftest import HOLDERS, World
from tether.keys import (
    ApprovalClosed,
    EscrowError,
    RecoveryFailed,
    key_check_value,
    load_identity,
    recover,
)
from tether.keys._escrow import open_envelope
from tether.keys._types import decode_token, load

ESCROW = {"holders": list(HOLDERS), "threshold": 3}


def _export(world: World, name: str) -> dict[str, dict[str, object]]:
    request = world.keys.request_escrow_recovery(world.admin, name, "disaster drill")
    with pytest.raises(ApprovalClosed):  # recovery needs the approvals first
        world.keys.escrow_export(world.admin, name, request.id)
    world.keys.approve(world.approver("bob"), request.id)
    world.keys.approve(world.approver("carol"), request.id)
    bundles = world.keys.escrow_export(world.admin, name, request.id)
    with pytest.raises(ApprovalClosed):  # once
        world.keys.escrow_export(world.admin, name, request.id)
    return bundles


def _write(
    tmp_path: Path, world: World, bundles: dict[str, dict[str, object]], who: list[str]
) -> list[str]:
    args = []
    for holder in who:
        share = tmp_path / f"{holder}.share.json"
        share.write_text(json.dumps(bundles[holder]))
        identity = tmp_path / f"{holder}.pem"
        identity.write_bytes(world.holder_keys[holder])
        args += ["--share", str(share), "--identity", str(identity)]
    return args


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "tether.keys.recover", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_three_of_five_holders_recover_the_key_offline_and_two_do_not(
    world: World, tmp_path: Path
) -> None:
    world.make_key("dek", "aes256-gcm", escrow=ESCROW)
    ciphertext = world.keys.encrypt(world.user, "dek", b"escrowed data", b"ctx")
    bundles = _export(world, "dek")
    assert set(bundles) == set(HOLDERS)
    kcv = world.keys.get(world.admin, "dek").key.latest.kcv

    out = tmp_path / "dek.key"
    done = _run([*_write(tmp_path, world, bundles, ["h1", "h3", "h5"]), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    material = out.read_bytes()
    assert len(material) == 32 and key_check_value(material) == kcv
    assert done.stdout == ""  # the material went to the file only
    # the recovered material opens what Tether encrypted
    version, payload = decode_token(ciphertext)
    assert (
        load(world.keys.get(world.admin, "dek").key.type, version, material).decrypt(
            "dek", payload, b"ctx"
        )
        == b"escrowed data"
    )

    two = _run([*_write(tmp_path, world, bundles, ["h2", "h4"]), "--out", str(tmp_path / "no.key")])
    assert two.returncode == 1 and "recovery takes 3" in two.stderr
    assert not (tmp_path / "no.key").exists()

    verified = _run([*_write(tmp_path, world, bundles, ["h2", "h4", "h5"]), "--verify-only"])
    assert verified.returncode == 0 and json.loads(verified.stdout)["kcv"] == kcv
    assert world.node.verify_audit().ok
    actions = [r.action for r in world.audit("key.escrow")]
    assert actions == ["key.escrow.export"]


def test_shares_of_other_holders_or_a_tampered_share_recover_nothing(mem_world: World) -> None:
    w = mem_world
    w.make_key("signer", "ed25519", escrow=ESCROW)
    bundles = _export(w, "signer")
    identities = [load_identity(w.holder_keys[h]) for h in ("h1", "h2", "h3")]
    # three bundles but the identities of only two of their holders
    with pytest.raises(RecoveryFailed):
        recover([bundles["h1"], bundles["h2"], bundles["h4"]], identities)
    recovered = recover([bundles["h1"], bundles["h2"], bundles["h3"]], identities)
    assert recovered.kcv == w.keys.get(w.admin, "signer").key.latest.kcv
    tampered = json.loads(json.dumps(bundles["h3"]))
    tampered["shares"][0]["version"] = 2  # relabelled: the envelope's header is its AAD
    assert open_envelope(tampered["shares"][0], identities[2]) is None


def test_each_rotation_is_escrowed_and_escrow_verify_checks_without_the_key(
    mem_world: World,
) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm", escrow=ESCROW)
    w.keys.rotate(w.admin, "dek")
    report = w.keys.escrow_verify(w.admin, "dek")
    assert report.ok and [v.version for v in report.versions] == [1, 2]
    assert all(set(v.holders) == set(HOLDERS) for v in report.versions)
    bundles = _export(w, "dek")
    assert {e["version"] for e in bundles["h1"]["shares"]} == {1, 2}  # type: ignore[index, union-attr]
    shares = {}
    for number in (1, 2):
        opened = []
        for holder in ("h1", "h2", "h5"):
            envelope = next(
                e
                for e in bundles[holder]["shares"]
                if e["version"] == number  # type: ignore[union-attr, index, attr-defined]
            )
            share = open_envelope(envelope, load_identity(w.holder_keys[holder]))
            assert share is not None
            opened.append(share)
        shares[number] = opened
    checked = w.keys.escrow_verify(w.admin, "dek", shares)
    assert checked.ok and all(v.reconstructs for v in checked.versions)
    wrong = w.keys.escrow_verify(w.admin, "dek", {1: shares[2], 2: shares[2]})
    assert not wrong.ok and wrong.versions[0].reconstructs is False
    assert "material" not in json.dumps(checked.to_dict())


def test_escrow_configuration_is_checked(mem_world: World) -> None:
    w = mem_world
    with pytest.raises(EscrowError):
        w.make_key("a", "aes256-gcm", escrow={"holders": ["h1", "nobody"], "threshold": 2})
    with pytest.raises(EscrowError):
        w.make_key("b", "aes256-gcm", escrow={"holders": ["h1", "h2"], "threshold": 3})
    from tether.keys import EscrowHolder

    with pytest.raises(EscrowError) as caught:
        EscrowHolder.from_spec({"id": "x", "recipient": "age1qqqq"}, "escrow_holders[0]")
    assert str(caught.value).startswith("escrow_holders[0].recipient:")
    w.make_key("c", "aes256-gcm")
    with pytest.raises(EscrowError):
        w.keys.request_escrow_recovery(w.admin, "c")


def test_escrow_added_later_needs_approvals_and_then_covers_every_version(
    mem_world: World,
) -> None:
    w = mem_world
    w.make_key("dek", "aes256-gcm", labels={"data_classification": "restricted"})
    assert [f.rule for f in w.keys.findings()] == ["key-escrow-missing"]
    (request,) = w.keys.configure(w.admin, "dek", {"escrow": ESCROW}).approvals
    assert w.keys.get(w.admin, "dek").key.escrow is None
    w.keys.approve(w.approver("carol"), request.id)
    w.keys.approve(w.approver("dave"), request.id)
    assert w.keys.escrow_verify(w.admin, "dek").ok
    assert w.keys.findings() == []
