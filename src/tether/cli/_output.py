"""How every command prints: one place for tables, JSON, YAML and errors.

Listings take `-o table|wide|json|yaml` (and `--json`, kept as `-o json`). A table never
cuts an id: identifier columns are as wide as their longest value, and when stdout is not
a terminal (piped, redirected) every table is printed at its natural width, one row a
line, so what is printed can be copied and grepped whole.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

#: The output formats of a listing; `table` is the default.
FORMATS = ("table", "wide", "json", "yaml")
#: Wide enough to measure any table at its natural width.
_UNBOUNDED = 1_000_000


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a listing: its header and the item's field (or a function of the item).

    An `identifier` column is never shortened; a `wide` column shows only with `-o wide`.
    """

    header: str
    field: str | Callable[[Mapping[str, Any]], Any]
    identifier: bool = False
    wide: bool = False

    def value(self, item: Mapping[str, Any]) -> str:
        raw = self.field(item) if callable(self.field) else item.get(self.field)
        if raw is None:
            return ""
        if isinstance(raw, list | tuple):
            return ", ".join(str(v) for v in raw)
        if isinstance(raw, dict):
            return json.dumps(raw, sort_keys=True) if raw else ""
        return str(raw)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def output_option(func: F) -> F:
    """`-o/--output FORMAT` and `--json` (the same as `-o json`); the command gets `output`."""

    @functools.wraps(func)
    def command(*args: Any, output: str, as_json: bool, **kwargs: Any) -> Any:
        return func(*args, output="json" if as_json else output, **kwargs)

    command = click.option("--json", "as_json", is_flag=True, help="The same as -o json.")(command)
    command = click.option(
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table, wide (every column), json or yaml.",
    )(command)
    return cast(F, command)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _emit_data(value: Any, output: str) -> bool:
    """Print `value` as JSON or YAML when that is the format asked for; say whether it was."""
    if output == "json":
        emit_json(value)
    elif output == "yaml":
        click.echo(yaml.safe_dump(value, sort_keys=True, allow_unicode=True), nl=False)
    else:
        return False
    return True


def show_listing(
    title: str, columns: Sequence[Column], items: Sequence[Mapping[str, Any]], output: str
) -> None:
    """A listing in the format asked for: its items whole as data, or a table of columns."""
    if _emit_data(list(items), output):
        return
    shown = [c for c in columns if output == "wide" or not c.wide]
    rows = [[c.value(item) for c in shown] for item in items]
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(shown):
        longest = max((len(row[index]) for row in rows), default=0)
        if column.identifier:
            table.add_column(column.header, no_wrap=True, min_width=max(longest, 1))
        else:
            table.add_column(column.header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _print_table(table, natural=output == "wide")


def show_record(title: str, item: Mapping[str, Any], output: str) -> None:
    """One item: as data, or a table of its fields (structured values as compact JSON)."""
    if _emit_data(dict(item), output):
        return
    table = Table(show_header=False, title=title, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in item.items():
        shown = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        table.add_row(key, "" if shown is None or shown in ("{}", "[]") else str(shown))
    _print_table(table, natural=output == "wide")


def _print_table(table: Table, natural: bool) -> None:
    """At its natural width when asked or when stdout is not a terminal; else at the
    terminal's width, but never narrower than the table's identifier columns need."""
    measured = Measurement.get(out, out.options.update_width(_UNBOUNDED), table)
    if natural or not out.is_terminal:
        table.width = max(measured.maximum, 1)
    elif measured.minimum > out.width:
        table.width = measured.minimum
    out.print(table)


def fail(message: str, problems: Sequence[Mapping[str, str]] = ()) -> NoReturn:
    """One line for the error, then one line per problem, each naming its field."""
    err.print(f"[bold red]error:[/] {escape(_headline(message, problems))}", markup=True)
    for problem in problems:
        err.print(f"  {problem['path']}: {problem['message']}", markup=False)
    sys.exit(1)


def _headline(message: str, problems: Sequence[Mapping[str, str]]) -> str:
    """The message without the problems a server already spelled out in it (they are
    printed once, a line each, below it)."""
    if problems:
        first = problems[0]
        cut = message.find(f"{first['path']}: {first['message']}")
        if cut > 0:
            return message[:cut].rstrip(": ;") or message
    return message
