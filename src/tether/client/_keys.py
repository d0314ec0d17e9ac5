"""Using confidentiality keys: each call a policy decision on the server, made with the
caller's task token (tether.keys; docs/keys.md)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tether.client._http import TetherClient


@dataclass(frozen=True, slots=True)
class DataKey:
    """An envelope data key: `ciphertext` is it wrapped under the named key (store it
    beside the data); `plaintext` is the key itself, None when asked for wrapped only."""

    ciphertext: str
    plaintext: bytes | None
    bits: int

    def __repr__(self) -> str:  # the plaintext key stays out of reprs and tracebacks
        return f"DataKey(ciphertext={self.ciphertext[:16]!r}..., bits={self.bits})"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One item of a batch: its `value` (a ciphertext, or the plaintext bytes), or the
    `error` and `code` the server refused it with. A refused item fails alone."""

    value: str | bytes | None
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:  # a decrypted value stays out of reprs
        return "BatchItem(ok)" if self.ok else f"BatchItem(error={self.error!r})"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class KeyClient:
    """The uses of keys (`encrypt`, `decrypt`, `rewrap`, `datakey`, `sign`, `verify`,
    `hmac`), with `token` as bearer (a workload's task token; None: the client's own
    TETHER_TOKEN). Binary values are bytes; ciphertexts and signatures are strings."""

    def __init__(self, api: TetherClient, token: str | None = None) -> None:
        self._api = api
        self._headers = {"authorization": f"Bearer {token}"} if token else {}

    def __repr__(self) -> str:
        return f"KeyClient(addr={self._api.addr!r})"

    def _use(self, key: str, operation: str, body: dict[str, Any]) -> Any:
        return self._api.request(
            "POST", f"/v1/keys/{key}/{operation}", json=body, headers=self._headers
        )

    def encrypt(self, key: str, plaintext: bytes, aad: bytes | None = None) -> str:
        """`tether:v<N>:…`, bound to `aad` (which decrypt must be given again)."""
        body = {"plaintext": _b64(plaintext), "aad": None if aad is None else _b64(aad)}
        return str(self._use(key, "encrypt", body)["ciphertext"])

    def decrypt(self, key: str, ciphertext: str, aad: bytes | None = None) -> bytes:
        body = {"ciphertext": ciphertext, "aad": None if aad is None else _b64(aad)}
        return base64.b64decode(self._use(key, "decrypt", body)["plaintext"])

    def encrypt_batch(
        self, key: str, items: Sequence[tuple[bytes, bytes | None]]
    ) -> list[BatchItem]:
        """(plaintext, aad) pairs; a ciphertext (str) per item, in order."""
        body = [{"plaintext": _b64(p), **({} if a is None else {"aad": _b64(a)})} for p, a in items]
        answer = self._use(key, "encrypt", {"items": body})["items"]
        return [_item(x, "ciphertext", binary=False) for x in answer]

    def decrypt_batch(self, key: str, items: Sequence[tuple[str, bytes | None]]) -> list[BatchItem]:
        """(ciphertext, aad) pairs; the plaintext (bytes) per item, in order."""
        body = [{"ciphertext": c, **({} if a is None else {"aad": _b64(a)})} for c, a in items]
        answer = self._use(key, "decrypt", {"items": body})["items"]
        return [_item(x, "plaintext", binary=True) for x in answer]

    def rewrap(self, key: str, ciphertext: str, aad: bytes | None = None) -> str:
        """The same plaintext under the key's latest version; the plaintext never leaves
        the server."""
        body = {"ciphertext": ciphertext, "aad": None if aad is None else _b64(aad)}
        return str(self._use(key, "rewrap", body)["ciphertext"])

    def datakey(
        self, key: str, bits: int = 256, *, wrapped_only: bool = False, aad: bytes | None = None
    ) -> DataKey:
        body: dict[str, Any] = {"bits": bits, "wrapped_only": wrapped_only}
        if aad is not None:
            body["aad"] = _b64(aad)
        answer = self._use(key, "datakey", body)
        plain = answer.get("plaintext")
        return DataKey(
            ciphertext=answer["ciphertext"],
            plaintext=None if plain is None else base64.b64decode(plain),
            bits=int(answer["bits"]),
        )

    def sign(self, key: str, message: bytes, *, prehashed: bool = False) -> str:
        body = {"message": _b64(message), "prehashed": prehashed}
        return str(self._use(key, "sign", body)["signature"])

    def verify(self, key: str, message: bytes, signature: str, *, prehashed: bool = False) -> bool:
        body = {"message": _b64(message), "signature": signature, "prehashed": prehashed}
        return bool(self._use(key, "verify", body)["valid"])

    def hmac(self, key: str, message: bytes) -> str:
        return str(self._use(key, "hmac", {"message": _b64(message)})["hmac"])


def _item(raw: dict[str, Any], field: str, *, binary: bool) -> BatchItem:
    if "error" in raw:
        return BatchItem(None, str(raw["error"]), raw.get("code"))
    value = raw[field]
    return BatchItem(base64.b64decode(value) if binary else str(value))
