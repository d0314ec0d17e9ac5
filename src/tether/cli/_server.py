"""Running a Tether node in this process: `tether serve` and `tether dev`."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from pathlib import Path

import uvicorn
from rich.console import Console

from tether._internal.logs import configure_logging
from tether._internal.timeutil import format_time
from tether.api import create_app
from tether.app import Tether
from tether.config import Settings
from tether.estate import load_estate_file, parse_estate
from tether.issuance import ExchangeRequest, OAuthError
from tether.providers import ACCESS_TOKEN_TYPE
from tether.store import IdentityFilter


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"error: --listen must be host:port, not {listen!r}")
    return host.strip("[]"), int(port)


def _serve(node: Tether) -> None:
    host, port = _split_listen(node.settings.listen)
    try:
        uvicorn.run(
            create_app(node),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            server_header=False,
        )
    finally:
        node.stop()


def run_server(listen: str | None, dev: bool) -> None:
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "INFO"))
    node = Tether(Settings.from_env(listen=listen, dev=dev))
    node.start()
    _serve(node)


def _show_core_loop(node: Tether, console: Console) -> None:
    """One pass of the core loop, in process, printed step by step."""
    identity = node.view.current.identities.get("payments-deployer")
    audience = "https://orders.example.com"
    if identity is None or "orders-api-read" not in {e.profile_id for e in identity.entitlements}:
        return
    console.print(
        "\n[bold]The core loop[/] (payments-deployer, attested by a one-time join token):"
    )
    join, _ = node.issuance.create_join_token(identity.id, dt.timedelta(minutes=5), "dev-mode")
    started = node.issuance.start_task(join, "demo-deploy", dt.timedelta(minutes=10), None)
    console.print(
        f"  1. task {started.task.id} started; it ends by {format_time(started.task.ends_at)}"
    )
    issued = node.issuance.exchange(
        ExchangeRequest(
            subject_token=started.token, subject_token_type=ACCESS_TOKEN_TYPE, audience=audience
        )
    )
    console.print(
        f"  2. policy allowed a JWT for {audience}: lease {issued.lease_id}, "
        f"scope {' '.join(issued.scope)}, {issued.expires_in}s (bounded by "
        f"{issued.bounded_by})"
    )
    try:
        node.issuance.exchange(
            ExchangeRequest(
                subject_token=started.token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                audience="opaque-api",
            )
        )
    except OAuthError as exc:
        console.print(f"  3. a profile it is not entitled to was refused: {exc}")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  4. introspection: active={active}")
    revoked = node.leases.end_task(started.task, "demo finished", "dev-mode")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  5. task ended: {revoked} lease(s) revoked; introspection: active={active}")


def run_dev(listen: str | None, estate_file: Path, once: bool, console: Console) -> None:
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "WARNING"))
    settings = Settings.from_env(listen=listen, dev=True)
    node = Tether(settings)
    node.start()
    status = node.barrier.status()
    console.print(f"[bold]Tether dev mode[/] — home {settings.home}")
    console.print(f"  storage:  {settings.database_url.split('?')[0]}")
    console.print(
        f"  barrier:  initialized, {'sealed' if status.sealed else 'unsealed'} "
        f"(dev key file {settings.dev_key_file}, mode 600), keyring term {status.term}"
    )
    document = load_estate_file(estate_file)
    plan = node.estate.apply(parse_estate(document), actor="dev-mode", document=document)
    counts = ", ".join(f"{n} {a}d" for a, n in plan.counts().items() if n) or "no changes"
    console.print(f"  estate:   applied {estate_file.name}: {counts}")
    identities = node.estate.list_identities(IdentityFilter(status="active", limit=100_000))
    by_kind = Counter(i.kind.value for i in identities)
    console.print(
        f"  inventory: {len(identities)} active identities — "
        + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
    )
    node.view.reload()
    _show_core_loop(node, console)
    verification = node.verify_audit()
    console.print(
        f"\n  audit:    {verification.entries} entries, chain "
        f"{'verified' if verification.ok else 'BROKEN: ' + str(verification.problem)}"
    )
    host, port = _split_listen(settings.listen)
    console.print("\nUse the CLI against it:")
    console.print(f"  export TETHER_ADDR=http://{host}:{port}")
    console.print(f"  export TETHER_TOKEN=$(cat {settings.dev_token_file})")
    console.print("  tether identity list")
    console.print("  tether audit verify")
    if once:
        node.stop()
        return
    console.print(f"\nServing on http://{host}:{port} (Ctrl-C to stop)")
    _serve(node)
