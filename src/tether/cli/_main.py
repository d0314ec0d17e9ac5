from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from tether.audit import read_jsonl, verify_chain
from tether.cli._policy import policy as policy_group
from tether.client import ClientError, TetherClient
from tether.errors import TetherError
from tether.estate import EstateInvalid, estate_schema, load_estate_file
from tether.targets import kind_names

if TYPE_CHECKING:
    from tether.cli._server import ServeOptions

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _fail(message: str, problems: list[dict[str, str]] | None = None) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    for problem in problems or []:
        err.print(f"  {problem['path']}: {problem['message']}", markup=False)
    sys.exit(1)


def _client() -> TetherClient:
    return TetherClient()


def _all_pages(path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged listing (the API pages by `after` and answers `next`)."""
    items: list[dict[str, Any]] = []
    after = None
    with _client() as client:
        while True:
            page = client.get(path, **params, after=after)
            items.extend(page["items"])
            after = page["next"]
            if after is None:
                return items


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    out.print(table)


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
            "--allow-plain-http",
            is_flag=True,
            help="Allow plain HTTP on a non-loopback address, e.g. behind a TLS-terminating "
            "proxy (env TETHER_ALLOW_PLAIN_HTTP=1).",
        ),
        click.option(
            "--allow-existing-schema",
            is_flag=True,
            help="Migrate into a database that already holds other applications' tables "
            "(env TETHER_ALLOW_EXISTING_SCHEMA=1). Default: refuse.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _serve_options(**flags: Any) -> ServeOptions:
    from tether.cli._server import ServeOptions

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
@listener_options
def serve(listen: str | None, dev: bool, **flags: Any) -> None:
    """Run the Tether server."""
    from tether.cli._server import run_server

    run_server(listen=listen, dev=dev, options=_serve_options(**flags))


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


# -- seal --
def _print_status(status: dict[str, Any]) -> None:
    state = "sealed" if status["sealed"] else "unsealed"
    if not status["initialized"]:
        state = "not initialized"
    out.print(f"Tether is {state}.")
    if status["initialized"]:
        out.print(f"  unseal threshold: {status['threshold']} of {status['shares']} shares")
        if status["sealed"]:
            out.print(f"  unseal progress:  {status['progress']}/{status['threshold']}")
        else:
            out.print(f"  keyring term:     {status['term']}")
    if status.get("dev"):
        out.print("  mode:             dev (auto-unseal from a local key file)")


@cli.command()
@click.option("--shares", type=click.IntRange(1, 255), default=5, show_default=True)
@click.option("--threshold", type=click.IntRange(1, 255), default=3, show_default=True)
@json_option
def init(shares: int, threshold: int, as_json: bool) -> None:
    """Initialize: split the root key into SHARES and print them with the root token, once."""
    with _client() as client:
        result = client.post("/v1/sys/init", {"shares": shares, "threshold": threshold})
    if as_json:
        _emit_json({"shares": result["shares"], "root_token": result["root_token"]})
        return
    for number, share in enumerate(result["shares"], 1):
        out.print(f"Unseal share {number}: {share}")
    out.print(f"Root token: {result['root_token']}")
    out.print(
        f"\nThese are shown once. Give each share to a different person; any {threshold} of "
        "them unseal Tether. Store the root token safely and create narrower tokens."
    )


@cli.command()
@click.argument("share", required=False)
@json_option
def unseal(share: str | None, as_json: bool) -> None:
    """Give one unseal share (or `-` / nothing to read it from stdin)."""
    if share in (None, "-"):
        share = sys.stdin.readline().strip()
    with _client() as client:
        status = client.post("/v1/sys/unseal", {"share": share})
    _emit_json(status) if as_json else _print_status(status)


@cli.command()
@json_option
def seal(as_json: bool) -> None:
    """Seal Tether: drop every key from memory until it is unsealed again."""
    with _client() as client:
        status = client.post("/v1/sys/seal")
    _emit_json(status) if as_json else _print_status(status)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Show whether Tether is initialized and sealed."""
    with _client() as client:
        result = client.get("/v1/sys/status")
    _emit_json(result) if as_json else _print_status(result)


@cli.group()
def operator() -> None:
    """Operator tasks on the barrier."""


@operator.command("rotate")
@json_option
def operator_rotate(as_json: bool) -> None:
    """Add a keyring term; new writes use it and old records are rewrapped in the background."""
    with _client() as client:
        result = client.post("/v1/sys/rotate")
    _emit_json(result) if as_json else out.print(
        f"Keyring rotated: new writes use term {result['term']}."
    )


# -- estate --
def _print_plan(plan: dict[str, Any], dry_run: bool) -> None:
    summary = plan["summary"]
    for change in plan["changes"]:
        sign = {"create": "+", "update": "~", "retire": "-", "delete": "-"}[change["action"]]
        fields = f" ({', '.join(change['fields'])})" if change["action"] == "update" else ""
        out.print(
            f"  {sign} {change['action']:<6} {change['type']} {change['id']}{fields}", markup=False
        )
    counts = ", ".join(f"{n} to {a}" for a, n in summary.items())
    if not plan["changes"]:
        out.print("No changes: the stored estate matches the file.")
    elif dry_run:
        out.print(f"Plan: {counts}. Dry run: nothing was changed.")
    else:
        applied = ", ".join(f"{n} {a}d" for a, n in summary.items() if n)
        out.print(f"Applied: {applied}.")


@cli.command()
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Estate file (YAML).",
)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@json_option
def apply(path: Path, dry_run: bool, as_json: bool) -> None:
    """Validate an estate file, show the plan and apply it in one transaction."""
    document = load_estate_file(path)
    with _client() as client:
        plan = client.post("/v1/estate/apply", document, dry_run=str(dry_run).lower())
    _emit_json(plan) if as_json else _print_plan(plan, dry_run)


@cli.group()
def estate() -> None:
    """The estate file format."""


@estate.command("schema")
def estate_schema_cmd() -> None:
    """Print the estate file's JSON Schema."""
    _emit_json(estate_schema())


# -- inventory --
@cli.group()
def identity() -> None:
    """The inventory of non-human identities."""


@identity.command("list")
@click.option("--kind")
@click.option("--owner")
@click.option("--environment")
@click.option("--status", type=click.Choice(["active", "suspended", "retired"]))
@json_option
def identity_list(
    kind: str | None, owner: str | None, environment: str | None, status: str | None, as_json: bool
) -> None:
    """List identities, filtered by kind, owner, environment or status."""
    items = _all_pages(
        "/v1/identities", kind=kind, owner=owner, environment=environment, status=status
    )
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{len(items)} identities",
        ["id", "kind", "owner", "environment", "status", "purpose"],
        [
            [i["id"], i["kind"], i["owner"], i["environment"], i["status"], i["purpose"]]
            for i in items
        ],
    )


@identity.command("show")
@click.argument("identity_id")
@json_option
def identity_show(identity_id: str, as_json: bool) -> None:
    """Show one identity, its justification and its kind's controls."""
    with _client() as client:
        spec = client.get(f"/v1/identities/{identity_id}")
    if as_json:
        _emit_json(spec)
        return
    table = Table(show_header=False, title=f"identity {spec['id']}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in spec.items():
        structured = key in ("control_profile", "entitlements", "attest", "approval", "labels")
        shown = (json.dumps(value, sort_keys=True) if value else "") if structured else str(value)
        table.add_row(key, shown)
    out.print(table)


# -- audit --
@cli.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify an export offline instead of asking the server.",
)
@json_option
def audit_verify(path: Path | None, as_json: bool) -> None:
    """Check the chain; exit non-zero naming the first bad entry."""
    if path is not None:
        with path.open(encoding="utf-8") as handle:
            try:
                result = verify_chain(read_jsonl(handle)).to_dict()
            except ValueError as exc:
                _fail(str(exc))
    else:
        with _client() as client:
            result = client.get("/v1/audit/verify")
    if as_json:
        _emit_json(result)
    elif result["ok"]:
        out.print(
            f"Audit log verified: {result['entries']} entries, head {result['head_hash'][:16]}…"
        )
    if not result["ok"]:
        if not as_json:
            err.print(f"[bold red]audit verification failed:[/] {result['problem']}")
        sys.exit(2)


@audit.command("export")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def audit_export(output: Path | None) -> None:
    """Write the audit log as JSON lines."""
    with _client() as client:
        lines = client.stream_lines("/v1/audit/export")
        if output is None:
            for line in lines:
                click.echo(line)
        else:
            with output.open("w", encoding="utf-8") as handle:
                count = 0
                for line in lines:
                    handle.write(line + "\n")
                    count += 1
            err.print(f"Wrote {count} entries to {output}.")


# -- tokens --
@cli.group()
def token() -> None:
    """API tokens (roles: admin, auditor, owner:<id>)."""


@token.command("create")
@click.option("--name", required=True)
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    help="admin, auditor or owner:<id>; repeat for several.",
)
@click.option("--ttl", help="Lifetime, e.g. 30d.")
@json_option
def token_create(name: str, roles: tuple[str, ...], ttl: str | None, as_json: bool) -> None:
    """Create an API token; it is shown once."""
    with _client() as client:
        result = client.post("/v1/tokens", {"name": name, "roles": list(roles), "ttl": ttl})
    if as_json:
        _emit_json(result)
    else:
        out.print(f"Token {result['id']} ({', '.join(result['roles'])}): {result['token']}")


@token.command("list")
@json_option
def token_list(as_json: bool) -> None:
    """List API tokens (never their values)."""
    with _client() as client:
        items = client.get("/v1/tokens")
    if as_json:
        _emit_json(items)
        return
    _table(
        "API tokens",
        ["id", "name", "roles", "created", "expires", "revoked"],
        [
            [
                t["id"],
                t["name"],
                ", ".join(t["roles"]),
                t["created_at"],
                t["expires_at"],
                t["revoked_at"],
            ]
            for t in items
        ],
    )


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke an API token."""
    with _client() as client:
        client.request("DELETE", f"/v1/tokens/{token_id}")
    out.print(f"Token {token_id} revoked.")


# -- tasks, leases, join tokens --
@cli.group()
def task() -> None:
    """Tasks: execution windows whose credentials die when they end."""


@task.command("start")
@click.argument("name")
@click.option("--ttl", default="1h", show_default=True)
@click.option(
    "--attestation-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the attestation JWT or join token (default: the file named by "
    "$TETHER_ATTESTATION_TOKEN_FILE, else $TETHER_ATTESTATION_TOKEN).",
)
@json_option
def task_start(name: str, ttl: str, attestation_file: Path | None, as_json: bool) -> None:
    """Attest and start a task; prints the task token once."""
    from tether.client import WorkloadClient, attestation_from_env

    with WorkloadClient(attestation=attestation_from_env(attestation_file)) as client:
        started = client.start_task(name, ttl)
    if as_json:
        _emit_json(
            {"id": started.id, "ends_at": started.ends_at.isoformat(), "token": started.task_token}
        )
    else:
        out.print(f"Task {started.id} ends at {started.ends_at.isoformat()}.")
        out.print(f"Task token: {started.task_token}")


@task.command("end")
@click.argument("task_id")
@json_option
def task_end(task_id: str, as_json: bool) -> None:
    """End a task (admin token, or the task token as TETHER_TOKEN): its credentials die."""
    with _client() as client:
        result = client.post(f"/v1/tasks/{task_id}/end")
    if as_json:
        _emit_json(result)
    else:
        out.print(f"Task {task_id} ended; {result['leases_revoked']} lease(s) revoked.")


@task.command("list")
@click.option("--identity")
@click.option("--status", type=click.Choice(["active", "ended"]))
@json_option
def task_list(identity: str | None, status: str | None, as_json: bool) -> None:
    """List tasks."""
    items = _all_pages("/v1/tasks", identity=identity, status=status)
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{len(items)} tasks",
        ["id", "identity", "name", "status", "ends at", "end reason"],
        [
            [t["id"], t["identity"], t["name"], t["status"], t["ends_at"], t["end_reason"]]
            for t in items
        ],
    )


@cli.group()
def lease() -> None:
    """Leases: the bounded life of every issued credential."""


@lease.command("list")
@click.option("--task")
@click.option("--identity")
@click.option("--owner")
@click.option("--state", type=click.Choice(["pending", "active", "revoking", "revoked", "expired"]))
@json_option
def lease_list(
    task: str | None, identity: str | None, owner: str | None, state: str | None, as_json: bool
) -> None:
    """List leases."""
    items = _all_pages("/v1/leases", task=task, identity=identity, owner=owner, state=state)
    if as_json:
        _emit_json(items)
        return
    _table(
        f"{len(items)} leases",
        ["id", "identity", "profile", "task", "state", "expires at"],
        [
            [
                x["id"],
                x["identity"],
                x["profile"] or x["provider"],
                x["task"],
                x["state"],
                x["expires_at"],
            ]
            for x in items
        ],
    )


@lease.command("show")
@click.argument("lease_id")
@json_option
def lease_show(lease_id: str, as_json: bool) -> None:
    """Show one lease."""
    with _client() as client:
        item = client.get(f"/v1/leases/{lease_id}")
    if as_json:
        _emit_json(item)
        return
    for key, value in item.items():
        out.print(f"{key:>16}: {value}", markup=False)


@lease.command("revoke")
@click.argument("lease_id", required=False)
@click.option("--task")
@click.option("--identity")
@click.option("--owner")
@click.option("--all", "everything", is_flag=True, help="Kill switch: revoke every live lease.")
@click.option("--reason", default="revoked by an operator", show_default=True)
@json_option
def lease_revoke(
    lease_id: str | None,
    task: str | None,
    identity: str | None,
    owner: str | None,
    everything: bool,
    reason: str,
    as_json: bool,
) -> None:
    """Revoke a lease, or every lease of a task, identity or owner, or all (kill switch)."""
    body = {
        "lease": lease_id,
        "task": task,
        "identity": identity,
        "owner": owner,
        "all": everything,
        "reason": reason,
    }
    with _client() as client:
        result = client.post("/v1/leases/revoke", body)
    if as_json:
        _emit_json(result)
    else:
        out.print(f"Revoked {result['revoked']} lease(s).")


@cli.group("join-token")
def join_token() -> None:
    """One-time join tokens for hosts that cannot present OIDC."""


@join_token.command("create")
@click.option("--identity", required=True)
@click.option("--ttl", default="1h", show_default=True)
@json_option
def join_token_create(identity: str, ttl: str, as_json: bool) -> None:
    """Create a join token for IDENTITY; it is shown once and works once."""
    with _client() as client:
        result = client.post("/v1/join-tokens", {"identity": identity, "ttl": ttl})
    if as_json:
        _emit_json(result)
    else:
        out.print(f"Join token {result['id']} for {identity} (expires {result['expires_at']}):")
        out.print(result["token"])


@cli.group()
def target() -> None:
    """Target systems (PostgreSQL, Redis) Tether issues credentials for."""


@target.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(kind_names()), required=True)
@click.option(
    "--dsn-file",
    type=click.File("r"),
    required=True,
    help="File holding the admin DSN (`-` for stdin); it is never printed.",
)
def target_add(name: str, kind: str, dsn_file: Any) -> None:
    """Register a target; its DSN is stored only through the barrier."""
    dsn = dsn_file.read().strip()
    with _client() as client:
        client.post("/v1/targets", {"name": name, "kind": kind, "dsn": dsn})
    out.print(f"Target {name} ({kind}) registered.")


@target.command("list")
@json_option
def target_list(as_json: bool) -> None:
    """List targets (names and kinds, never their DSNs)."""
    with _client() as client:
        items = client.get("/v1/targets")["items"]
    if as_json:
        _emit_json(items)
        return
    _table(f"{len(items)} targets", ["name", "kind"], [[t["name"], t["kind"]] for t in items])


@target.command("rotate-root")
@click.argument("name")
def target_rotate_root(name: str) -> None:
    """Replace the admin password Tether uses for NAME, so no person knows it."""
    with _client() as client:
        client.post(f"/v1/targets/{name}/rotate-root")
    out.print(f"Root credential of {name} rotated.")


@cli.command()
@click.argument("kind", type=click.Choice(kind_names()))
@click.argument("profile")
@click.option("--task", "task_id", help="Issue under this task.")
@click.option("--ttl")
@click.option(
    "--attestation-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Attest with this JWT instead of presenting a task token (TETHER_TOKEN).",
)
@json_option
def creds(
    kind: str,
    profile: str,
    task_id: str | None,
    ttl: str | None,
    attestation_file: Path | None,
    as_json: bool,
) -> None:
    """Get a short-lived credential for a database or cache profile."""
    bearer = attestation_file.read_text().strip() if attestation_file else None
    with TetherClient(token=bearer) if bearer else _client() as client:
        result = client.post(f"/v1/creds/{profile}", {"task": task_id, "ttl": ttl})
    if as_json:
        _emit_json(result)
        return
    location = result.get("dsn") or result.get("url")
    out.print(
        f"{kind} credential, lease {result['lease']}, until {result['expires_at']} "
        f"(bounded by {result['bounded_by']})"
    )
    out.print(f"  connect:  {location}", markup=False)
    out.print(f"  username: {result['username']}", markup=False)
    out.print(f"  password: {result['password']}", markup=False)


@cli.command()
@click.argument("credential_id")
@click.option("--overlap", help="How long the old version stays valid (default: its setting).")
@json_option
def rotate(credential_id: str, overlap: str | None, as_json: bool) -> None:
    """Rotate a static credential in stages: new, tested, promoted; the old one overlaps."""
    with _client() as client:
        result = client.post(f"/v1/credentials/{credential_id}/rotate", {"overlap": overlap})
    if as_json:
        _emit_json(result)
        return
    current = next(v for v in result["versions"] if v["state"] == "current")
    previous = [v for v in result["versions"] if v["state"] == "previous"]
    out.print(f"{credential_id}: version {current['number']} is current.")
    for version in previous:
        out.print(f"  version {version['number']} stays valid until {version['overlap_ends_at']}.")


cli.add_command(policy_group)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except EstateInvalid as exc:
        _fail(
            "the estate is invalid; nothing was changed",
            [{"path": p.path, "message": p.message} for p in exc.problems],
        )
    except ClientError as exc:
        _fail(exc.args[0] if exc.args else "request failed", exc.problems or None)
    except TetherError as exc:
        _fail(str(exc))
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        _fail(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": "))


if __name__ == "__main__":
    main()
