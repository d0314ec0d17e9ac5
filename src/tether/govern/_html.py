"""The evidence report as one self-contained HTML page (`tether report --format html`).

Self-contained: inline CSS, inline SVG charts, no scripts, no fonts or images from
anywhere, and a Content-Security-Policy that forbids fetching anything, so the file can
be mailed to an auditor and opened offline. Every number carries the audit sequence
numbers it was computed from (a tooltip, and a list under each table), so each can be
checked against `tether audit verify` / `tether audit export`. Every string is escaped:
identity ids, titles and reasons come from users.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tether.govern._report import COVERAGE, TRIGGERS
from tether.model import SEVERITIES

__all__ = ["render_report_html"]

#: Seq numbers shown in a tooltip, and in a list, before "… and N more".
_TITLE_SEQS = 20
_LIST_SEQS = 50
_STATES = ("open", "excepted", "resolved")
_COVERAGE = COVERAGE
_TRIGGERS = TRIGGERS

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:70em;padding:0 1em;color:#1d232b;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #d6dbe1}
.meta{color:#56606b}.meta code{word-break:break-all}
table{border-collapse:collapse;margin:.8em 0;min-width:30em}
th,td{border:1px solid #d6dbe1;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f1f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.n[title]{text-decoration:underline dotted #8a949e;cursor:help}
details{margin:.2em 0}summary{cursor:pointer;color:#2d5b8a}
.seqs{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-word}
svg{display:block;margin:.8em 0;max-width:100%;height:auto}
svg text{font:12px system-ui,sans-serif;fill:#1d232b}
.open{fill:#c0392b}.excepted{fill:#d68910}.resolved{fill:#7f8c8d}
.critical{fill:#7b1fa2}.high{fill:#c0392b}.medium{fill:#d68910}.low{fill:#2e86c1}
.median{fill:#2e86c1}.max{fill:#1b4f72}.share{fill:#27ae60}.track{fill:#eef1f4}
.legend span{display:inline-block;margin-right:1em}.none{color:#56606b;font-style:italic}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    """A number as the JSON has it (so it can be found there), or "n/a" for null."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _human_seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.3g} s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or unit == "s":
            parts.append(f"{int(seconds // size)}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


def _seqs(value: object) -> list[int]:
    if not isinstance(value, list | tuple):
        return []
    return sorted({int(s) for s in value if isinstance(s, int) and not isinstance(s, bool)})


def _seq_text(seqs: Sequence[int], cap: int) -> str:
    if not seqs:
        return "no audit entries"
    shown = ", ".join(str(s) for s in seqs[:cap])
    if len(seqs) > cap:
        return f"audit entries: {shown} … and {len(seqs) - cap} more ({len(seqs)} total)"
    return f"audit entries: {shown}"


def _num(value: object, seqs: Sequence[int] | None = None, extra: str = "") -> str:
    """A table cell for one number, its audit entries in the tooltip."""
    title = f' title="{_e(_seq_text(seqs, _TITLE_SEQS))}"' if seqs is not None else ""
    hint = f" <small>({_e(extra)})</small>" if extra else ""
    return f'<td class="n"{title}>{_e(_fmt(value))}{hint}</td>'


def _entries_cell(seqs: Sequence[int]) -> str:
    if not seqs:
        return '<td class="none">none</td>'
    return (
        f"<td><details><summary>{len(seqs)}</summary>"
        f'<div class="seqs">{_e(_seq_text(seqs, _LIST_SEQS))}</div></details></td>'
    )


def _table(head: Sequence[str], rows: Iterable[str]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _int(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


# -- SVG --

_LABEL_W = 200
_BAR_W = 420
_ROW_H = 24


def _bars_svg(
    title: str,
    rows: Sequence[tuple[str, Sequence[tuple[float, str, str]]]],
    *,
    scale: float | None = None,
    stacked: bool = True,
) -> str:
    """Horizontal bars: per row a label and segments (value, css class, tooltip),
    stacked end to end or drawn one under the other."""
    if not rows:
        return f'<p class="none">{_e(title)}: nothing to chart.</p>'
    top = scale if scale is not None else 0.0
    if scale is None:
        for _, segments in rows:
            values = [v for v, _, _ in segments]
            top = max(top, sum(values) if stacked else max(values, default=0.0))
    top = top or 1.0
    lanes = 1 if stacked else max(len(s) for _, s in rows)
    row_h = _ROW_H if stacked else 8 + 14 * lanes
    height = row_h * len(rows) + 8
    width = _LABEL_W + _BAR_W + 90
    out = [
        f'<svg role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{_e(title)}</title>",
    ]
    for i, (label, segments) in enumerate(rows):
        y = 4 + i * row_h
        out.append(f'<text x="{_LABEL_W - 8}" y="{y + row_h / 2 + 4}" text-anchor="end">')
        out.append(f"{_e(label)}</text>")
        out.append(
            f'<rect class="track" x="{_LABEL_W}" y="{y + 3}" width="{_BAR_W}" '
            f'height="{row_h - 6}"/>'
        )
        x = float(_LABEL_W)
        total = 0.0
        for lane, (value, css, tip) in enumerate(segments):
            w = _BAR_W * max(value, 0.0) / top
            bar_y, bar_h = (y + 3, row_h - 6) if stacked else (y + 4 + 14 * lane, 12)
            bar_x = x if stacked else float(_LABEL_W)
            out.append(
                f'<rect class="{_e(css)}" x="{bar_x:.1f}" y="{bar_y}" width="{w:.1f}" '
                f'height="{bar_h}"><title>{_e(tip)}</title></rect>'
            )
            if stacked:
                x += w
                total += value
            else:
                out.append(f'<text x="{bar_x + w + 4:.1f}" y="{bar_y + 10}">{_e(tip)}</text>')
        if stacked:
            out.append(
                f'<text x="{x + 4:.1f}" y="{y + row_h / 2 + 4}">{_e(_fmt_total(total))}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def _fmt_total(total: float) -> str:
    return str(int(total)) if total == int(total) else f"{total:.3g}"


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(
        f'<span><svg width="12" height="12" style="display:inline;margin:0">'
        f'<rect class="{_e(css)}" width="12" height="12"/></svg> {_e(label)}</span>'
        for css, label in items
    )
    return f'<p class="legend">{spans}</p>'


# -- sections --


def _header(report: Mapping[str, Any]) -> str:
    head = _map(report.get("audit_head"))
    framework = report.get("framework", "")
    return (
        f"<h1>Tether evidence report ({_e(framework)})</h1>"
        '<p class="meta">'
        f"Period since <b>{_e(report.get('since', ''))}</b>, "
        f"generated at <b>{_e(report.get('generated_at', ''))}</b>.<br>"
        f"Audit head: seq <b>{_e(_fmt(head.get('seq')))}</b>, "
        f"hash <code>{_e(head.get('hash', ''))}</code>. Each number below names the audit "
        "entries (sequence numbers) it was computed from; verify the chain with "
        "<code>tether audit verify</code>.</p>"
    )


def _coverage(section: Mapping[str, Any]) -> str:
    fields = _map(section.get("fields"))
    identities = section.get("identities")
    names = [n for n in _COVERAGE if n in fields] + sorted(set(fields) - set(_COVERAGE))
    chart_rows = []
    rows = []
    for name in names:
        entry = _map(fields[name])
        seqs = _seqs(entry.get("audit_entries"))
        share = _int(entry.get("share"))
        chart_rows.append(
            (
                name,
                [(share * 100, "share", f"{name}: {_fmt(entry.get('share'))} ({share:.1%})")],
            )
        )
        rows.append(
            f"<th>{_e(name)}</th>"
            + _num(entry.get("count"), seqs)
            + _num(identities, seqs)
            + _num(entry.get("share"), seqs, f"{share:.1%}")
            + _entries_cell(seqs)
        )
    return (
        '<h2 id="coverage">Inventory coverage</h2>'
        f"<p>Identities in the inventory (not retired): <b>{_e(_fmt(identities))}</b>.</p>"
        + _bars_svg("Coverage (% of identities)", chart_rows, scale=100.0)
        + _table(["Field", "Identities with it", "Of", "Share", "Audit entries"], rows)
        + _rest(section, {"identities", "fields"})
    )


def _rule_seqs(rows: Sequence[Mapping[str, Any]], keep: Any) -> list[int]:
    return sorted({s for row in rows if keep(row) for s in _seqs(row.get("audit_entries"))})


def _findings(section: Mapping[str, Any], framework: str) -> str:
    by_rule = [_map(r) for r in _list(section.get("by_rule"))]
    every = _rule_seqs(by_rule, lambda _: True)
    parts = [
        '<h2 id="findings">Findings</h2>',
        f"<p>Findings in the period: <b>{_e(_fmt(section.get('total')))}</b> "
        f'<span title="{_e(_seq_text(every, _TITLE_SEQS))}">'
        f"({len(every)} audit entries)</span>.</p>",
    ]
    chart = [
        (
            f"{r.get('rule', '')} ({r.get('severity', '')})",
            [(_int(r.get(s)), s, f"{r.get('rule', '')}: {_fmt(r.get(s))} {s}") for s in _STATES],
        )
        for r in by_rule
    ]
    parts.append(_bars_svg("Findings by rule and state", chart))
    parts.append(_legend([(s, s) for s in _STATES]))
    rows = []
    for r in by_rule:
        seqs = _seqs(r.get("audit_entries"))
        age = r.get("oldest_open_age_s")
        controls = [*_list(r.get("owasp_nhi")), *_list(r.get("nist_csf"))]
        rows.append(
            f"<td>{_e(r.get('rule', ''))}</td><td>{_e(r.get('title', ''))}</td>"
            f"<td>{_e(r.get('severity', ''))}</td><td>{_e(', '.join(map(str, controls)))}</td>"
            + "".join(_num(r.get(s), seqs) for s in _STATES)
            + _num(age, seqs, _human_seconds(age))
            + _entries_cell(seqs)
        )
    head = ["Rule", "Title", "Severity", "Controls", *_STATES, "Oldest open (s)", "Audit"]
    parts.append(_table(head, rows))
    leftover = [
        _rest(
            r,
            {
                "rule",
                "title",
                "severity",
                "owasp_nhi",
                "nist_csf",
                "audit_entries",
                "oldest_open_age_s",
                *_STATES,
            },
        )
        for r in by_rule
    ]
    parts += [x for x in leftover if x]
    parts.append(_by_severity(_map(section.get("by_severity")), by_rule))
    parts.append(_by_control(_map(section.get("by_control")), by_rule, framework))
    parts.append(_rest(section, {"total", "by_rule", "by_severity", "by_control"}))
    return "".join(parts)


def _by_severity(by_severity: Mapping[str, Any], by_rule: Sequence[Mapping[str, Any]]) -> str:
    names = [s for s in SEVERITIES if s in by_severity]
    names += sorted(set(by_severity) - set(SEVERITIES))
    chart = [
        (name, [(_int(by_severity[name]), name, f"{name}: {_fmt(by_severity[name])} open")])
        for name in names
    ]
    rows = []
    for name in names:
        seqs = _rule_seqs(by_rule, lambda r, n=name: r.get("severity") == n)
        rows.append(f"<th>{_e(name)}</th>" + _num(by_severity[name], seqs) + _entries_cell(seqs))
    return (
        "<h3>Open findings by severity</h3>"
        + _bars_svg("Open findings by severity", chart)
        + _table(["Severity", "Open", "Audit entries (of its rules)"], rows)
    )


def _by_control(
    by_control: Mapping[str, Any], by_rule: Sequence[Mapping[str, Any]], framework: str
) -> str:
    key = "nist_csf" if framework == "nist-csf" else "owasp_nhi"
    rows = []
    for control in sorted(by_control):
        seqs = _rule_seqs(by_rule, lambda r, c=control: c in _list(r.get(key)))
        rows.append(
            f"<th>{_e(control)}</th>" + _num(by_control[control], seqs) + _entries_cell(seqs)
        )
    title = "NIST CSF" if key == "nist_csf" else "OWASP NHI"
    return f"<h3>Open findings by {title} control</h3>" + _table(
        ["Control", "Open", "Audit entries (of its rules)"], rows
    )


def _counts(anchor: str, title: str, section: Mapping[str, Any], names: Sequence[str]) -> str:
    """A section of counts that share one list of audit entries."""
    seqs = _seqs(section.get("audit_entries"))
    rows = [f"<th>{_e(n)}</th>" + _num(section.get(n), seqs) for n in names if n in section]
    nested = [k for k, v in section.items() if isinstance(v, Mapping)]
    for key in nested:
        for name, value in _map(section[key]).items():
            rows.append(f"<th>{_e(key)}: {_e(name)}</th>" + _num(value, seqs))
    return (
        f'<h2 id="{_e(anchor)}">{_e(title)}</h2>'
        + _table(["", "Count"], rows)
        + f'<div class="seqs">{_e(_seq_text(seqs, _LIST_SEQS))}</div>'
        + _rest(section, {*names, *nested, "audit_entries"})
    )


def _triggers(section: Mapping[str, Any]) -> str:
    names = [t for t in _TRIGGERS if t in section] + sorted(set(section) - set(_TRIGGERS))
    chart = []
    rows = []
    for name in names:
        entry = _map(section[name])
        seqs = _seqs(entry.get("audit_entries"))
        median, top = entry.get("median_s"), entry.get("max_s")
        if entry.get("count"):
            chart.append(
                (
                    name,
                    [
                        (_int(median), "median", f"median {_fmt(median)} s"),
                        (_int(top), "max", f"max {_fmt(top)} s"),
                    ],
                )
            )
        rows.append(
            f"<th>{_e(name)}</th>"
            + _num(entry.get("count"), seqs)
            + _num(median, seqs, _human_seconds(median))
            + _num(top, seqs, _human_seconds(top))
            + _entries_cell(seqs)
        )
    return (
        '<h2 id="trigger-to-dead">Trigger to dead credential</h2>'
        "<p>Seconds from the event that ended a credential's justification to the "
        "credential being unusable.</p>"
        + _bars_svg("Trigger to dead: median and max (s)", chart, stacked=False)
        + _legend([("median", "median"), ("max", "max")])
        + _table(["Trigger", "Count", "Median (s)", "Max (s)", "Audit entries"], rows)
    )


def _keys(section: Mapping[str, Any]) -> str:
    items = [_map(i) for i in _list(section.get("items"))]
    rows = []
    for item in items:
        rotations = _map(item.get("rotations"))
        approvals = _map(item.get("approvals"))
        rotation_seqs = _seqs(rotations.get("audit_entries"))
        approval_seqs = _seqs(approvals.get("audit_entries"))
        escrow = (
            f"{_fmt(item.get('escrow_threshold'))} of {_fmt(item.get('escrow_holders'))}"
            if item.get("escrowed")
            else "no"
        )
        identity = _e(item.get("identity", ""))
        if item.get("identity_in_estate") is False:
            identity += " <small>(not in the estate)</small>"
        asked = ", ".join(
            f"{name} {_fmt(approvals.get(name))}"
            for name in ("requested", "approved", "denied", "executed", "expired", "cancelled")
            if approvals.get(name)
        )
        rows.append(
            f"<th>{_e(item.get('name', ''))}</th>"
            f"<td>{_e(item.get('type', ''))}</td>"
            f"<td>{identity}</td>"
            + _num(item.get("latest_version"))
            + _num(item.get("min_decryption_version"))
            + _num(item.get("min_encryption_version"))
            + f"<td>{_e(escrow)}</td>"
            + _num(rotations.get("count"), rotation_seqs)
            + f'<td title="{_e(_seq_text(approval_seqs, _TITLE_SEQS))}">{_e(asked or "none")}</td>'
            + _num(item.get("open_findings"))
            + _entries_cell(sorted({*rotation_seqs, *approval_seqs}))
        )
    table = (
        _table(
            [
                "Key",
                "Type",
                "Identity",
                "Latest version",
                "Min decryption",
                "Min encryption",
                "Escrow (M of N)",
                "Rotations",
                "Approvals",
                "Open findings",
                "Audit entries",
            ],
            rows,
        )
        if rows
        else '<p class="none">No keys.</p>'
    )
    return (
        '<h2 id="keys">Confidentiality keys</h2>'
        f"<p>Keys: <b>{_e(_fmt(section.get('total')))}</b>, escrowed: "
        f"<b>{_e(_fmt(section.get('escrowed')))}</b>, rotations in the period: "
        f"<b>{_e(_fmt(section.get('rotations')))}</b>, open key findings: "
        f"<b>{_e(_fmt(section.get('open_findings')))}</b>. Metadata only: no key material "
        "is in this report.</p>"
        + table
        + _rest(
            section, {"total", "escrowed", "rotations", "open_findings", "items", "audit_entries"}
        )
    )


# -- whatever else the report carries: shown, never dropped --


def _rest(section: Mapping[str, Any], known: Iterable[str]) -> str:
    extra = {k: v for k, v in section.items() if k not in set(known)}
    return _generic(extra) if extra else ""


def _generic(value: object, depth: int = 0) -> str:
    if depth > 6:
        return _e(value)
    if isinstance(value, Mapping):
        rows = [f"<th>{_e(k)}</th><td>{_generic(v, depth + 1)}</td>" for k, v in value.items()]
        return _table(["", ""], rows) if rows else ""
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, Mapping) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            rows = [
                "".join(f"<td>{_generic(v.get(c, ''), depth + 1)}</td>" for c in columns)
                for v in value
            ]
            return _table(columns, rows)
        return _e(", ".join(_fmt(v) for v in value))
    return _e(_fmt(value))


def render_report_html(report: Mapping[str, Any]) -> str:
    """The report JSON of `tether report` as one self-contained HTML page."""
    framework = str(report.get("framework", ""))
    known = {
        "framework",
        "since",
        "generated_at",
        "audit_head",
        "coverage",
        "findings",
        "reviews",
        "exceptions",
        "leases",
        "trigger_to_dead",
        "keys",
    }
    body = [
        _header(report),
        _coverage(_map(report.get("coverage"))),
        _findings(_map(report.get("findings")), framework),
        _counts(
            "reviews",
            "Access reviews",
            _map(report.get("reviews")),
            ["campaigns", "completed", "items", "decided"],
        ),
        _counts("exceptions", "Exceptions", _map(report.get("exceptions")), ["active", "expired"]),
        _counts(
            "leases", "Credentials", _map(report.get("leases")), ["issued", "revoked", "expired"]
        ),
        _triggers(_map(report.get("trigger_to_dead"))),
    ]
    if "keys" in report:
        body.append(_keys(_map(report.get("keys"))))
    extra = {k: v for k, v in report.items() if k not in known}
    if extra:
        body.append('<h2 id="more">More</h2>' + _generic(extra))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Tether evidence report ({_e(framework)}) {_e(report.get('generated_at', ''))}"
        f"</title><style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
