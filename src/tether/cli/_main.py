"""The `tether` group: every command, and the one place an error becomes a line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tether.cli import (
    _audit,
    _credentials,
    _estate,
    _govern,
    _keys,
    _scan,
    _spiffe,
    _system,
    _targets,
    _tasks,
    _tokens,
)
from tether.cli._output import fail, out
from tether.cli._policy import policy as policy_group
from tether.client import ClientError
from tether.errors import TetherError
from tether.estate import EstateInvalid

if TYPE_CHECKING:
    from tether.cli._server import ServeOptions

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tether")
def cli() -> None:
    """Tether: a control plane for non-human identities."""


# -- running a server --
def listener_options(func: F) -> F:
    """TLS, trusted proxies and the plain-HTTP guard, shared by `serve` and `dev`."""
    file_type = click.Path(dir_okay=False, path_type=Path)
    options = [
        click.option(
            "--tls-cert",
            type=file_type,
            metavar="FILE",
            help="Serve HTTPS with this PEM certificate chain (env TETHER_TLS_CERT).",
        ),
        click.option(
            "--tls-key",
            type=file_type,
            metavar="FILE",
            help="The certificate's PEM private key, unencrypted (env TETHER_TLS_KEY).",
        ),
        click.option(
            "--tls-client-ca",
            type=file_type,
            metavar="FILE",
            help="Verify client certificates against this PEM CA bundle (env "
            "TETHER_TLS_CLIENT_CA).",
        ),
        click.option(
            "--tls-client-auth",
            type=click.Choice(["optional", "required"]),
            envvar="TETHER_TLS_CLIENT_AUTH",
            help="With --tls-client-ca: refuse clients without a certificate (required, the "
            "default) or verify one only when presented (optional).",
        ),
        click.option(
            "--trusted-proxy",
            "trusted_proxies",
            multiple=True,
            metavar="ADDR_OR_CIDR",
            help="A proxy whose X-Forwarded-For is believed; repeatable (env "
            "TETHER_TRUSTED_PROXIES, comma-separated). Default: none.",
        ),
        click.option(
            "--allow-existing-schema",
            is_flag=True,
            help="Migrate into a database that already holds other applications' tables "
            "(env TETHER_ALLOW_EXISTING_SCHEMA=1). Default: refuse.",
        ),
        click.option(
            "--spiffe-socket",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="TETHER_SPIFFE_SOCKET",
            metavar="PATH",
            help="Serve the SPIFFE Workload API on this Unix socket (env TETHER_SPIFFE_SOCKET)."
            " Workloads use SPIFFE_ENDPOINT_SOCKET=unix://PATH.",
        ),
        click.option(
            "--allow-plain-http",
            is_flag=True,
            help="Allow plain HTTP on a non-loopback address, e.g. behind a TLS-terminating "
            "proxy (env TETHER_ALLOW_PLAIN_HTTP=1).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _serve_options(**flags: Any) -> ServeOptions:
    import os

    from tether.cli._server import ServeOptions

    if flags.get("spiffe_socket") is not None:
        # Read by the node (Settings.from_env), in this process and in every worker.
        os.environ["TETHER_SPIFFE_SOCKET"] = str(flags["spiffe_socket"])

    return ServeOptions(
        tls_cert=flags["tls_cert"],
        tls_key=flags["tls_key"],
        tls_client_ca=flags["tls_client_ca"],
        tls_client_auth=flags["tls_client_auth"],
        trusted_proxies=tuple(p.strip() for p in flags["trusted_proxies"]),
        allow_plain_http=flags["allow_plain_http"],
        allow_existing_schema=flags["allow_existing_schema"],
    )


@cli.command()
@click.option("--listen", default=None, help="host:port to listen on (default 127.0.0.1:8737).")
@click.option("--dev", is_flag=True, help="Dev mode: auto-initialize and auto-unseal.")
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    envvar="TETHER_WORKERS",
    default=None,
    metavar="N",
    help="Worker processes on the one listening socket (env TETHER_WORKERS; default: one "
    "per CPU this process may run on). 1: serve in this process, with no supervisor.",
)
@click.option(
    "--pin-workers/--no-pin-workers",
    envvar="TETHER_PIN_WORKERS",
    default=True,
    show_default=True,
    help="Pin each worker process to a CPU of its own, in turn (env TETHER_PIN_WORKERS).",
)
@listener_options
def serve(
    listen: str | None, dev: bool, workers: int | None, pin_workers: bool, **flags: Any
) -> None:
    """Run the Tether server."""
    from tether.cli._server import run_server
    from tether.cli._workers import usable_cpus

    count = workers if workers is not None else len(usable_cpus()) or 1
    run_server(
        listen=listen,
        dev=dev,
        options=_serve_options(**flags),
        workers=count,
        pin_workers=pin_workers,
    )


@cli.command()
@click.option("--listen", default=None, help="host:port to listen on (default 127.0.0.1:8737).")
@click.option(
    "--estate",
    "estate_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Estate to load instead of the demo estate.",
)
@click.option("--once", is_flag=True, help="Set up, show what was done, and exit without serving.")
@listener_options
def dev(listen: str | None, estate_file: Path | None, once: bool, **flags: Any) -> None:
    """Run Tether on the embedded default: SQLite, auto-unseal, a demo estate."""
    from tether.cli._server import run_dev

    options = _serve_options(**flags)
    if estate_file is None:
        with resources.as_file(resources.files("tether").joinpath("_demo/estate.yaml")) as path:
            run_dev(listen=listen, estate_file=Path(path), once=once, console=out, options=options)
    else:
        run_dev(listen=listen, estate_file=estate_file, once=once, console=out, options=options)


for _module in (
    _system,
    _estate,
    _audit,
    _tokens,
    _tasks,
    _targets,
    _credentials,
    _govern,
    _keys,
    _scan,
    _spiffe,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)
cli.add_command(_credentials.ROTATE, "rotate")
cli.add_command(policy_group)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except EstateInvalid as exc:
        fail(
            "the estate is invalid; nothing was changed",
            [{"path": p.path, "message": p.message} for p in exc.problems],
        )
    except ClientError as exc:
        fail(exc.args[0] if exc.args else "request failed", exc.problems)
    except TetherError as exc:
        fail(str(exc))
    except click.exceptions.Abort:
        fail("aborted")
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))


if __name__ == "__main__":
    main()
