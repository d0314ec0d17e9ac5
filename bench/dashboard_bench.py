"""The dashboard with 100,000 identities and 1,000,000 audit entries (design.md §6: the
overview and the inventory rendered server-side in ≤ 100 ms): the time to answer `/ui/`
and `/ui/identities` (first page, a search, a filter by kind, sorted by risk), signed in
as admin, in-process through the ASGI app and then over real HTTP from `tether serve`.

The node is built in-process on SQLite: the estate applied, the audit log filled in
batches, the findings evaluated once (so risk and the finding counts are real).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.estate_bench import estate
from bench.issuance_bench import _free_port
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.model import AuditEvent

#: Requests per page measured (after one warm-up request each).
SAMPLES = 20
_BATCH = 5_000
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
#: The pages measured: the overview, and the inventory four ways.
PAGES = {
    "overview": "/ui/",
    "inventory_first_page": "/ui/identities",
    "inventory_search": "/ui/identities?q=nhi-0421",
    "inventory_kind_filter": "/ui/identities?kind=workload",
    "inventory_sort_by_risk": "/ui/identities?sort=risk",
}


def _audit(node: Tether, total: int) -> float:
    """`total` audit entries, the shape issuance writes, in transactions of `_BATCH`."""
    started = time.perf_counter()
    for start in range(0, total, _BATCH):
        events = [
            AuditEvent(
                action="credential.issue",
                actor="token:tok_bench(bench)",
                identity_id=f"nhi-{i % 99_991:06d}",
                owner_id=f"team-{i % 50}",
                task_id=f"task-{i % 31}",
                justification="CHG-2041",
                details={"profile": "api-read", "ttl": 900},
            )
            for i in range(start, min(total, start + _BATCH))
        ]
        with node.store.transaction() as tx:
            node.audit.append(tx, events)
    return time.perf_counter() - started


def _build(home: Path, url: str, identities: int, entries: int) -> tuple[str, str, dict[str, Any]]:
    """The database; returns the unseal share, the root token, and how long each part took."""
    node = Tether(Settings(home=home, database_url=url))
    init = node.initialize(1, 1)
    doc = estate(identities)
    started = time.perf_counter()
    node.estate.apply(parse_estate(doc), actor="bench", document=doc)
    applied = time.perf_counter() - started
    audited = _audit(node, entries)
    node.view.reload()
    started = time.perf_counter()
    evaluation = node.govern.evaluate_now()
    evaluated = time.perf_counter() - started
    node.stop()
    timings = {
        "apply_seconds": round(applied, 1),
        "audit_fill_seconds": round(audited, 1),
        "evaluate_seconds": round(evaluated, 1),
        "open_findings": evaluation.open_total,
    }
    return init.shares[0], init.root_token, timings


def _sign_in(client: Any, token: str) -> None:
    """The sign-in form, as a browser fills it (its CSRF token and cookie kept)."""
    form = client.get("/ui/login")
    found = _CSRF.search(form.text)
    assert found is not None, form.text[:500]
    answer = client.post(
        "/ui/login", data={"csrf": found.group(1), "token": token}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text[:500]


def _measure(get: Callable[[str], Any]) -> dict[str, Any]:
    """p50/p95/max in ms over `SAMPLES` requests for each page."""
    out: dict[str, Any] = {}
    for name, path in PAGES.items():
        warm = get(path)
        assert warm.status_code == 200, (path, warm.status_code, warm.text[:500])
        times = []
        for _ in range(SAMPLES):
            started = time.perf_counter()
            answer = get(path)
            times.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, (path, answer.status_code)
        times.sort()
        out[name] = {
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "max_ms": round(times[-1], 1),
        }
    return out


def _in_process(home: Path, url: str, share: str, token: str) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from tether.api import create_app

    node = Tether(Settings(home=home, database_url=url))
    try:
        node.unseal(share, "bench")
        # No lifespan: the node's background workers stay off, so only rendering is timed.
        client = TestClient(create_app(node), base_url="http://127.0.0.1")
        _sign_in(client, token)
        return _measure(lambda path: client.get(path, follow_redirects=False))
    finally:
        node.stop()


@contextlib.contextmanager
def _served(home: Path, url: str, share: str) -> Iterator[str]:
    """`tether serve` on the database, unsealed; its address."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "TETHER_HOME": str(home),
        "TETHER_DATABASE_URL": url,
        "TETHER_LOG_LEVEL": "WARNING",
        "TETHER_WORKERS": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/v1/sys/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("tether serve did not answer") from None
                time.sleep(0.05)
        httpx.post(f"{base}/v1/sys/unseal", json={"share": share}, timeout=60).raise_for_status()
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def _over_http(home: Path, url: str, share: str, token: str) -> dict[str, Any]:
    with _served(home, url, share) as base, httpx.Client(base_url=base, timeout=60) as client:
        _sign_in(client, token)
        return _measure(lambda path: client.get(path, follow_redirects=False))


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    identities = 5_000 if quick else 100_000
    entries = 20_000 if quick else 1_000_000
    home, url = tmp / "home", f"sqlite:///{tmp / 'dashboard.db'}"
    share, token, built = _build(home, url, identities, entries)
    return {
        "identities": identities,
        "audit_entries": entries,
        "samples_per_page": SAMPLES,
        "build": built,
        "in_process_ms": _in_process(home, url, share, token),
        "http_ms": _over_http(home, url, share, token),
        "target_server_ms": 100,
    }
