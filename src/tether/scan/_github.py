"""GitHub secret scanning's partner alerts: the payload, its signature, our answer.

GitHub signs the request body with ECDSA P-256 / SHA-256 and names the key in
`Github-Public-Key-Identifier`; its public keys are published at
`https://api.github.com/meta/public_keys/secret_scanning`. Tether has no network to
fetch them at request time: the operator saves that document to a file
(`TETHER_GITHUB_SCANNING_KEYS`), read again whenever it changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.scan.errors import ScanError

KEY_ID_HEADER = "github-public-key-identifier"
SIGNATURE_HEADER = "github-public-key-signature"
_MAX_ALERTS = 1000


class InvalidAlert(ScanError):
    """A partner alert that cannot be taken: the message names the field."""

    status_code = 422
    code = "invalid_alert"


class BadSignature(ScanError):
    status_code = 401
    code = "bad_signature"


@dataclass(frozen=True, slots=True)
class Alert:
    token: str = field(repr=False)
    type: str
    url: str
    source: str


class GithubKeys:
    """GitHub's public keys, from the file the operator keeps current."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._loaded: tuple[float, dict[str, ec.EllipticCurvePublicKey]] | None = None

    @property
    def configured(self) -> bool:
        return self._path is not None

    def _keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        if self._path is None:
            raise BadSignature("GitHub secret scanning alerts are not configured on this server")
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError:
            raise BadSignature("GitHub's public keys cannot be read on this server") from None
        with self._lock:
            if self._loaded is not None and self._loaded[0] == mtime:
                return self._loaded[1]
            keys = _parse_keys(self._path.read_bytes())
            self._loaded = (mtime, keys)
            return keys

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        key_id = headers.get(KEY_ID_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        public = self._keys().get(key_id)
        if public is None:
            raise BadSignature(f"{KEY_ID_HEADER}: not a known GitHub key")
        try:
            public.verify(
                base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256())
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise BadSignature(f"{SIGNATURE_HEADER}: does not verify the body") from None


def _parse_keys(raw: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    try:
        document = json.loads(raw)
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in document["public_keys"]:
            public = serialization.load_pem_public_key(entry["key"].encode())
            if isinstance(public, ec.EllipticCurvePublicKey):
                keys[str(entry["key_identifier"])] = public
    except (ValueError, KeyError, TypeError):
        raise BadSignature("GitHub's public keys file is not GitHub's format") from None
    return keys


def parse_alerts(body: bytes) -> list[Alert]:
    try:
        items = json.loads(body)
    except ValueError:
        raise InvalidAlert("(body): must be a JSON array of alerts") from None
    if not isinstance(items, list) or not items or len(items) > _MAX_ALERTS:
        raise InvalidAlert(f"(body): must be a JSON array of 1 to {_MAX_ALERTS} alerts")
    alerts: list[Alert] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidAlert(f"[{index}]: must be an object")
        values: dict[str, str] = {}
        for name in ("token", "type", "url", "source"):
            value = item.get(name, "")
            if not isinstance(value, str) or (name == "token" and not value):
                raise InvalidAlert(f"[{index}].{name}: must be a string")
            values[name] = value[:2048]
        alerts.append(Alert(**values))
    return alerts


def answer(alert: Alert, managed: bool) -> dict[str, Any]:
    """GitHub's expected reply: by the token's SHA-256, never the token itself."""
    return {
        "token_hash": hashlib.sha256(alert.token.encode()).hexdigest(),
        "token_type": alert.type,
        "label": "true_positive" if managed else "false_positive",
    }
