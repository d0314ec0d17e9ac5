"""Running a Tether node in this process: `tether serve` and `tether dev`.

The listener is checked and its socket bound (`_listen`) before the node's modules are even
imported or its store opened, so a bad flag or a busy port is one quick line.
"""

from __future__ import annotations

import datetime as dt
import gc
import inspect
import logging
import os
import shutil
import socket
import ssl
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from tether._internal.logs import configure_logging
from tether._internal.timeutil import format_time
from tether.cli._client_certs import ClientTrust, http_protocol
from tether.cli._listen import (
    Listener,
    ServeConfigError,
    ServeOptions,
    bind,
    is_loopback,
    prepare,
)
from tether.estate import load_estate_file, parse_estate
from tether.store import IdentityFilter, shown_url

if TYPE_CHECKING:
    from rich.console import Console

    from tether.app import Tether

log = logging.getLogger(__name__)

__all__ = ["ServeConfigError", "ServeOptions", "is_loopback", "run_dev", "run_server"]


def _uvicorn_tls(listener: Listener) -> dict[str, Any]:
    settings, context = listener.settings, listener.tls
    if context is None:
        return {}
    kwargs: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
        "ssl_ca_certs": str(settings.tls_client_ca) if settings.tls_client_ca else None,
        "ssl_cert_reqs": int(listener.cert_reqs),
    }
    if "ssl_context_factory" in inspect.signature(uvicorn.Config).parameters:  # uvicorn 0.47+

        def factory(_config: object, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return context

        kwargs["ssl_context_factory"] = factory
    return kwargs


def uvicorn_config(node: Tether, listener: Listener) -> uvicorn.Config:
    """How uvicorn serves `node` (a single process or one worker of several)."""
    from tether.api import create_app

    if listener.tls is None and not is_loopback(listener.host):
        log.warning(
            "serving plain HTTP on a non-loopback address (allowed by --allow-plain-http)",
            extra={"listen": node.settings.listen},
        )
    tls: dict[str, Any] = {}
    if listener.tls is not None:
        # Client certificates reach attestation (x509 issuers): the handshake trusts their
        # roots, and each request's scope carries the chain the client presented.
        ClientTrust(node, listener.tls).install()
        tls["http"] = http_protocol()
    return uvicorn.Config(
        create_app(node),
        host=listener.host,
        port=listener.port,
        log_config=None,
        access_log=False,
        server_header=False,
        # The client address is the TCP peer's unless Tether itself trusts the proxy
        # (Settings.trusted_proxies): uvicorn must never rewrite it from headers.
        proxy_headers=False,
        forwarded_allow_ips="",
        **_uvicorn_tls(listener),
        **tls,
    )


def settle_heap() -> None:
    """Before serving: what the process built to start (modules, the app, the estate
    view: most of its heap) is moved out of the garbage collector's reach. A full
    collection then walks only what serving made since, not 100 MB of objects that live
    as long as the process: it paused every request in flight for 40-50 ms, a few times
    a minute under load."""
    gc.collect()
    gc.freeze()


def _serve(node: Tether, listener: Listener, sock: socket.socket) -> None:
    config = uvicorn_config(node, listener)
    settle_heap()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        node.stop()


def _start_node(listener: Listener) -> Tether:
    """The node, its store opened and migrated: only after every flag has been checked."""
    from tether.app import Tether

    node = Tether(listener.settings)
    node.start()
    return node


def run_server(
    listen: str | None,
    dev: bool,
    options: ServeOptions | None = None,
    workers: int = 1,
    pin_workers: bool = True,
) -> None:
    """Serve in this process (`workers` 1), or supervise that many worker processes on
    one listening socket (`tether.cli._workers`), each pinned to a CPU of its own unless
    `pin_workers` is False."""
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "INFO"))
    options = options or ServeOptions()
    listener = prepare(listen, dev, options)
    with bind(listener) as sock:
        if workers > 1:
            from tether.cli._workers import WorkerSpec, supervise

            supervise(listener, sock, WorkerSpec(listen, dev, options), workers, pin_workers)
        else:
            _serve(_start_node(listener), listener, sock)


def _show_core_loop(node: Tether, console: Console) -> None:
    """One pass of the core loop, in process, printed step by step."""
    from tether.issuance import ExchangeRequest, IssuanceError
    from tether.providers import ACCESS_TOKEN_TYPE

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
    except IssuanceError as exc:
        console.print(f"  3. a profile it is not entitled to was refused: {exc}")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  4. introspection: active={active}")
    revoked = node.leases.end_task(started.task, "demo finished", "dev-mode")
    active = node.issuance.introspect(issued.access_token)["active"]
    console.print(f"  5. task ended: {revoked} lease(s) revoked; introspection: active={active}")


def _shown(path: Path) -> str:
    """`path` as typed in this directory: relative when it is below it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _cli_command() -> str:
    """How to run this `tether` from the shell it was started in, exactly as printed: a
    fresh checkout has it in `.venv/bin`, which is not on PATH."""
    beside = Path(sys.executable).parent / "tether"  # the console script of this install
    on_path = shutil.which("tether")
    if on_path and Path(on_path).resolve() == beside.resolve():
        return "tether"
    return _shown(beside) if beside.exists() else f"{sys.executable} -m tether"


def _print_hints(listener: Listener, console: Console) -> None:
    """The lines to paste into another shell to use the CLI against this node."""
    settings = listener.settings
    console.print("\nUse the CLI against it (in another shell):")
    console.print(f"  export TETHER_ADDR={listener.url}", markup=False)
    if listener.tls is not None:
        console.print(
            f"  export TETHER_CACERT=...   # the CA bundle that signed {settings.tls_cert}",
            markup=False,
        )
    console.print(f"  export TETHER_TOKEN=$(cat {settings.dev_token_file})", markup=False)
    tether = _cli_command()
    console.print(f"  {tether} identity list", markup=False)
    console.print(f"  {tether} audit verify", markup=False)
    activate = Path(sys.prefix) / "bin" / "activate"
    if tether != "tether" and activate.exists():
        console.print(
            f"  (or `source {_shown(activate)}` first, then just `tether ...`)", markup=False
        )
    console.print(
        f"\nOr open the dashboard at {listener.url}/ui/ and sign in with the token in"
        f" {settings.dev_token_file}.",
        markup=False,
    )


def _set_up(node: Tether, estate_file: Path, console: Console) -> None:
    """Apply the estate and say what the node holds now."""
    settings = node.settings
    status = node.barrier.status()
    console.print(f"[bold]Tether dev mode[/] — home {settings.home}")
    console.print(f"  storage:  {shown_url(settings.database_url)}", markup=False)
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


def run_dev(
    listen: str | None,
    estate_file: Path,
    once: bool,
    console: Console,
    options: ServeOptions | None = None,
) -> None:
    configure_logging(os.environ.get("TETHER_LOG_LEVEL", "WARNING"))
    listener = prepare(listen, True, options or ServeOptions())
    if once:
        node = _start_node(listener)
        try:
            _set_up(node, estate_file, console)
            _print_hints(listener, console)
        finally:
            node.stop()
        return
    with bind(listener) as sock:
        node = _start_node(listener)
        try:
            _set_up(node, estate_file, console)
        except BaseException:
            node.stop()
            raise
        _print_hints(listener, console)
        console.print(f"\nServing on {listener.url} (Ctrl-C to stop)", markup=False)
        _serve(node, listener, sock)
