"""Gitleaks-format rule files (`--rules FILE`), so that teams keep the rules they have.

A gitleaks config is TOML: `[[rules]]` with a Go (RE2) `regex`, and allow-lists per rule
and global. The regexes are rewritten into Python's syntax (which Hyperscan also takes)
where the two differ: flags set in the middle of a pattern become scoped groups, POSIX
classes are spelled out, `\\z` becomes `\\Z`, `\\x{...}` and octal escapes become
literals, `(?U)` swaps the greediness of the quantifiers it covers. What RE2 has and
Python has not (`\\p{...}` Unicode classes, `\\C`) is an error naming the rule.

What a rule says maps onto `Rule` as follows; nothing is silently weakened:

- `id`, `description`, `regex`, `keywords` (lower-cased), `tags`: as they are. A rule
  whose id contains "generic" is tagged `generic`, so that, as in gitleaks, a specific
  rule covering the same secret wins over it.
- `secretGroup`: as it is. Without it gitleaks takes the first capture group that
  matched; that is group 1 when group 1 encloses every other group (or is the only
  one). When the groups are alternatives (`a(x)|b(y)`), which `Rule` cannot say, the
  whole match is the secret, and `ignored` says so.
- `entropy`: gitleaks requires more than the figure, Tether at least its own minimum:
  the next float above the figure gives the same answer.
- `path` on a rule with a regex: the rule applies only to files whose path matches,
  written as an allow-path that matches every other path.
- `[[rules.allowlists]]` (and the older `[rules.allowlist]`): `paths`, `stopwords` and
  `regexes` map onto the rule's allow-lists (over the secret, the default `regexTarget`,
  or over the match or the line, as `regexTarget` says); `condition = "AND"` is kept
  exactly when its checks are all on the path or all on the secret (regexes and
  stopwords become one regex of lookaheads).
- Global `[allowlist]` / `[[allowlists]]`: `paths`, `regexes` (over the secret),
  `stopwords`, `commits`; `targetRules` moves the allow-list onto those rules.
- `[extend] useDefault = true` (with `disabledRules`) merges the bundled gitleaks rules
  as gitleaks does; `extend.path` and `extend.url` are refused: Tether would scan with
  fewer rules than the file means.

Tether cannot express, and so ignores, reporting more than gitleaks would and never
less, each listed in `GitleaksConfig.ignored`: path-only rules (a rule without a regex
reports a file by its name; Tether reports secrets in content), global allow-list
regexes over the match or the line (`regexTarget = "match"` / `"line"`), a rule
allow-list's `commits`, `condition = "AND"` across the path and the content, `[[rules.required]]`
(composite rules report without their companions), and `skipReport` rules (they are
only ever reported as part of a composite one, so they are left out).

Anything else is an error naming the rule and the field: unknown keys (a typo would
otherwise quietly disable a check), wrong types, a missing id or regex, a duplicate id,
a `secretGroup` beyond the regex's groups, and any regex that Python cannot compile.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.scan._model import Allowlist, Rule
from tether.scan.errors import ScanError

__all__ = [
    "GitleaksConfig",
    "InvalidRules",
    "bundled_rules",
    "bundled_rules_path",
    "load_gitleaks_config",
    "load_gitleaks_rules",
    "re2_to_python",
]


class InvalidRules(ScanError):
    """A rules file that cannot be used as it is. `problems` has one line per fault,
    each naming the rule (or allow-list) and the field."""

    status_code = 422
    code = "invalid_rules"

    def __init__(self, source: str, problems: Iterable[str]):
        self.source = source
        self.problems = tuple(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class GitleaksConfig:
    rules: tuple[Rule, ...]
    allowlist: Allowlist
    #: What the file says that Tether does not apply (see the module's doc), one line
    #: each, naming the rule: for a CLI to show as warnings.
    ignored: tuple[str, ...] = ()


def load_gitleaks_rules(text: str, *, source: str) -> tuple[tuple[Rule, ...], Allowlist]:
    """The rules and the global allow-list of a gitleaks config; `source` names the file
    in errors. Raises `InvalidRules`."""
    config = load_gitleaks_config(text, source=source)
    return config.rules, config.allowlist


def load_gitleaks_config(text: str, *, source: str) -> GitleaksConfig:
    """As `load_gitleaks_rules`, with what was ignored."""
    return _Loader(source).load(_parse(text, source))


def bundled_rules_path() -> str:
    """The vendored copy of gitleaks' default rules (MIT, attribution in the file)."""
    return str(Path(__file__).with_name("rules") / "gitleaks.toml")


@functools.cache
def bundled_rules() -> GitleaksConfig:
    path = bundled_rules_path()
    return load_gitleaks_config(Path(path).read_text(encoding="utf-8"), source=path)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRules(source, [f"not valid TOML: {exc}"]) from None
    try:
        return _lower_keys(raw, "")
    except _FieldError as exc:
        raise InvalidRules(source, [str(exc)]) from None


def _lower_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Gitleaks reads its config with viper, whose keys are case-insensitive."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        lowered = key.lower()
        if lowered in out:
            raise _FieldError(f"{where or 'top level'}: {key!r} is given twice")
        name = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            out[lowered] = _lower_keys(value, name)
        elif isinstance(value, list):
            out[lowered] = [
                _lower_keys(v, f"{name}[{i}]") if isinstance(v, dict) else v
                for i, v in enumerate(value)
            ]
        else:
            out[lowered] = value
    return out


class _FieldError(Exception):
    pass


# -- the config --

_TOP_KEYS = frozenset(
    {"title", "description", "minversion", "extend", "rules", "allowlist", "allowlists"}
)
_EXTEND_KEYS = frozenset({"path", "url", "usedefault", "disabledrules"})
_RULE_KEYS = frozenset(
    {
        "id",
        "description",
        "path",
        "regex",
        "secretgroup",
        "entropy",
        "keywords",
        "tags",
        "allowlist",
        "allowlists",
        "required",
        "skipreport",
    }
)
_ALLOW_KEYS = frozenset(
    {"description", "condition", "commits", "paths", "regextarget", "regexes", "stopwords"}
)
_GLOBAL_ALLOW_KEYS = _ALLOW_KEYS | {"targetrules"}
_REQUIRED_KEYS = frozenset({"id", "withinlines", "withincolumns"})


#: Global allow-list tables, each with how errors name it.
_Tables = list[tuple[str, dict[str, Any]]]


@dataclass(slots=True)
class _RuleParts:
    """What a rule's allow-lists add to it, gathered before the `Rule` is built."""

    allow_regexes: list[str] = field(default_factory=list)
    allow_paths: list[str] = field(default_factory=list)
    stopwords: list[str] = field(default_factory=list)
    allow_match: list[str] = field(default_factory=list)
    allow_line: list[str] = field(default_factory=list)


class _Loader:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.ignored: list[str] = []

    def load(self, raw: dict[str, Any]) -> GitleaksConfig:
        try:
            _check_keys(raw, _TOP_KEYS, "top level")
            rules = _tables(raw, "rules", "top level")
            global_lists = self._global_allowlists(raw)
            rules, global_lists = self._extended(raw, rules, global_lists)
            rules = self._targeted(rules, global_lists)
        except _FieldError as exc:
            raise InvalidRules(self.source, [str(exc)]) from None
        converted: list[Rule] = []
        seen: set[str] = set()
        for index, table in enumerate(rules):
            rule = self._rule(index, table, seen)
            if rule is not None:
                converted.append(rule)
        allowlist = Allowlist()
        for where, table in global_lists:
            if not table.get("targetrules"):
                allowlist = allowlist.merged(self._global_allowlist(where, table))
        if self.problems:
            raise InvalidRules(self.source, self.problems)
        return GitleaksConfig(tuple(converted), allowlist, tuple(self.ignored))

    def _global_allowlists(self, raw: dict[str, Any], origin: str = "") -> _Tables:
        old = _table(raw, "allowlist", "top level")
        new = _tables(raw, "allowlists", "top level")
        if old is not None and new:
            raise _FieldError("[allowlist] and [[allowlists]] cannot both be given")
        if old is not None:
            return [(f"{origin}[allowlist]", old)]
        return [(f"{origin}[[allowlists]] #{i + 1}", t) for i, t in enumerate(new)]

    def _extended(
        self,
        raw: dict[str, Any],
        rules: list[dict[str, Any]],
        global_lists: _Tables,
    ) -> tuple[list[dict[str, Any]], _Tables]:
        """Gitleaks' `[extend]`: the bundled rules under the file's own."""
        extend = _table(raw, "extend", "top level")
        if extend is None:
            return rules, global_lists
        _check_keys(extend, _EXTEND_KEYS, "[extend]")
        for key in ("path", "url"):
            if _str(extend, key, "[extend]"):
                raise _FieldError(
                    f"[extend]: {key}: extending another file is not supported; "
                    "merge its rules into this file"
                )
        if not _bool(extend, "usedefault", "[extend]"):
            return rules, global_lists
        disabled = set(_strs(extend, "disabledrules", "[extend]"))
        base = _parse(Path(bundled_rules_path()).read_text(encoding="utf-8"), "bundled")
        base_rules = {str(r.get("id")): r for r in _tables(base, "rules", "bundled")}
        for rule_id in sorted(disabled - base_rules.keys()):
            self.ignored.append(f"[extend]: disabledRules: {rule_id!r} is not a default rule")
        merged: list[dict[str, Any]] = []
        own: set[object] = set()
        for rule in rules:
            own_id = rule.get("id")
            own.add(own_id)
            if isinstance(own_id, str) and own_id in base_rules and own_id not in disabled:
                merged.append(_merge_rule(base_rules[own_id], rule))
            else:
                merged.append(rule)
        merged += [r for i, r in base_rules.items() if i not in own and i not in disabled]
        return merged, global_lists + self._global_allowlists(base, "bundled ")

    def _targeted(self, rules: list[dict[str, Any]], global_lists: _Tables) -> list[dict[str, Any]]:
        """Global allow-lists with `targetRules` belong to those rules (as in gitleaks)."""
        by_id = {r.get("id"): r for r in rules}
        for where, table in global_lists:
            for rule_id in _strs(table, "targetrules", where):
                if rule_id not in by_id:
                    raise _FieldError(f"{where}: targetRules: rule {rule_id!r} does not exist")
                target = by_id[rule_id]
                lists = _rule_allowlists(target, f"rule {rule_id!r}")
                target.pop("allowlist", None)
                own = {k: v for k, v in table.items() if k != "targetrules"}
                target["allowlists"] = [*lists, own]
        return rules

    def _rule(self, index: int, table: dict[str, Any], seen: set[str]) -> Rule | None:
        rule_id = table.get("id")
        where = f"rule {rule_id!r}" if isinstance(rule_id, str) and rule_id else f"rules[{index}]"
        try:
            rule = self._convert_rule(table, where)
        except _FieldError as exc:
            self.problems.append(str(exc))
            return None
        if rule is not None:
            if rule.id in seen:
                self.problems.append(f"{where}: id: defined twice")
                return None
            seen.add(rule.id)
        return rule

    def _convert_rule(self, table: dict[str, Any], where: str) -> Rule | None:
        _check_keys(table, _RULE_KEYS, where)
        rule_id = _str(table, "id", where)
        if not rule_id or not rule_id.strip():
            raise _FieldError(f"{where}: id: missing or empty")
        regex = _str(table, "regex", where)
        path = _str(table, "path", where)
        parts = _RuleParts()
        for index, allow in enumerate(_rule_allowlists(table, where)):
            self._rule_allowlist(allow, f"{where} [[rules.allowlists]] #{index + 1}", parts)
        required = _tables(table, "required", where)
        for item in required:
            _check_keys(item, _REQUIRED_KEYS, f"{where} [[rules.required]]")
        if _bool(table, "skipreport", where):
            self.ignored.append(f"{where}: skipReport: only part of composite rules; left out")
            return None
        if not regex:
            if not path:
                raise _FieldError(f"{where}: regex: missing (and no path)")
            self.ignored.append(f"{where}: a path-only rule (no regex); Tether scans content")
            return None
        if required:
            self.ignored.append(
                f"{where}: [[rules.required]]: composite rules are not supported; "
                "the rule reports without its companions"
            )
        translated = _translate(regex, where, "regex", for_bytes=True)
        if path:
            # Gitleaks skips the rule on other paths: an allow-path that matches them.
            path_regex = _translate(path, where, "path", for_bytes=False).python
            parts.allow_paths.insert(0, f"^(?!(?s:.*?)(?:{path_regex}))")
        return Rule(
            id=rule_id,
            description=_str(table, "description", where) or "",
            regex=translated.python,
            secret_group=self._secret_group(table, translated, where),
            keywords=tuple(k.lower() for k in _strs(table, "keywords", where)),
            entropy=_entropy(table, where),
            allow_regexes=tuple(parts.allow_regexes),
            allow_paths=tuple(parts.allow_paths),
            stopwords=tuple(parts.stopwords),
            allow_match_regexes=tuple(parts.allow_match),
            allow_line_regexes=tuple(parts.allow_line),
            tags=_tags(rule_id, _strs(table, "tags", where)),
        )

    def _secret_group(self, table: dict[str, Any], translated: _Translated, where: str) -> int:
        group = _int(table, "secretgroup", where)
        if group is not None and group != 0:
            if not 0 < group <= translated.groups:
                raise _FieldError(
                    f"{where}: secretGroup: {group} is not a group of the regex "
                    f"(it has {translated.groups})"
                )
            return group
        if translated.groups == 0:
            return 0
        if translated.group1_encloses_all:
            return 1
        self.ignored.append(
            f"{where}: secretGroup: the secret is the first of several alternative groups "
            "that matched, which Tether cannot say; the whole match is the secret"
        )
        return 0

    def _rule_allowlist(self, table: dict[str, Any], where: str, parts: _RuleParts) -> None:
        checks = _allow_checks(table, _ALLOW_KEYS, where)
        if checks.conjunctive:
            if not self._conjunction_supported(checks, where):
                return
            if checks.commits:
                self.ignored.append(f"{where}: commits: not supported on a rule; use [allowlist]")
            elif checks.paths:
                parts.allow_paths += checks.paths
            else:
                regexes, stopwords = checks.conjoined()
                parts.allow_regexes += regexes
                parts.stopwords += stopwords
            return
        if checks.commits:
            self.ignored.append(f"{where}: commits: not supported on a rule; use [allowlist]")
        # A rule's regexes over the match or the line: the engine applies them there.
        if checks.target == "match":
            parts.allow_match += checks.other_target
        elif checks.target == "line":
            parts.allow_line += checks.other_target
        parts.allow_paths += checks.paths
        parts.allow_regexes += checks.secret_regexes
        parts.stopwords += checks.stopwords

    def _global_allowlist(self, where: str, table: dict[str, Any]) -> Allowlist:
        try:
            checks = _allow_checks(table, _GLOBAL_ALLOW_KEYS, where)
        except _FieldError as exc:
            self.problems.append(str(exc))
            return Allowlist()
        commits = tuple(c.strip().lower() for c in checks.commits)
        if checks.conjunctive:
            if not self._conjunction_supported(checks, where):
                return Allowlist()
            regexes, stopwords = checks.conjoined()
            return Allowlist(checks.paths, regexes, stopwords, commits)
        self._note_other_target(checks, where)
        return Allowlist(checks.paths, checks.secret_regexes, checks.stopwords, commits)

    def _conjunction_supported(self, checks: _AllowChecks, where: str) -> bool:
        """`condition = "AND"` holds as Tether checks one thing at a time only when all
        the checks are of one kind (within a kind, any one of them is enough)."""
        kinds = checks.kinds()
        if len(kinds) > 1 or checks.other_target:
            self.ignored.append(
                f"{where}: condition = AND over {' and '.join(kinds)}"
                + (f" (regexTarget = {checks.target!r})" if checks.other_target else "")
                + " is not supported; this allow-list is not applied"
            )
            return False
        return True

    def _note_other_target(self, checks: _AllowChecks, where: str) -> None:
        if checks.other_target:
            self.ignored.append(
                f"{where}: regexTarget = {checks.target!r}: Tether checks allow-regexes "
                "against the secret only; these regexes are not applied"
            )


def _merge_rule(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Gitleaks' merge of a rule that a file gives again over the default one."""
    merged = dict(base)
    for key in ("description", "entropy", "secretgroup", "regex", "path"):
        if own.get(key):
            merged[key] = own[key]
    for key in ("tags", "keywords"):
        merged[key] = [*base.get(key, []), *own.get(key, [])]
    lists = [*_rule_allowlists(base, "bundled"), *_rule_allowlists(own, f"rule {own['id']!r}")]
    merged.pop("allowlist", None)
    merged["allowlists"] = lists
    for key in own.keys() - merged.keys():
        merged[key] = own[key]
    return merged


def _rule_allowlists(table: dict[str, Any], where: str) -> list[dict[str, Any]]:
    old = _table(table, "allowlist", where)
    new = _tables(table, "allowlists", where)
    if old is not None and new:
        raise _FieldError(
            f"{where}: [rules.allowlist] and [[rules.allowlists]] cannot both be given"
        )
    return [old] if old is not None else new


@dataclass(frozen=True, slots=True)
class _AllowChecks:
    conjunctive: bool
    target: str
    commits: tuple[str, ...]
    paths: tuple[str, ...]
    secret_regexes: tuple[str, ...]
    #: Regexes over the match or the line, which Tether does not apply.
    other_target: tuple[str, ...]
    stopwords: tuple[str, ...]

    def kinds(self) -> list[str]:
        content = self.secret_regexes or self.stopwords or self.other_target
        named = (("commits", self.commits), ("paths", self.paths), ("content", content))
        return [name for name, present in named if present]

    def conjoined(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The allow-regexes and stopwords that say "AND" of the checks on the secret:
        both kinds at once become one regex of lookaheads."""
        if not (self.secret_regexes and self.stopwords):
            return self.secret_regexes, self.stopwords
        regexes = "|".join(f"(?:{r})" for r in self.secret_regexes)
        words = "|".join(re.escape(s) for s in self.stopwords)
        return (f"\\A(?=(?s:.*?)(?:{regexes}))(?=(?s:.*?)(?i:{words}))",), ()


def _allow_checks(table: dict[str, Any], keys: frozenset[str], where: str) -> _AllowChecks:
    _check_keys(table, keys, where)
    condition = (_str(table, "condition", where) or "OR").upper()
    if condition not in ("AND", "&&", "OR", "||"):
        raise _FieldError(f"{where}: condition: {condition!r} is not 'AND' or 'OR'")
    target = _str(table, "regextarget", where) or "secret"
    if target not in ("secret", "match", "line"):
        raise _FieldError(f"{where}: regexTarget: {target!r} is not 'secret', 'match' or 'line'")
    commits = _strs(table, "commits", where)
    paths = tuple(
        _translate(p, where, f"paths[{i}]", for_bytes=False).python
        for i, p in enumerate(_strs(table, "paths", where))
    )
    regexes = tuple(
        _translate(r, where, f"regexes[{i}]", for_bytes=False).python
        for i, r in enumerate(_strs(table, "regexes", where))
    )
    stopwords = tuple(s.lower() for s in _strs(table, "stopwords", where))
    if not (commits or paths or regexes or stopwords):
        raise _FieldError(f"{where}: must have at least one of commits, paths, regexes, stopwords")
    on_secret = target == "secret"
    return _AllowChecks(
        conjunctive=condition in ("AND", "&&"),
        target=target,
        commits=commits,
        paths=paths,
        secret_regexes=regexes if on_secret else (),
        other_target=() if on_secret else regexes,
        stopwords=stopwords,
    )


def _tags(rule_id: str, tags: tuple[str, ...]) -> tuple[str, ...]:
    if "generic" in rule_id.lower() and "generic" not in tags:
        return (*tags, "generic")
    return tags


def _entropy(table: dict[str, Any], where: str) -> float | None:
    value = _number(table, "entropy", where)
    if value is None or value == 0:
        return None
    if value < 0:
        raise _FieldError(f"{where}: entropy: {value} is negative")
    # Gitleaks drops a secret whose entropy is <= the figure, Tether one below its minimum.
    return math.nextafter(value, math.inf)


# -- typed reads; every error names where and which field --


def _check_keys(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(table.keys() - known)
    if unknown:
        raise _FieldError(f"{where}: {unknown[0]}: unknown field")


def _typed(
    table: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], name: str
) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _FieldError(f"{where}: {key}: must be {name}, not {type(value).__name__}")
    return value


def _str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value: str | None = _typed(table, key, where, str, "a string")
    return value


def _bool(table: Mapping[str, Any], key: str, where: str) -> bool:
    return bool(_typed(table, key, where, bool, "true or false"))


def _int(table: Mapping[str, Any], key: str, where: str) -> int | None:
    value: int | None = _typed(table, key, where, int, "an integer")
    return value


def _number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value: float | None = _typed(table, key, where, (int, float), "a number")
    return None if value is None else float(value)


def _strs(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value: list[Any] | None = _typed(table, key, where, list, "a list of strings")
    if value is None:
        return ()
    if not all(isinstance(v, str) for v in value):
        raise _FieldError(f"{where}: {key}: must be a list of strings")
    return tuple(value)


def _table(table: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = _typed(table, key, where, dict, "a table")
    return value


def _tables(table: Mapping[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value: list[Any] | None = _typed(table, key, where, list, "an array of tables")
    if value is None:
        return []
    if not all(isinstance(v, dict) for v in value):
        raise _FieldError(f"{where}: {key}: must be an array of tables")
    return value


# -- Go (RE2) regexes in Python's syntax --


@dataclass(frozen=True, slots=True)
class _Translated:
    python: str
    groups: int
    #: Every other capture group lies inside group 1 (gitleaks' "first group that
    #: matched" is then group 1).
    group1_encloses_all: bool


def _translate(pattern: str, where: str, name: str, *, for_bytes: bool) -> _Translated:
    try:
        translated = _Re2(pattern, for_bytes=for_bytes).translate()
        _compiles(translated.python, for_bytes=for_bytes)
    except _RegexError as exc:
        raise _FieldError(f"{where}: {name}: {exc}") from None
    return translated


def re2_to_python(pattern: str, *, for_bytes: bool = True) -> str:
    """`pattern` (Go/RE2 syntax) in Python's `re` syntax: for bytes (as the engine
    matches rule regexes) or for text (allow-lists). Raises ValueError."""
    translated = _Re2(pattern, for_bytes=for_bytes).translate()
    _compiles(translated.python, for_bytes=for_bytes)
    return translated.python


class _RegexError(ValueError):
    pass


def _compiles(python: str, *, for_bytes: bool) -> None:
    with warnings.catch_warnings():
        # A FutureWarning ("possible nested set") means Python reads it otherwise later.
        warnings.simplefilter("error")
        try:
            re.compile(python.encode() if for_bytes else python)
        except (re.error, FutureWarning) as exc:
            raise _RegexError(f"does not compile in Python: {exc}") from None


_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
#: Negated POSIX classes Python can write inside a larger class.
_NEGATED_POSIX = {"digit": "\\D", "space": "\\S", "word": "\\W"}
_PERL_CLASSES = frozenset("dDsSwW")
_CLASS_SPECIAL = frozenset("\\]^-[&~|")
_CONTROL_ESCAPES = {0x07: "\\a", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f", 0x0D: "\\r"}
_LETTER_ESCAPES = {"a": 0x07, "f": 0x0C, "t": 0x09, "n": 0x0A, "r": 0x0D, "v": 0x0B}
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])")
_NAMED = re.compile(r"\(\?P?<([^>]*)>")
_MAX_REPEAT = 1000


class _Re2:
    """A recursive-descent reading of RE2 syntax that writes Python's as it goes.

    Flags (`i`, `m`, `s`, `U`) are tracked as RE2 scopes them: a `(?i)` holds to the end
    of the enclosing group, across its later alternatives. Python wants flags at the
    start or scoped, so the rest of each alternative is written inside `(?i:...)`."""

    def __init__(self, pattern: str, *, for_bytes: bool):
        self.src = pattern
        self.pos = 0
        self.for_bytes = for_bytes
        self.groups = 0
        self.names: set[str] = set()
        self.open: list[int] = []
        self.enclosed_by_1 = True

    def translate(self) -> _Translated:
        python = self._alternation(frozenset())
        if self.pos < len(self.src):
            raise _RegexError(f"unexpected ) at offset {self.pos}")
        return _Translated(python, self.groups, self.enclosed_by_1)

    def _peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.src[at] if at < len(self.src) else ""

    def _alternation(self, flags: frozenset[str]) -> str:
        entry = flags
        alternatives: list[str] = []
        while True:
            text, flags = self._sequence(entry, flags)
            alternatives.append(text)
            if self._peek() != "|":
                return "|".join(alternatives)
            self.pos += 1

    def _sequence(self, entry: frozenset[str], flags: frozenset[str]) -> tuple[str, frozenset[str]]:
        out: list[str] = []
        opened = 0
        if _delta(entry, flags):
            out.append(f"(?{_delta(entry, flags)}:")
            opened = 1
        last: str | None = None  # "atom", "repeat", or None (nothing to repeat)
        while self.pos < len(self.src) and self._peek() not in "|)":
            char = self._peek()
            if char in "*+?" or (char == "{" and _REPEAT.match(self.src, self.pos)):
                if last == "repeat":
                    raise _RegexError(f"nested repetition at offset {self.pos}")
                if last is None:
                    raise _RegexError(f"nothing to repeat at offset {self.pos}")
                out.append(self._repeat(flags))
                last = "repeat"
                continue
            if char == "(" and (changed := self._directive(flags)) is not None:
                if _delta(flags, changed):
                    out.append(f"(?{_delta(flags, changed)}:")
                    opened += 1
                flags, last = changed, None
                continue
            text, repeatable = self._atom(flags)
            out.append(text)
            last = "atom" if repeatable else None
        out.append(")" * opened)
        return "".join(out), flags

    def _repeat(self, flags: frozenset[str]) -> str:
        char = self._peek()
        if char == "{":
            match = _REPEAT.match(self.src, self.pos)
            assert match is not None
            low, high = match.group(1), match.group(3)
            counts = [int(low)] + ([int(high)] if high else [])
            if any(n > _MAX_REPEAT for n in counts) or (high and int(high) < int(low)):
                raise _RegexError(f"invalid repeat count {match.group(0)}")
            text = match.group(0)
            self.pos = match.end()
        else:
            text = char
            self.pos += 1
        lazy = self._peek() == "?"
        if lazy:
            self.pos += 1
        if "U" in flags:
            lazy = not lazy
        return text + ("?" if lazy else "")

    def _directive(self, flags: frozenset[str]) -> frozenset[str] | None:
        """`(?flags)`: the flags from here on, or None if this is no such thing."""
        match = _FLAGS.match(self.src, self.pos)
        if match is None or match.group(3) != ")":
            return None
        self.pos = match.end()
        return _apply_flags(flags, match)

    def _atom(self, flags: frozenset[str]) -> tuple[str, bool]:
        """One atom's Python text, and whether a repetition may follow it."""
        char = self._peek()
        if char == "(":
            return self._group(flags), True
        if char == "[":
            return self._class(), True
        if char == "\\":
            return self._escape()
        self.pos += 1
        if char in "^$":
            return char, False
        if char == ".":
            return ".", True
        return self._literal(ord(char)), True

    def _group(self, flags: frozenset[str]) -> str:
        start = self.pos
        if self.src.startswith(("(?=", "(?!", "(?<=", "(?<!"), start):
            raise _RegexError(f"lookaround at offset {start}: RE2 has none")
        named = _NAMED.match(self.src, start)
        scoped = _FLAGS.match(self.src, start)
        if named is not None:
            self.pos = named.end()
            return self._capture(flags, self._name(named.group(1)))
        if scoped is not None and scoped.group(3) == ":":
            self.pos = scoped.end()
            inner_flags = _apply_flags(flags, scoped)
            inner = self._alternation(inner_flags)
            self._close(start)
            return f"(?{_delta(flags, inner_flags)}:{inner})"
        if self.src.startswith("(?", start):
            raise _RegexError(f"unknown group syntax at offset {start}")
        self.pos += 1
        return self._capture(flags, None)

    def _name(self, name: str) -> str | None:
        if not name or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            raise _RegexError(f"invalid capture group name {name!r}")
        if name in self.names:
            raise _RegexError(f"duplicate capture group name {name!r}")
        self.names.add(name)
        # Python's names must be identifiers; the number is what a rule refers to anyway.
        return name if name.isidentifier() else None

    def _capture(self, flags: frozenset[str], name: str | None) -> str:
        start = self.pos
        self.groups += 1
        number = self.groups
        if number > 1 and 1 not in self.open:
            self.enclosed_by_1 = False
        self.open.append(number)
        inner = self._alternation(flags)
        self.open.pop()
        self._close(start)
        return f"(?P<{name}>{inner})" if name else f"({inner})"

    def _close(self, start: int) -> None:
        if self._peek() != ")":
            raise _RegexError(f"missing ) for the group at offset {start}")
        self.pos += 1

    def _escape(self) -> tuple[str, bool]:
        char = self._peek(1)
        if not char:
            raise _RegexError("trailing backslash")
        if char in "AbB":
            self.pos += 2
            return "\\" + char, False
        if char == "z":
            self.pos += 2
            return "\\Z", False
        if char in _PERL_CLASSES:
            self.pos += 2
            return "\\" + char, True
        if char == "Q":
            return self._quoted(), True
        return self._literal(self._code_point()), True

    def _quoted(self) -> str:
        """`\\Q...\\E`: literal text. A repetition after it applies to its last char, as
        in RE2, so each char is its own atom."""
        end = self.src.find("\\E", self.pos + 2)
        text = self.src[self.pos + 2 : end if end >= 0 else len(self.src)]
        self.pos = end + 2 if end >= 0 else len(self.src)
        if not text:
            raise _RegexError("empty \\Q...\\E")
        return "".join(self._literal(ord(c)) for c in text)

    def _code_point(self) -> int:
        """The character an escape (at `pos`) stands for; moves past it."""
        char = self._peek(1)
        if not char:
            raise _RegexError("trailing backslash")
        if char in "pP":
            raise _RegexError(f"Unicode class \\{char} at offset {self.pos} is not supported")
        if char in _LETTER_ESCAPES:
            self.pos += 2
            return _LETTER_ESCAPES[char]
        if char == "x":
            return self._hex()
        if char in "01234567":
            return self._octal()
        if char.isascii() and not char.isalnum():
            self.pos += 2
            return ord(char)
        raise _RegexError(f"invalid escape \\{char} at offset {self.pos}")

    def _hex(self) -> int:
        at = self.pos
        braced = self._peek(2) == "{"
        end = self.src.find("}", at + 3) if braced else at + 4
        digits = self.src[at + 3 : end] if braced else self.src[at + 2 : end]
        valid = bool(digits) and all(c in "0123456789abcdefABCDEF" for c in digits)
        if end < 0 or not valid or (not braced and len(digits) != 2):
            raise _RegexError(f"invalid hex escape at offset {at}")
        self.pos = end + 1 if braced else end
        value = int(digits, 16)
        if value > 0x10FFFF:
            raise _RegexError(f"invalid hex escape at offset {at}: beyond U+10FFFF")
        return value

    def _octal(self) -> int:
        at = self.pos
        first = self._peek(1)
        if first != "0" and self._peek(2) not in tuple("01234567"):
            raise _RegexError(f"backreference \\{first} at offset {at} (RE2 has none)")
        value, self.pos = int(first), at + 2
        for _ in range(2):
            if self._peek() and self._peek() in "01234567":
                value = value * 8 + int(self._peek())
                self.pos += 1
        return value

    def _literal(self, code: int) -> str:
        char = chr(code)
        if code in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[code]
        if code < 0x20 or code == 0x7F:
            return f"\\x{code:02x}"
        if code >= 0x80:
            # Matched as bytes, a non-ASCII character is its UTF-8 sequence: grouped, so
            # that a repetition after it repeats all of it.
            return f"(?:{char})" if self.for_bytes else char
        return re.escape(char)

    def _class_literal(self, code: int) -> str:
        if code >= 0x80:
            if self.for_bytes:
                raise _RegexError("a non-ASCII character in a class cannot be matched as bytes")
            return chr(code)
        if code in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[code]
        if code < 0x20 or code == 0x7F:
            return f"\\x{code:02x}"
        char = chr(code)
        # What is special in a class, and what Python warns of when doubled ("&&").
        return "\\" + char if char in _CLASS_SPECIAL else char

    def _class(self) -> str:
        start = self.pos
        self.pos += 1
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        items: list[str] = []
        negated_posix: list[str] = []
        first = True
        while True:
            char = self._peek()
            if not char:
                raise _RegexError(f"missing ] for the class at offset {start}")
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            posix = re.compile(r"\[:(\^?)([a-z]+):\]").match(self.src, self.pos)
            if posix is not None:
                self._posix(posix, items, negated_posix)
                continue
            items.append(self._class_item())
        return _class_text(negated, items, negated_posix)

    def _posix(self, match: re.Match[str], items: list[str], negated: list[str]) -> None:
        name = match.group(2)
        if name not in _POSIX_CLASSES:
            raise _RegexError(f"unknown POSIX class [:{name}:]")
        self.pos = match.end()
        if not match.group(1):
            items.append(_POSIX_CLASSES[name])
        elif name in _NEGATED_POSIX:
            items.append(_NEGATED_POSIX[name])
        else:
            negated.append(name)

    def _class_item(self) -> str:
        low = self._class_char()
        if isinstance(low, str):
            return low
        if self._peek() == "-" and self._peek(1) not in ("]", ""):
            self.pos += 1
            high = self._class_char()
            if isinstance(high, str) or high < low:
                raise _RegexError(f"invalid class range at offset {self.pos}")
            return f"{self._class_literal(low)}-{self._class_literal(high)}"
        return self._class_literal(low)

    def _class_char(self) -> int | str:
        """A class member's code point, or the Python text of a Perl class (`\\d`)."""
        char = self._peek()
        if char != "\\":
            self.pos += 1
            return ord(char)
        if self._peek(1) in _PERL_CLASSES:
            self.pos += 2
            return "\\" + self.src[self.pos - 1]
        return self._code_point()


def _class_text(negated: bool, items: list[str], negated_posix: list[str]) -> str:
    if not negated_posix:
        return f"[{'^' if negated else ''}{''.join(items)}]"
    if items or len(negated_posix) > 1:
        raise _RegexError(f"[:^{negated_posix[0]}:] with other members is not supported")
    # [[:^alpha:]] is [^A-Za-z]; negated again, [A-Za-z].
    return f"[{'' if negated else '^'}{_POSIX_CLASSES[negated_posix[0]]}]"


def _apply_flags(flags: frozenset[str], match: re.Match[str]) -> frozenset[str]:
    on, off = match.group(1), match.group(2)
    bare = not on and off is None and match.group(3) == ":"  # (?:...)
    if (
        (not on and not off and not bare)
        or off == ""
        or any(c not in "imsU" for c in on + (off or ""))
    ):
        raise _RegexError(f"invalid flags {match.group(0)}")
    return (flags | set(on)) - set(off or "")


def _delta(before: frozenset[str], after: frozenset[str]) -> str:
    """Python's flag text taking `before` to `after` (`U` is handled by the parser)."""
    on = "".join(sorted((after - before) - {"U"}))
    off = "".join(sorted((before - after) - {"U"}))
    return on + (f"-{off}" if off else "")
