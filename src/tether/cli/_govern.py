"""`tether findings`, `tether review`, `tether exception`, `tether report` and
`tether usage`: governance, as a client of the server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from tether.cli._api import all_pages, client, get, post
from tether.cli._output import (
    Column,
    emit_json,
    fail,
    out,
    output_option,
    show_listing,
    show_record,
)
from tether.govern import apply_withdrawals

FINDING_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("rule", "rule"),
    Column("severity", "severity"),
    Column("identity", "identity", identifier=True),
    Column("owner", "owner"),
    Column("state", "state"),
    Column("assignee", lambda f: (f.get("assignee") or {}).get("to")),
    Column("owasp", "owasp_nhi"),
    Column("nist", "nist_csf", wide=True),
    Column("first seen", "first_seen", wide=True),
    Column("last seen", "last_seen", wide=True),
    Column("recommendation", "recommendation"),
)
CAMPAIGN_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("scope", "scope"),
    Column("state", "state"),
    Column("items", "items"),
    Column("decided", "decided"),
    Column("due", "due"),
    Column("default", "default", wide=True),
)
ITEM_COLUMNS = (
    Column("item", "id", identifier=True),
    Column("identity", "identity", identifier=True),
    Column("profile", "profile"),
    Column("uses", lambda i: i["usage"]["count"]),
    Column("last used", lambda i: i["usage"]["last_seen"], wide=True),
    Column("scopes used", lambda i: i["usage"]["scopes_used"], wide=True),
    Column("recommendation", "recommendation"),
    Column("narrow to", "narrow_to", wide=True),
    Column("state", "state"),
)
EXCEPTION_COLUMNS = (
    Column("id", "id", identifier=True),
    Column("rule", "rule"),
    Column("identity", "identity", identifier=True),
    Column("state", "state"),
    Column("expires", "expires"),
    Column("requested by", "requested_by", wide=True),
    Column("approved by", "approved_by", wide=True),
    Column("compensating control", "compensating_control"),
)


@click.group(invoke_without_command=True)
@click.option("--rule")
@click.option("--severity", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--owner")
@click.option("--identity")
@click.option("--state", type=click.Choice(["open", "resolved", "excepted"]))
@click.option("--assignee", help='Only findings assigned to this person ("" for unassigned).')
@click.option("--refresh", is_flag=True, help="Evaluate the whole estate first.")
@output_option
@click.pass_context
def findings(ctx: click.Context, /, output: str, refresh: bool, **filters: str | None) -> None:
    """Governance findings (orphaned, dormant, over-privileged ...) with their OWASP NHI
    and NIST CSF mappings."""
    if ctx.invoked_subcommand is not None:
        return
    if refresh:
        post("/v1/findings/evaluate")
    items = all_pages("/v1/findings", filters)
    show_listing(f"{len(items)} findings", FINDING_COLUMNS, items, output)


@findings.command("assign")
@click.argument("finding_id")
@click.argument("assignee")
@output_option
def findings_assign(finding_id: str, assignee: str, output: str) -> None:
    """Put FINDING_ID in ASSIGNEE's queue (e.g. an email; "" takes it out of every queue)."""
    spec = post(f"/v1/findings/{finding_id}/assign", {"assignee": assignee})
    show_record(f"finding {finding_id}", spec, output)


@click.group()
def review() -> None:
    """Access reviews: campaigns of identity entitlements, decided by their owners."""


@review.command("start")
@click.option("--owner")
@click.option("--kind")
@click.option("--criticality", type=click.Choice(["low", "medium", "high", "critical"]))
@click.option("--due", help="When unanswered items take the default (RFC 3339 or a date).")
@click.option(
    "--default",
    "default",
    type=click.Choice(["revoke", "escalate"]),
    default="revoke",
    show_default=True,
)
@output_option
def review_start(output: str, **fields: str | None) -> None:
    """Open a campaign: one item per identity and entitlement in scope."""
    campaign = post("/v1/reviews", {k: v for k, v in fields.items() if v is not None})
    show_record(f"review {campaign['id']}", campaign, output)


@review.command("list")
@output_option
def review_list(output: str) -> None:
    """Campaigns (an owner token sees those with its items)."""
    items = get("/v1/reviews")["items"]
    show_listing(f"{len(items)} reviews", CAMPAIGN_COLUMNS, items, output)


@review.command("show")
@click.argument("campaign_id")
@output_option
def review_show(campaign_id: str, output: str) -> None:
    """A campaign's items, with usage evidence and recommendations."""
    campaign = get(f"/v1/reviews/{campaign_id}")
    if output in ("json", "yaml"):
        show_record(campaign_id, campaign, output)
        return
    entries = campaign.pop("entries")
    show_record(f"review {campaign_id}", campaign, output)
    show_listing(f"{len(entries)} items", ITEM_COLUMNS, entries, output)


@review.command("decide")
@click.argument("item_id")
@click.argument("decision", type=click.Choice(["keep", "narrow", "revoke"]))
@click.option("--scope", "scopes", multiple=True, help="For narrow: a scope to keep (repeat).")
@click.option("--reason")
@output_option
def review_decide(
    item_id: str, decision: str, scopes: tuple[str, ...], reason: str | None, output: str
) -> None:
    """Decide one item. Revoke and narrow take effect at once."""
    body: dict[str, Any] = {"decision": decision, "reason": reason}
    if scopes:
        body["scopes"] = list(scopes)
    item = post(f"/v1/reviews/items/{item_id}/decide", body)
    show_record(f"item {item_id}", item, output)


@review.command("export")
@click.argument("campaign_id")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The estate file to bring in line with the decisions.",
)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the changed file (default: standard output).",
)
def review_export(campaign_id: str, path: Path, target: Path | None) -> None:
    """Write the estate file with the campaign's revocations and narrowings applied,
    so applying it changes nothing more and grants nothing back."""
    changes = get(f"/v1/reviews/{campaign_id}/export")["changes"]
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict):
        fail(f"{path}: is not an estate file")
    changed = apply_withdrawals(document, changes)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    if target is None:
        click.echo(text, nl=False)
    else:
        target.write_text(text)
        out.print(f"{changed} entitlement(s) changed; wrote {target}", markup=False)


@click.group("exception")
def exception_group() -> None:
    """Time-bound waivers of a finding: requested, approved by someone else, expiring."""


@exception_group.command("request")
@click.option("--rule", required=True)
@click.option("--identity", required=True)
@click.option("--compensating-control", required=True)
@click.option("--expires", required=True, help="RFC 3339 time or a date.")
@click.option("--scope")
@click.option("--reason")
@output_option
def exception_request(output: str, **fields: str | None) -> None:
    spec = post("/v1/exceptions", {k: v for k, v in fields.items() if v is not None})
    show_record(f"exception {spec['id']}", spec, output)


@exception_group.command("approve")
@click.argument("exception_id")
@output_option
def exception_approve(exception_id: str, output: str) -> None:
    spec = post(f"/v1/exceptions/{exception_id}/approve")
    show_record(f"exception {exception_id}", spec, output)


@exception_group.command("revoke")
@click.argument("exception_id")
@output_option
def exception_revoke(exception_id: str, output: str) -> None:
    spec = post(f"/v1/exceptions/{exception_id}/revoke")
    show_record(f"exception {exception_id}", spec, output)


@exception_group.command("list")
@click.option("--state", type=click.Choice(["requested", "active", "expired", "revoked"]))
@output_option
def exception_list(output: str, state: str | None) -> None:
    items = get("/v1/exceptions", state=state)["items"]
    show_listing(f"{len(items)} exceptions", EXCEPTION_COLUMNS, items, output)


MIGRATION_COLUMNS = (
    Column("secret", "secret", identifier=True),
    Column("kind", "kind"),
    Column("target", "target"),
    Column("criticality", "criticality"),
    Column("exposures", "exposures"),
    Column("age (days)", "age_days"),
    Column("rank", "rank"),
    Column("replace with", "replace_with"),
)


@click.group(invoke_without_command=True)
@click.option(
    "--framework",
    type=click.Choice(["owasp-nhi", "nist-csf"]),
    default="owasp-nhi",
    show_default=True,
)
@click.option("--since", help="Start of the period (RFC 3339 or a date; default 90 days ago).")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "html"]), default="json", show_default=True
)
@click.option(
    "-o",
    "--output",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report to this file (default: standard output).",
)
@click.pass_context
def report(
    ctx: click.Context, framework: str, since: str | None, fmt: str, target: Path | None
) -> None:
    """The evidence report: coverage, findings, reviews, exceptions, credentials and
    trigger-to-dead times, each number with the audit entries it came from."""
    if ctx.invoked_subcommand is not None:
        return
    params = {"framework": framework, "since": since, "format": fmt}
    with client() as api:
        if fmt == "json":
            text = json.dumps(api.get("/v1/reports/evidence", **params), indent=2, sort_keys=True)
        else:
            text = api.text("/v1/reports/evidence", **params)
    if target is None:
        click.echo(text)
    else:
        target.write_text(text)
        out.print(f"wrote {target}", markup=False)


@report.command("migration")
@output_option
def report_migration(output: str) -> None:
    """Legacy and static secrets, riskiest first, with the dynamic profile to move to."""
    items = get("/v1/reports/migration")["items"]
    show_listing(f"{len(items)} static secrets", MIGRATION_COLUMNS, items, output)


@click.command()
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON lines (or a JSON array) of usage records.",
)
def usage(path: Path) -> None:
    """Feed usage evidence from an external audit log (POST /v1/usage)."""
    with client() as api:
        result = api.request(
            "POST",
            "/v1/usage",
            content=path.read_bytes(),
            headers={"content-type": "application/x-ndjson"},
        )
    emit_json(result)


COMMANDS = (findings, review, exception_group, report, usage)
