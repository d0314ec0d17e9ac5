"""The core loop's speed: token exchange over HTTP at concurrency 32 with one worker
process and with one per core (and `/v1/sys/health` in the same run, the framework's
ceiling), the same pipeline in-process (one caller, and 32: floating, and on one CPU as a
pinned worker runs), introspection over HTTP, and revoking a task that holds 10,000
leases.

The load generator runs on the same 2 cores as the server, so HTTP figures understate
what a separate client machine would see.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import quantiles
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tether._internal.timeutil import utcnow
from tether.app import Tether
from tether.config import Settings
from tether.estate import parse_estate
from tether.issuance import ExchangeRequest
from tether.lease import RevokeTarget
from tether.model import Lease, LeaseState

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ISSUER = "https://ci.bench.invalid"
CONCURRENCY = 32


class Idp:
    """An attestation issuer with an inline JWKS: no network needed."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwk = {**jwk, "kid": "bench", "alg": "ES256", "use": "sig"}

    def token(self, lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": "tether",
            "sub": "repo:acme/payments",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_hex(8),
            "repository": "acme/payments",
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "bench"})


def estate(idp: Idp) -> dict[str, Any]:
    return {
        "version": 1,
        "owners": [{"id": "team", "contact": "team@example.com"}],
        "issuers": [
            {
                "id": "ci",
                "preset": "oidc",
                "issuer": ISSUER,
                "audiences": ["tether"],
                "jwks": {"keys": [idp.jwk]},
                "algorithms": ["ES256"],
            }
        ],
        "profiles": [
            {
                "id": "orders",
                "provider": "jwt",
                "audience": "https://orders.example.com",
                "scopes": ["orders:read"],
                "max_ttl": "15m",
            },
            {"id": "opaque", "provider": "token", "scopes": ["push"], "max_ttl": "1h"},
        ],
        "identities": [
            {
                "id": "deployer",
                "kind": "workload",
                "owner": "team",
                "purpose": "bench",
                "justification": "BENCH",
                "environment": "prod",
                "attest": {"issuer": "ci", "claims": {"repository": "acme/payments"}},
                "entitlements": [{"profile": "orders"}, {"profile": "opaque"}],
            }
        ],
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    cuts = quantiles(samples, n=100)
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(
    url: str,
    body: str | None,
    headers: dict[str, str],
    seconds: float,
    tmp: Path,
    content_type: str = "application/x-www-form-urlencoded",
) -> dict[str, Any]:
    """wrk (C, from Debian's packages) takes far less CPU than a Python load generator.
    A `body` makes the request a POST of `content_type` (a form unless told); without
    one it is a GET."""
    script = tmp / "wrk.lua"
    lines = []
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = {json.dumps(body)}",
            f'wrk.headers["Content-Type"] = {json.dumps(content_type)}',
        ]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONCURRENCY}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    latency = {
        f"p{p}_ms": round(float(v) * _UNIT[u], 2) for p, v, u in _WRK_LATENCY.findall(done.stdout)
    }
    return {
        "requests_per_s": round(float(rate.group(1))) if rate else 0,
        "failed": int(errors.group(1)) if errors else 0,
        **latency,
    }


def _start_server(tmp: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    home = tmp / f"http-{workers}"
    env = {**os.environ, "TETHER_HOME": str(home), "TETHER_LOG_LEVEL": "WARNING"}
    env.pop("TETHER_DATABASE_URL", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{base}/v1/sys/health", timeout=1)
            return server, base
        except httpx.HTTPError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"tether serve --workers {workers} did not answer")


def _initialize(base: str, document: dict[str, Any]) -> dict[str, str]:
    """Initializes and unseals a fresh server (one share) and applies `document`; returns
    the root token's Authorization header."""
    init = httpx.post(f"{base}/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
    httpx.post(f"{base}/v1/sys/unseal", json={"share": init["shares"][0]}).raise_for_status()
    admin = {"Authorization": f"Bearer {init['root_token']}"}
    httpx.post(f"{base}/v1/estate/apply", json=document, headers=admin).raise_for_status()
    return admin


def _serve_and_load(tmp: Path, workers: int, seconds: float) -> dict[str, Any]:
    """One server with `workers` processes: exchange (attestation, task token),
    introspection and health, each for `seconds` at concurrency 32."""
    idp = Idp()
    server, base = _start_server(tmp, workers)
    try:
        admin = _initialize(base, estate(idp))
        time.sleep(1.5)  # every worker has the estate (the event feed is within a second)
        task = httpx.post(
            f"{base}/v1/tasks",
            json={"name": "bench", "ttl": "1h"},
            headers={"Authorization": f"Bearer {idp.token()}"},
        ).json()
        attested = {
            "grant_type": EXCHANGE,
            "subject_token": idp.token(),
            "subject_token_type": JWT_TYPE,
            "audience": "https://orders.example.com",
        }
        from_task = {**attested, "subject_token": task["token"], "subject_token_type": ACCESS}
        token = httpx.post(f"{base}/oauth2/token", data=from_task).json()["access_token"]
        # The bench issuer is not single-use, so one attestation can be replayed: every
        # request still verifies it, decides, opens an implicit task and mints.
        exchange = f"{base}/oauth2/token"
        return {
            "workers": workers,
            "exchange_attestation_jwt": _wrk(exchange, urlencode(attested), {}, seconds, tmp),
            "exchange_task_token": _wrk(exchange, urlencode(from_task), {}, seconds, tmp),
            "introspection": _wrk(
                f"{base}/oauth2/introspect", urlencode({"token": token}), admin, seconds, tmp
            ),
            "health": _wrk(f"{base}/v1/sys/health", None, {}, seconds, tmp),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 2) if whole else 0.0


def http_bench(tmp: Path, quick: bool, in_process: dict[str, Any]) -> dict[str, Any]:
    if not shutil.which("wrk"):
        return {"skipped": "wrk is not installed (make bench installs it)"}
    seconds = 3 if quick else 10
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs = {f"workers_{n}": _serve_and_load(tmp, n, seconds) for n in sorted({1, cores or 1})}
    for run in runs.values():
        exchange = run["exchange_attestation_jwt"]["requests_per_s"]
        run["ratios"] = {
            "exchange_over_health": _ratio(exchange, run["health"]["requests_per_s"]),
            # One process at concurrency 32, floating as `--workers 1` does...
            "exchange_http_over_in_process_c32": _ratio(
                exchange, in_process["exchange_attestation_jwt_c32"]["per_s"]
            ),
        }
        if "exchange_attestation_jwt_c32_one_cpu" in in_process:
            # ... and on one CPU, as each pinned worker of several does.
            run["ratios"]["exchange_http_over_in_process_c32_one_cpu"] = _ratio(
                exchange, in_process["exchange_attestation_jwt_c32_one_cpu"]["per_s"]
            )
    return {
        "load_generator": "wrk -t2 -c32 on the same machine",
        **runs,
        "targets": {
            "exchange_per_s": 1500,
            "exchange_p99_ms": 30,
            "introspection_per_s": 4000,
            "exchange_http_over_in_process": 0.5,
        },
    }


def _exchange_in_process(node: Tether, tokens: list[str], threads: int) -> dict[str, Any]:
    """Exchanges straight through the issuance service, from `threads` threads at once."""
    latencies: list[float] = []

    def one(token: str) -> None:
        t0 = time.perf_counter()
        node.issuance.exchange(
            ExchangeRequest(
                subject_token=token,
                subject_token_type=JWT_TYPE,
                audience="https://orders.example.com",
            )
        )
        latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, tokens))
    elapsed = time.perf_counter() - started
    return {"per_s": round(len(tokens) / elapsed), **_percentiles(latencies)}


def _on_one_cpu(work: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """`work` with this thread (and the threads it starts) on its first allowed CPU; None
    where affinity cannot be set."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        return work()
    finally:
        os.sched_setaffinity(0, allowed)


def in_process_bench(tmp: Path, quick: bool) -> dict[str, Any]:
    idp = Idp()
    node = Tether(Settings(home=tmp / "inproc", database_url=f"sqlite:///{tmp / 'inproc.db'}"))
    node.initialize(1, 1)
    node.signing_keys.ensure_current()
    doc = estate(idp)
    node.estate.apply(parse_estate(doc), actor="bench", document=doc)
    node.view.reload()
    count = 500 if quick else 3000
    result = {
        # One caller at a time: every exchange waits for its own commit (fsync).
        "exchange_attestation_jwt_sequential": _exchange_in_process(
            node, [idp.token() for _ in range(count)], threads=1
        ),
        # 32 callers, as over HTTP: their writes commit together.
        "exchange_attestation_jwt_c32": _exchange_in_process(
            node, [idp.token() for _ in range(count * 2)], threads=CONCURRENCY
        ),
    }
    # The same on one CPU, as a pinned worker of `tether serve --workers N` runs.
    pinned = _on_one_cpu(
        lambda: _exchange_in_process(
            node, [idp.token() for _ in range(count * 2)], threads=CONCURRENCY
        )
    )
    if pinned is not None:
        result["exchange_attestation_jwt_c32_one_cpu"] = pinned

    # Revoke a task holding 10,000 token leases, audit included.
    started_task = node.issuance.start_task(idp.token(), "bulk", dt.timedelta(hours=1), None)
    now = utcnow()
    leases = [
        Lease(
            id=f"lse_bulk{i:06d}",
            identity_id="deployer",
            owner_id="team",
            provider="token",
            issued_at=now,
            expires_at=now + dt.timedelta(hours=1),
            state=LeaseState.ACTIVE,
            task_id=started_task.task.id,
            profile_id="opaque",
            token_hash=secrets.token_hex(32),
        )
        for i in range(10_000)
    ]
    with node.store.transaction() as tx:
        tx.insert_leases(leases)
    t0 = time.perf_counter()
    revoked = node.leases.end_task(started_task.task, "bench", "bench")
    result["revoke_task_10000_leases"] = {
        "seconds": round(time.perf_counter() - t0, 3),
        "revoked": revoked,
        "target_seconds": 1,
    }
    assert revoked == 10_001
    assert node.leases.revoke(RevokeTarget(task_id=started_task.task.id), "again", "bench") == 0

    # Expiry: leases whose end has passed, ended in indexed batches, audit included.
    count = 20_000 if quick else 100_000
    past = utcnow() - dt.timedelta(seconds=1)
    with node.store.transaction() as tx:
        tx.insert_leases(
            [
                Lease(
                    id=f"lse_exp{i:07d}",
                    identity_id="deployer",
                    owner_id="team",
                    provider="token",
                    issued_at=past - dt.timedelta(minutes=5),
                    expires_at=past,
                    state=LeaseState.ACTIVE,
                    profile_id="opaque",
                    token_hash=secrets.token_hex(32),
                )
                for i in range(count)
            ]
        )
    t0 = time.perf_counter()
    expired = 0
    while batch := node.leases.expire_due():
        expired += batch
    seconds = time.perf_counter() - t0
    result["expiry"] = {
        "leases": expired,
        "per_s": round(expired / seconds),
        "target_per_s": 10_000,
    }
    node.stop()
    return result


def trigger_latency(tmp: Path) -> dict[str, Any]:
    """Seconds from a justification ending to introspection saying inactive (worker running)."""
    idp = Idp()
    node = Tether(Settings(home=tmp / "trig", database_url=f"sqlite:///{tmp / 'trig.db'}"))
    node.initialize(1, 1)
    node.start()
    try:

        def issue(doc: dict[str, Any]) -> str:
            node.estate.apply(parse_estate(doc), actor="bench", document=doc)
            return node.issuance.exchange(
                ExchangeRequest(
                    subject_token=idp.token(),
                    subject_token_type=JWT_TYPE,
                    audience="https://orders.example.com",
                )
            ).access_token

        def until_inactive(token: str, since: float) -> float:
            while node.issuance.introspect(token)["active"]:
                time.sleep(0.002)
            return round(time.perf_counter() - since, 3)

        doc = estate(idp)
        token = issue(doc)
        retired = {**doc, "identities": []}
        started = time.perf_counter()
        node.estate.apply(parse_estate(retired), actor="bench", document=retired)
        retire = until_inactive(token, started)

        expires = utcnow() + dt.timedelta(seconds=2)
        lapsing = {
            **doc,
            "identities": [
                {
                    **doc["identities"][0],
                    "approval": {"by": "bench@example.com", "expires": expires.isoformat()},
                }
            ],
        }
        token = issue(lapsing)
        while utcnow() < expires:
            time.sleep(0.001)
        approval = until_inactive(token, time.perf_counter())
    finally:
        node.stop()
    return {
        "retire_to_inactive_s": retire,
        "approval_expiry_to_inactive_s": approval,
        "target_seconds": 1,
    }


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    in_process = in_process_bench(tmp, quick)
    return {
        "in_process": in_process,
        "lifecycle_triggers": trigger_latency(tmp),
        "http": http_bench(tmp, quick, in_process),
    }
