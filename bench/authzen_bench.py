"""AuthZEN decisions (design.md §6: ≥ 5,000 evaluations/s over HTTP at concurrency 32;
≥ 20,000/s per core in batches).

A records application like the tests' (users in admin and viewer groups, records with
owners, four Cedar statements) with 1,000 users and 2,000 records: single evaluations
in-process (the PDP's `evaluate`, one caller) and batches of 100 (`evaluate_batch`,
items/s); then over HTTP with wrk at concurrency 32 (`tether serve` with 1 and with one
worker per core): `POST /access/v1/evaluation` and `/access/v1/evaluations` (100 items).
bench.issuance_bench's `_wrk` sends any body: the JSON content type is one of its headers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.issuance_bench import _start_server, _wrk
from tether.app import Tether
from tether.authzen import Action, Evaluation, Party
from tether.config import Settings
from tether.estate import parse_estate

POLICY = """\
@id("owners")
permit (principal, action in [Records::Action::"read", Records::Action::"edit"],
        resource is Records::Record) when { resource.owner == principal };
@id("admins")
permit (principal in Records::Group::"admins", action, resource);
@id("viewers")
permit (principal in Records::Group::"viewers", action == Records::Action::"read", resource);
@id("no-archived-edits")
forbid (principal, action == Records::Action::"edit", resource)
when { resource has archived && resource.archived }
unless { principal in Records::Group::"admins" };
"""
USERS, RECORDS, BATCH = 1000, 2000, 100


def estate() -> dict[str, Any]:
    entities: list[dict[str, Any]] = [
        {"type": "Group", "id": "admins"},
        {"type": "Group", "id": "viewers"},
    ]
    for i in range(USERS):
        group = "admins" if i % 50 == 0 else "viewers" if i % 5 == 0 else None
        user: dict[str, Any] = {"type": "User", "id": f"u{i}"}
        if group:
            user["parents"] = [{"type": "Group", "id": group}]
        entities.append(user)
    for i in range(RECORDS):
        owner = {"__entity": {"type": "User", "id": f"u{i % USERS}"}}
        entities.append(
            {"type": "Record", "id": f"r{i}", "attrs": {"owner": owner, "archived": i % 7 == 0}}
        )
    return {
        "version": 1,
        "applications": [
            {
                "id": "records",
                "namespace": "Records",
                "actions": ["read", "edit", "delete"],
                "entities": entities,
                "policies": [{"id": "records.cedar", "source": POLICY}],
            }
        ],
    }


def _evaluation(i: int) -> Evaluation:
    return Evaluation(
        Party("User", f"u{(i * 7) % USERS}"),
        Action(("read", "edit", "delete")[i % 3]),
        Party("Record", f"r{i % RECORDS}"),
    )


def _json(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "subject": {"type": evaluation.subject.type, "id": evaluation.subject.id},
        "action": {"name": evaluation.action.name},
        "resource": {"type": evaluation.resource.type, "id": evaluation.resource.id},
    }


def in_process_bench(tmp: Path, quick: bool) -> dict[str, Any]:
    node = Tether(Settings(home=tmp / "inproc", database_url=f"sqlite:///{tmp / 'inproc.db'}"))
    try:
        node.initialize(1, 1)
        doc = estate()
        node.estate.apply(parse_estate(doc), actor="bench", document=doc)
        pdp, actor = node.pdp, "token:bench"
        count = 2000 if quick else 20000
        evaluations = [_evaluation(i) for i in range(count)]
        latencies = []
        permits = 0
        started = time.perf_counter()
        for evaluation in evaluations:
            t0 = time.perf_counter()
            permits += pdp.evaluate("records", evaluation, actor).decision
            latencies.append(time.perf_counter() - t0)
        single_s = time.perf_counter() - started
        batches = [evaluations[i : i + BATCH] for i in range(0, count, BATCH)]
        started = time.perf_counter()
        for batch in batches:
            pdp.evaluate_batch("records", batch, actor)
        batch_s = time.perf_counter() - started
        cuts = statistics.quantiles(latencies, n=100)
        written = pdp.flush_audit(force=True)
        return {
            "entities": USERS + RECORDS + 2,
            "single": {
                "evaluations_per_s": round(count / single_s),
                "p50_us": round(cuts[49] * 1e6, 1),
                "p99_us": round(cuts[98] * 1e6, 1),
                "permitted_share": round(permits / count, 2),
            },
            f"batches_of_{BATCH}": {"items_per_s": round(count / batch_s)},
            "audit_entries_for_all_of_them": written,
        }
    finally:
        node.stop()


def _serve_and_load(tmp: Path, workers: int, seconds: float) -> dict[str, Any]:
    server, base = _start_server(tmp, workers)
    try:
        init = httpx.post(f"{base}/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
        httpx.post(f"{base}/v1/sys/unseal", json={"share": init["shares"][0]}).raise_for_status()
        admin = {"Authorization": f"Bearer {init['root_token']}"}
        httpx.post(f"{base}/v1/estate/apply", json=estate(), headers=admin).raise_for_status()
        token = httpx.post(
            f"{base}/v1/tokens", json={"name": "pep", "roles": ["pdp:records"]}, headers=admin
        ).json()["token"]
        time.sleep(1.5)  # every worker has the estate and the token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        single = json.dumps(_json(_evaluation(3)))
        check = httpx.post(f"{base}/access/v1/evaluation", content=single, headers=headers)
        check.raise_for_status()
        batch = json.dumps({"evaluations": [_json(_evaluation(i)) for i in range(BATCH)]})
        one = _wrk(f"{base}/access/v1/evaluation", single, headers, seconds, tmp)
        many = _wrk(f"{base}/access/v1/evaluations", batch, headers, seconds, tmp)
        many["items_per_s"] = many["requests_per_s"] * BATCH
        return {"workers": workers, "evaluation": one, f"evaluations_{BATCH}_items": many}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def http_bench(tmp: Path, quick: bool) -> dict[str, Any]:
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (make bench installs it)"}
    seconds = 3 if quick else 10
    cores = os.cpu_count() or 1
    return {
        "load_generator": "wrk -t2 -c32 on the same machine",
        **{f"workers_{n}": _serve_and_load(tmp, n, seconds) for n in sorted({1, cores})},
    }


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    return {
        "in_process": in_process_bench(tmp, quick),
        "http": http_bench(tmp, quick),
        "targets": {"http_evaluations_per_s_c32": 5000, "batch_items_per_s_per_core": 20000},
    }
