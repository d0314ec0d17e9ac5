"""Offline escrow recovery: rebuild a key version from M holders' shares.

    python -m tether.keys.recover --share alice.json --share bob.json --share carol.json \\
        --identity alice.pem --identity bob.pem --identity carol.pem --out orders-dek.key

Each `--share` is a holder's share bundle (what `tether key escrow export` gave them,
after the escrow-recovery approval) or a single share envelope; each `--identity` a
holder's private key (PEM X25519 or RSA, or base64 X25519). It needs no Tether server
and no Tether root key. With fewer than the threshold of shares that open, or shares
that do not rebuild the key's check value, it refuses and writes nothing.

The material goes to `--out` (created with mode 0600; an existing file is refused) or,
only with `--out -`, to stdout. `--format`: `raw` bytes (the default for AEAD and HMAC
keys), `base64`, or `pem` (PKCS#8, the default for ed25519 and ecdsa-p256 keys).
`--verify-only` rebuilds in memory, compares the key check value, and prints the
result without the material: the holders' proof that escrow works.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tether.keys._escrow import Recovered, load_identity, recover
from tether.keys._types import private_pem
from tether.keys.errors import KeysError, RecoveryFailed


def recover_files(
    shares: Sequence[Path], identities: Sequence[Path], version: int | None = None
) -> Recovered:
    """`recover` over files: share bundles/envelopes (JSON) and private identities."""
    bundles = []
    for path in shares:
        try:
            bundles.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise RecoveryFailed(
                f"{path}: not a readable share file ({type(exc).__name__})"
            ) from None
    keys = []
    for path in identities:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RecoveryFailed(f"{path}: cannot be read ({type(exc).__name__})") from None
        keys.append(load_identity(data, str(path)))
    return recover(bundles, keys, version)


def encode_material(recovered: Recovered, fmt: str | None) -> bytes:
    fmt = fmt or ("pem" if recovered.key_type.signing else "raw")
    if fmt == "raw":
        return recovered.material
    if fmt == "base64":
        return base64.b64encode(recovered.material) + b"\n"
    if fmt == "pem":
        if not recovered.key_type.signing:
            raise RecoveryFailed(f"--format pem: {recovered.key_type.value} keys have no PEM form")
        return private_pem(recovered.key_type, recovered.material)
    raise RecoveryFailed(f"--format: must be raw, base64 or pem, not {fmt!r}")


def write_output(out: str, data: bytes) -> None:
    if out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tether.keys.recover",
        description="Rebuild an escrowed Tether key from its holders' shares, offline.",
    )
    parser.add_argument("--share", action="append", required=True, type=Path, help="a share file")
    parser.add_argument(
        "--identity", action="append", required=True, type=Path, help="a holder's private key"
    )
    parser.add_argument("--version", type=int, help="the key version (default: the newest)")
    parser.add_argument("--out", help="the file to create (mode 0600), or - for stdout")
    parser.add_argument("--format", choices=("raw", "base64", "pem"))
    parser.add_argument("--verify-only", action="store_true", help="check, print no material")
    args = parser.parse_args(argv)
    if not args.verify_only and not args.out:
        parser.error("--out FILE (or --out -) is required unless --verify-only")
    try:
        recovered = recover_files(args.share, args.identity, args.version)
        if args.verify_only:
            print(
                json.dumps(
                    {
                        "key": recovered.key,
                        "version": recovered.version,
                        "kcv": recovered.kcv,
                        "verified": True,
                    }
                )
            )
            return 0
        write_output(args.out, encode_material(recovered, args.format))
    except FileExistsError:
        print(f"error: {args.out} exists; refusing to overwrite it", file=sys.stderr)
        return 1
    except KeysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.out != "-":
        print(
            json.dumps(
                {
                    "key": recovered.key,
                    "version": recovered.version,
                    "kcv": recovered.kcv,
                    "out": args.out,
                }
            ),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a module
    raise SystemExit(main())
