"""Confidentiality keys in-process: encrypt and decrypt of 1 KiB, one at a time (one
thread and 32 threads) and in batches, through the whole use path: separation of
duties, the Cedar decision (the default policy, schema-validated), usage counting in
reserved blocks, the AEAD, the usage tally. A node on SQLite holds the key.

Target (design.md §6) over HTTP at concurrency 32: >= 3,000 encrypt/decrypt per s; the
in-process figures bound what the HTTP path can reach.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tether.app import Tether
from tether.config import Settings
from tether.keys import KeyAdmin, KeyParts, KeyService, KeyUser, cedar_decider
from tether.model import Entitlement, Identity, Kind, Profile
from tether.policy import PolicyEngine

PAYLOAD = os.urandom(1024)


def _service(node: Tether, key_type: str) -> tuple[KeyService, KeyUser]:
    identities = {
        "dek-id": Identity(
            "dek-id", Kind.ENCRYPTION_KEY, "ops", "bench", "BENCH-1", "prod", system="orders"
        ),
        "orders-api": Identity(
            "orders-api",
            Kind.WORKLOAD,
            "ops",
            "bench",
            "BENCH-1",
            "prod",
            system="orders",
            entitlements=(Entitlement("dek-use"),),
        ),
    }
    profiles = {
        "dek-use": Profile("dek-use", "key", dt.timedelta(hours=1), target="dek"),
    }
    engine = PolicyEngine.compile([])
    service = KeyService(
        KeyParts(
            store=node.store,
            barrier=node.barrier,
            audit=node.audit,
            identity_of=identities.get,
            decide=cedar_decider(lambda: engine, identities.get, lambda: profiles),
        )
    )
    service.create(KeyAdmin("bench"), "dek", key_type, "dek-id")
    return service, KeyUser("orders-api-run", "orders-api", attested=True, task_id="tsk_bench")


def _rate(work: Callable[[], int], seconds: float, threads: int = 1) -> float:
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            done[index] += work()

    started = time.monotonic()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return round(sum(done) / (time.monotonic() - started))


def _one_type(node: Tether, key_type: str, seconds: float) -> dict[str, Any]:
    service, user = _service(node, key_type)
    ciphertext = service.encrypt(user, "dek", PAYLOAD)

    def encrypt() -> int:
        service.encrypt(user, "dek", PAYLOAD)
        return 1

    def decrypt() -> int:
        service.decrypt(user, "dek", ciphertext)
        return 1

    batch_in = [(PAYLOAD, b"")] * 100
    batch_out = [(ciphertext, b"")] * 100

    def encrypt_batch() -> int:
        return len(service.encrypt_batch(user, "dek", batch_in))

    def decrypt_batch() -> int:
        return len(service.decrypt_batch(user, "dek", batch_out))

    out = {
        "encrypt_1kib_per_s": _rate(encrypt, seconds),
        "decrypt_1kib_per_s": _rate(decrypt, seconds),
        "encrypt_1kib_per_s_32_threads": _rate(encrypt, seconds, 32),
        "decrypt_1kib_per_s_32_threads": _rate(decrypt, seconds, 32),
        "encrypt_batch100_items_per_s": _rate(encrypt_batch, seconds),
        "decrypt_batch100_items_per_s": _rate(decrypt_batch, seconds),
    }
    started = time.monotonic()
    entries = service.flush_usage()
    out["usage_flush"] = {"entries": entries, "ms": round((time.monotonic() - started) * 1000, 1)}
    info = service.get(KeyAdmin("bench"), "dek")
    out["encryptions_reserved_v1"] = info.versions[0].encryptions
    return out


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    """The benchmark's entry point (bench/__main__.py: `"keys": keys_bench.run`)."""
    seconds = 1.0 if quick else 5.0
    results: dict[str, Any] = {}
    for key_type in ("aes256-gcm", "chacha20-poly1305"):
        home = tmp / key_type
        node = Tether(Settings(home=home, database_url=f"sqlite:///{home / 'bench.db'}"))
        node.initialize(1, 1)
        try:
            results[key_type] = _one_type(node, key_type, seconds)
        finally:
            node.stop()
    results["targets"] = {"http_encrypt_decrypt_1kib_per_s_at_32": 3000}
    return results


if __name__ == "__main__":
    import json

    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(Path(folder), "--quick" in sys.argv), indent=2))
