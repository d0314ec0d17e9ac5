"""`tether task` and `tether lease`: execution windows and the credentials bounded by them."""

from __future__ import annotations

from pathlib import Path

import click

from tether.cli._api import all_pages, get, post
from tether.cli._output import (
    Column,
    emit_json,
    json_option,
    out,
    output_option,
    show_listing,
    show_record,
)

TASK_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("identity", "identity", identifier=True),
    Column("name", "name"),
    Column("status", "status"),
    Column("created at", "created_at", wide=True),
    Column("ends at", "ends_at"),
    Column("issuer", "issuer", wide=True),
    Column("end reason", "end_reason"),
)
LEASE_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("identity", "identity", identifier=True),
    Column("owner", "owner", wide=True),
    Column("profile", lambda x: x["profile"] or x["provider"]),
    Column("task", "task", identifier=True),
    Column("parent", "parent", wide=True),
    Column("state", "state"),
    Column("issued at", "issued_at", wide=True),
    Column("expires at", "expires_at"),
    Column("end reason", "end_reason", wide=True),
)
_LEASE_STATES = ["pending", "active", "revoking", "revoked", "expired"]


@click.group()
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

    with WorkloadClient(attestation=attestation_from_env(attestation_file)) as workload:
        started = workload.start_task(name, ttl)
    if as_json:
        emit_json(
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
    result = post(f"/v1/tasks/{task_id}/end")
    if as_json:
        emit_json(result)
    else:
        out.print(f"Task {task_id} ended; {result['leases_revoked']} lease(s) revoked.")


@task.command("list")
@click.option("--identity")
@click.option("--status", type=click.Choice(["active", "ended"]))
@output_option
def task_list(output: str, **filters: str | None) -> None:
    """List tasks."""
    items = all_pages("/v1/tasks", filters)
    show_listing(f"{len(items)} tasks", TASK_COLUMNS, items, output)


@click.group()
def lease() -> None:
    """Leases: the bounded life of every issued credential."""


@lease.command("list")
@click.option("--task")
@click.option("--identity")
@click.option("--owner")
@click.option("--state", type=click.Choice(_LEASE_STATES))
@output_option
def lease_list(output: str, **filters: str | None) -> None:
    """List leases."""
    items = all_pages("/v1/leases", filters)
    show_listing(f"{len(items)} leases", LEASE_COLUMNS, items, output)


@lease.command("show")
@click.argument("lease_id")
@output_option
def lease_show(lease_id: str, output: str) -> None:
    """Show one lease."""
    item = get(f"/v1/leases/{lease_id}")
    show_record(f"lease {lease_id}", item, output)


@lease.command("renew")
@click.argument("lease_id")
@click.option("--ttl", help="How long from now, e.g. 30m (default: the profile's TTL).")
@output_option
def lease_renew(lease_id: str, ttl: str | None, output: str) -> None:
    """Extend a lease (admin token, or its task's token as TETHER_TOKEN); policy decides
    again, and the task, approval and identity still bound it."""
    renewed = post(f"/v1/leases/{lease_id}/renew", {"ttl": ttl})
    if output in ("table", "wide"):
        out.print(
            f"Lease {lease_id} renewed until {renewed['expires_at']} "
            f"(bounded by {renewed['bounded_by']})."
        )
    else:
        show_record(f"lease {lease_id}", renewed, output)


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
    result = post("/v1/leases/revoke", body)
    if as_json:
        emit_json(result)
    else:
        out.print(f"Revoked {result['revoked']} lease(s).")


COMMANDS = (task, lease)
