"""`tether policy ...`: offline policy tooling. Nothing here talks to a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from tether.cli._output import out
from tether.estate import load_estate_file, parse_estate
from tether.model import Estate, Policy
from tether.policy import (
    CEDAR_SCHEMA,
    CaseResult,
    PolicyTestInvalid,
    load_suite,
    run_suite,
    schema_text,
)

#: A suite is hand-written JSON; anything this large is a mistake, not a suite.
MAX_SUITE_BYTES = 16 * 1024 * 1024


@click.group()
def policy() -> None:
    """Cedar policies: the schema they are written against, and offline tests."""


@policy.command("schema")
@click.option("--json", "as_json", is_flag=True, help="The JSON form, as Cedar tools take it.")
def policy_schema(as_json: bool) -> None:
    """Print the Cedar schema policies are validated against."""
    if as_json:
        click.echo(json.dumps(CEDAR_SCHEMA, indent=2, sort_keys=True))
    else:
        click.echo(schema_text(), nl=False)


def _read_suite(path: Path) -> Any:
    if path.stat().st_size > MAX_SUITE_BYTES:
        raise PolicyTestInvalid(f"{path}: larger than {MAX_SUITE_BYTES} bytes")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PolicyTestInvalid(
            f"{path}: not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except UnicodeDecodeError:
        raise PolicyTestInvalid(f"{path}: not UTF-8 text") from None


def _read_policy(path: Path, policy_id: str, where: str) -> Policy:
    try:
        return Policy(id=policy_id, source=path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise PolicyTestInvalid(f"{where}: cannot read {policy_id}: {why}") from None


def _load_estate(path: Path) -> Estate:
    return parse_estate(load_estate_file(path))


def _collect(
    suite_file: Path,
    suite_policies: tuple[str, ...],
    extra: tuple[Path, ...],
    estate_file: Path | None,
    estate: Estate | None,
) -> list[Policy]:
    """The estate's policies, the suite's and --policies, each file once."""
    collected: dict[Path, Policy] = {}
    if estate is not None and estate_file is not None:
        for item in estate.policies:
            collected.setdefault((estate_file.parent / item.id).resolve(), item)
    for index, relative in enumerate(suite_policies):
        path = suite_file.parent / relative
        if path.resolve() not in collected:
            collected[path.resolve()] = _read_policy(path, relative, f"policies[{index}]")
    for given in extra:
        files = sorted(given.rglob("*.cedar")) if given.is_dir() else [given]
        for path in files:
            if path.resolve() not in collected:
                collected[path.resolve()] = _read_policy(path, str(path), "--policies")
    return list(collected.values())


def _print_results(results: list[CaseResult]) -> None:
    table = Table(title="policy test", title_justify="left")
    for column in ("case", "expect", "got", "decided by", "why", "result"):
        table.add_column(column, overflow="fold")
    for result in results:
        decision = result.decision
        why = "; ".join(decision.reasons)
        if result.missing:
            why = f"expected to be decided by {', '.join(result.missing)}; " + why
        table.add_row(
            escape(result.name),
            result.expect,
            result.got,
            escape(", ".join(decision.policy_ids)),
            escape(why),
            "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]",
        )
    out.print(table)
    failed = sum(not r.passed for r in results)
    out.print(f"{len(results) - failed} passed, {failed} failed.")


@policy.command("test")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--policies",
    "policy_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A Cedar file, or a directory of .cedar files; repeat for several.",
)
@click.option(
    "--estate",
    "estate_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Estate file: its policies are tested, its identities and profiles named by id.",
)
@click.option(
    "--no-default-policy",
    is_flag=True,
    help="Test the policies alone, without tether:default (an empty set denies everything).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def policy_test(
    file: Path,
    policy_paths: tuple[Path, ...],
    estate_file: Path | None,
    no_default_policy: bool,
    as_json: bool,
) -> None:
    """Run the JSON test cases in FILE; exit 1 if any case does not decide as expected.

    \b
    FILE: {"policies": ["base.cedar"], "defaults": {...},
           "cases": [{"name": "...", "request": {...},
                      "expect": "allow" | "deny", "reasons": ["policy id", ...]}]}
    A request names "identity" and "profile" by estate id (--estate) or inline, and may
    set action, attested, entitled, scopes, ttl, now, vendor, kind_max_ttl,
    attestation_required, issuer, claims, task, task_name, intent, source_ip, actor.
    Unset, they make an ordinary request: issue, attested, entitled, the profile's
    TTL, now.
    """
    estate = None if estate_file is None else _load_estate(estate_file)
    suite = load_suite(_read_suite(file), estate)
    policies = _collect(file, suite.policies, policy_paths, estate_file, estate)
    default_policy = suite.default_policy and not no_default_policy
    results = run_suite(suite.cases, policies, default_policy)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "policies": [p.id for p in policies],
                    "default_policy": default_policy,
                    "passed": sum(r.passed for r in results),
                    "failed": sum(not r.passed for r in results),
                    "cases": [r.to_dict() for r in results],
                },
                indent=2,
            )
        )
    else:
        _print_results(results)
    if not all(r.passed for r in results):
        sys.exit(1)
