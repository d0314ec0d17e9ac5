"""SVIDs through the SPIFFE Workload API: a node in-process (SQLite), its socket, and the
unmodified py-spiffe client in processes of their own (attested by the kernel).

- JWT-SVIDs: every fetch is a new SVID: attested, decided, leased, signed and audited.
- X509-SVIDs: a workload's SVID is served from memory until half its life, so fetches
  through the API measure serving; signing (decision, lease, key pair, certificate,
  audit) is measured through the same issuance the API uses, in-process.

Targets (design.md §6): >= 2,000 X509-SVIDs/s and >= 5,000 JWT-SVIDs/s signed.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from spiffe import WorkloadApiClient

from tether.app import Tether
from tether.attest import LocalCaller
from tether.config import Settings
from tether.estate import parse_estate
from tether.spiffe import WorkloadSocket


def _estate() -> dict[str, Any]:
    return {
        "version": 1,
        "trust_domain": "bench.example.org",
        "owners": [{"id": "ops", "contact": "ops@example.com"}],
        "profiles": [
            {"id": "svid", "provider": "x509-svid", "max_ttl": "1h"},
            {"id": "jwt", "provider": "jwt-svid", "max_ttl": "5m"},
        ],
        "identities": [
            {
                "id": "web",
                "kind": "workload",
                "owner": "ops",
                "purpose": "bench",
                "justification": "BENCH-1",
                "environment": "prod",
                "attest": {"unix": {"uid": os.getuid(), "path": os.path.realpath(sys.executable)}},
                "entitlements": [{"profile": "svid"}, {"profile": "jwt"}],
            }
        ],
    }


def _client_loop(endpoint: str, seconds: float, fetch: str) -> tuple[int, str | None]:
    """One client process (its own interpreter: the server's GIL is not the client's)."""
    client = WorkloadApiClient(socket_path=endpoint)
    count, stop = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            if fetch == "jwt":
                # A new audience each time: every fetch is a decision, a lease, a signature.
                client.fetch_jwt_svid(audience={f"bench-{os.getpid()}-{count}"})
            elif fetch == "jwt-cached":
                # The same audience: served from the cache until half the SVID's life.
                client.fetch_jwt_svid(audience={"bench"})
            else:
                client.fetch_x509_svid()
            count += 1
    except Exception as exc:  # reported, not raised: the bench prints what it saw
        return count, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return count, None


def _through_api(endpoint: str, clients: int, seconds: float, fetch: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with context.Pool(clients) as pool:
        done = pool.starmap(_client_loop, [(endpoint, seconds, fetch)] * clients)
    elapsed = time.monotonic() - started
    count = sum(c for c, _ in done)
    return {
        "client_processes": clients,
        "seconds": round(elapsed, 2),
        "count": count,
        "per_s": round(count / seconds),
        "errors": [e for _, e in done if e][:3],
    }


def _signed_in_process(node: Tether, seconds: float) -> dict[str, Any]:
    caller = LocalCaller(os.getpid(), os.getuid(), os.getgid(), os.path.realpath(sys.executable))
    subject = node.issuance.local_subject(caller)
    profile = node.view.current.profiles["svid"]
    count, stop = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < stop:
        node.issuance.issue_local(subject, profile)
        count += 1
    elapsed = time.monotonic() - started
    return {"seconds": round(elapsed, 2), "count": count, "per_s": round(count / elapsed)}


def _retirement(node: Tether, endpoint: str) -> dict[str, Any]:
    """From the apply that retires the identity to its live stream ending (PERMISSION_DENIED)."""
    client = WorkloadApiClient(socket_path=endpoint)
    first, ended = threading.Event(), threading.Event()
    handler = client.stream_x509_contexts(
        lambda _context: first.set(), lambda _error: ended.set(), retry_connect=False
    )
    try:
        if not first.wait(10):
            raise RuntimeError("no X509 context was streamed")
        document = {**_estate(), "identities": []}
        started = time.monotonic()
        node.estate.apply(parse_estate(document), actor="bench", document=document)
        applied = time.monotonic() - started
        if not ended.wait(10):
            raise RuntimeError("the stream was not ended")
        return {
            "apply_seconds": round(applied, 3),
            "apply_to_stream_end_seconds": round(time.monotonic() - started, 3),
            "target_seconds": 1.0,
        }
    finally:
        handler.cancel()
        client.close()


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    seconds = 2.0 if quick else 10.0
    settings = Settings(home=tmp, database_url=f"sqlite:///{tmp / 'bench.db'}")
    node = Tether(settings)
    node.initialize(1, 1)
    document = _estate()
    node.estate.apply(parse_estate(document), actor="bench", document=document)
    socket_dir = tempfile.mkdtemp(prefix="tsb", dir="/tmp")
    path = Path(socket_dir) / "workload.sock"
    served = WorkloadSocket(node.workload, path)
    served.start()
    try:
        if not served.serving.wait(10):
            raise RuntimeError("the Workload API socket did not open")
        endpoint = f"unix://{path}"
        results = {
            "jwt_svids_signed": _through_api(endpoint, 2, seconds, "jwt"),
            "jwt_svid_fetches_cached": _through_api(endpoint, 2, seconds, "jwt-cached"),
            "x509_svid_fetches_served": _through_api(endpoint, 2, seconds, "x509"),
            "x509_svids_signed_in_process": _signed_in_process(node, seconds),
        }
        results["retirement"] = _retirement(node, endpoint)
    finally:
        served.stop()
        node.stop()
    results["targets"] = {"x509_svids_per_s": 2000, "jwt_svids_per_s": 5000}
    return results


if __name__ == "__main__":
    import json

    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run(Path(folder), "--quick" in sys.argv), indent=2))
