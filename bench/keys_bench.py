"""Confidentiality keys in-process: encrypt and decrypt of 1 KiB, one at a time (one
thread and 32 threads) and in batches, through the whole use path: separation of
duties, the Cedar decision (the default policy, schema-validated), usage counting in
reserved blocks, the AEAD, the usage tally. A node on SQLite holds the key.

Then over HTTP (`http`): a real `tether serve` with one worker process and with one per
core, loaded by wrk at concurrency 32 with a workload's task token (bench.issuance_bench
starts, initializes and loads the server): encrypt and decrypt of 1 KiB (aes256-gcm), a
batch encrypt of 100 such items, and `/v1/sys/health` in the same run, the framework's
ceiling. The load generator shares the server's cores, so these figures understate what
a separate client machine would see.

Target (design.md §6) over HTTP at concurrency 32: >= 3,000 encrypt/decrypt per s; the
in-process figures bound what the HTTP path can reach.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import issuance_bench
from bench.issuance_bench import CONCURRENCY, Idp, _initialize, _ratio, _start_server, _wrk
from tether.app import Tether
from tether.config import Settings
from tether.keys import KeyAdmin, KeyParts, KeyService, KeyUser, cedar_decider
from tether.model import Entitlement, Identity, Kind, Profile
from tether.policy import PolicyEngine

PAYLOAD = os.urandom(1024)
BATCH = 100
_JSON = {"Content-Type": "application/json"}


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

    batch_in = [(PAYLOAD, b"")] * BATCH
    batch_out = [(ciphertext, b"")] * BATCH

    def encrypt_batch() -> int:
        return len(service.encrypt_batch(user, "dek", batch_in))

    def decrypt_batch() -> int:
        return len(service.decrypt_batch(user, "dek", batch_out))

    out: dict[str, Any] = {
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


def http_estate(idp: Idp) -> dict[str, Any]:
    """bench.issuance_bench's estate (its attested workload `deployer`), plus the key's
    `encryption_key` identity and a `key` profile for it, to which `deployer` is entitled."""
    doc = issuance_bench.estate(idp)
    doc["profiles"].append(
        {
            "id": "dek-use",
            "provider": "key",
            "target": "dek",
            "scopes": ["encrypt", "decrypt"],
            "max_ttl": "1h",
        }
    )
    workload = doc["identities"][0]
    doc["identities"] = [
        {**workload, "entitlements": [*workload["entitlements"], {"profile": "dek-use"}]},
        {
            "id": "dek-id",
            "kind": "encryption_key",
            "owner": workload["owner"],
            "purpose": "bench",
            "justification": "BENCH",
            "environment": "prod",
            "data_classification": "confidential",
        },
    ]
    return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _ok(response: httpx.Response) -> Any:
    """The response's JSON body; a refusal raises with the server's explanation."""
    if response.is_error:
        request = response.request
        raise RuntimeError(
            f"{request.method} {request.url}: {response.status_code} {response.text}"
        )
    return response.json()


def _serve_and_load(tmp: Path, workers: int, seconds: float) -> dict[str, Any]:
    """One server with `workers` processes: a key-admin API token creates the key, the
    workload starts a task with its attestation, and its task token encrypts and decrypts
    under wrk for `seconds` each at concurrency 32."""
    idp = Idp()
    server, base = _start_server(tmp, workers)
    try:
        admin = _initialize(base, http_estate(idp))
        time.sleep(1.5)  # every worker has the estate (the event feed is within a second)
        key_admin = _ok(
            httpx.post(
                f"{base}/v1/tokens",
                json={"name": "bench-keys", "roles": ["key-admin"]},
                headers=admin,
            )
        )
        _ok(
            httpx.post(
                f"{base}/v1/keys",
                json={"name": "dek", "type": "aes256-gcm", "identity": "dek-id"},
                headers={"Authorization": f"Bearer {key_admin['token']}"},
            )
        )
        task = _ok(
            httpx.post(
                f"{base}/v1/tasks",
                json={"name": "bench", "ttl": "1h"},
                headers={"Authorization": f"Bearer {idp.token()}"},
            )
        )
        user = {"Authorization": f"Bearer {task['token']}"}
        single = json.dumps({"plaintext": _b64(PAYLOAD)})
        batch = json.dumps({"items": [{"plaintext": _b64(PAYLOAD)}] * BATCH})
        encrypt, decrypt = f"{base}/v1/keys/dek/encrypt", f"{base}/v1/keys/dek/decrypt"
        sealed = _ok(httpx.post(encrypt, content=single, headers=user | _JSON))
        opened = json.dumps({"ciphertext": sealed["ciphertext"]})
        # A few of each on new connections (spread over the workers), so that a refusal
        # fails here, not as wrk's non-2xx count (a batch answers 200 with per-item errors).
        for _ in range(4 * workers):
            plain = _ok(httpx.post(decrypt, content=opened, headers=user | _JSON))
            assert base64.b64decode(plain["plaintext"]) == PAYLOAD
            items = _ok(httpx.post(encrypt, content=batch, headers=user | _JSON))["items"]
            assert all("ciphertext" in item for item in items), items[:1]
        one = _wrk(encrypt, single, user, seconds, tmp, "application/json")
        back = _wrk(decrypt, opened, user, seconds, tmp, "application/json")
        many = _wrk(encrypt, batch, user, seconds, tmp, "application/json")
        return {
            "workers": workers,
            "encrypt_1kib": one,
            "decrypt_1kib": back,
            f"encrypt_batch{BATCH}_1kib": {**many, "items_per_s": many["requests_per_s"] * BATCH},
            "health": _wrk(f"{base}/v1/sys/health", None, {}, seconds, tmp),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def http_bench(tmp: Path, quick: bool, in_process_c32_per_s: float) -> dict[str, Any]:
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (make bench installs it)"}
    seconds = 2 if quick else 10
    cores = os.cpu_count() or 1
    runs = {f"workers_{n}": _serve_and_load(tmp, n, seconds) for n in sorted({1, cores})}
    for run in runs.values():
        encrypt = run["encrypt_1kib"]["requests_per_s"]
        run["ratios"] = {
            "encrypt_over_health": _ratio(encrypt, run["health"]["requests_per_s"]),
            "encrypt_http_over_in_process_c32": _ratio(encrypt, in_process_c32_per_s),
        }
    return {"load_generator": f"wrk -t2 -c{CONCURRENCY} on the same machine", **runs}


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
    in_process_c32 = results["aes256-gcm"]["encrypt_1kib_per_s_32_threads"]
    results["http"] = http_bench(tmp, quick, in_process_c32)
    results["targets"] = {"http_encrypt_decrypt_1kib_per_s_at_32": 3000}
    return results


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(Path(folder), "--quick" in sys.argv), indent=2))
