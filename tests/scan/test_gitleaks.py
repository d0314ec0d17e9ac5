"""Gitleaks-format rules: the bundled default set, a team's own files, and what is refused."""

from __future__ import annotations

import re
import secrets
import string
import tomllib
import warnings
from pathlib import Path

import hyperscan
import pytest

from tether.errors import TetherError
from tether.scan import Blob, Scanner, shannon_entropy
from tether.scan._gitleaks import (
    InvalidRules,
    bundled_rules,
    bundled_rules_path,
    load_gitleaks_config,
    load_gitleaks_rules,
    re2_to_python,
)
from tether.scan.errors import ScanError

_ALNUM = string.ascii_letters + string.digits
_LOWER_ALNUM = string.ascii_lowercase + string.digits


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _found(scanner: Scanner, text: str, name: str = "app.py") -> list[tuple[str, str]]:
    return [(d.rule, d.secret) for d in scanner.scan_blob(Blob(name, text.encode()))]


def _compiles(regex: str, *, as_bytes: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a FutureWarning means Python will read it otherwise
        re.compile(regex.encode() if as_bytes else regex)


def _scanner(toml: str) -> Scanner:
    rules, allow = load_gitleaks_rules(toml, source="t.toml")
    return Scanner(rules, allow)


# -- the bundled default rules --


@pytest.fixture(scope="module")
def bundled_toml() -> dict[str, object]:
    return tomllib.loads(Path(bundled_rules_path()).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bundled_scanner() -> Scanner:
    config = bundled_rules()
    return Scanner(config.rules, config.allowlist)


def test_the_vendored_file_carries_gitleaks_license_and_source() -> None:
    head = Path(bundled_rules_path()).read_text(encoding="utf-8")[:3000]
    assert "MIT License" in head
    assert "Copyright (c) 2019 Zachary Rice" in head
    assert "b58d3f102cf3a2c84cb7f923d05c25c9b1aed84b" in head
    assert "config/gitleaks.toml" in head


def test_every_bundled_content_rule_loads(bundled_toml: dict[str, object]) -> None:
    raw = bundled_toml["rules"]
    assert isinstance(raw, list)
    assert len(raw) > 200
    with_regex = {r["id"] for r in raw if "regex" in r}
    path_only = {r["id"] for r in raw if "regex" not in r}
    config = bundled_rules()
    assert {r.id for r in config.rules} == with_regex
    # A path-only rule reports a file by its name; Tether reports secrets in content.
    assert path_only == {"pkcs12-file"}
    assert any("pkcs12-file" in note and "path-only" in note for note in config.ignored)


def test_every_bundled_regex_compiles_in_python() -> None:
    config = bundled_rules()
    for rule in config.rules:
        _compiles(rule.regex, as_bytes=True)  # as the engine matches
        _compiles(rule.regex, as_bytes=False)
        for regex in rule.allow_regexes + rule.allow_paths:
            _compiles(regex, as_bytes=False)
        assert rule.secret_group <= re.compile(rule.regex).groups
    allow = config.allowlist
    assert allow.paths and allow.regexes and allow.stopwords
    for regex in allow.paths + allow.regexes:
        _compiles(regex, as_bytes=False)


def test_every_bundled_regex_compiles_in_hyperscan() -> None:
    rules = bundled_rules().rules
    db = hyperscan.Database()
    db.compile(
        expressions=[r.regex.encode() for r in rules],
        ids=list(range(len(rules))),
        elements=len(rules),
        flags=[0] * len(rules),
    )


def test_the_engine_takes_the_bundled_rules_all_accelerated(bundled_scanner: Scanner) -> None:
    assert bundled_scanner.unaccelerated == ()


def test_bundled_rules_find_planted_fakes(bundled_scanner: Scanner) -> None:
    pat = "ghp_" + _random(_ALNUM, 36)
    aws = "AKIA" + _random("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    adafruit = _random(_LOWER_ALNUM, 32)
    text = f'token = "{pat}"\nid = {aws}\nadafruit_key = "{adafruit}"\nnothing here\n'
    found = _found(bundled_scanner, text)
    assert ("github-pat", pat) in found
    assert ("aws-access-token", aws) in found
    assert ("adafruit-api-key", adafruit) in found


def test_bundled_global_allowlist_applies(bundled_scanner: Scanner) -> None:
    pat = "ghp_" + _random(_ALNUM, 36)
    assert _found(bundled_scanner, f"t = {pat}\n", "web/logo.svg") == []
    assert _found(bundled_scanner, f"t = {pat}\n", "node_modules/x/index.js") == []
    assert _found(bundled_scanner, f"t = {pat}\n", "src/index.js") != []


def test_bundled_rule_restricted_to_a_path(bundled_scanner: Scanner) -> None:
    """freemius-secret-key has `path = '(?i)\\.php$'`: other files are not its business."""
    line = f"'secret_key' => 'sk_{_random(_ALNUM, 29)}'\n"
    assert "freemius-secret-key" in {r for r, _ in _found(bundled_scanner, line, "config.PHP")}
    assert "freemius-secret-key" not in {r for r, _ in _found(bundled_scanner, line, "x.py")}


def test_a_mid_pattern_flag_keeps_its_scope(bundled_scanner: Scanner) -> None:
    """adobe-client-secret is `\\b(p8e-(?i)[a-z0-9]{32})...`: Python refuses such a flag,
    the translation scopes it to the rest of the group."""
    secret = "p8e-" + _random(string.ascii_uppercase + string.digits, 32)
    assert ("adobe-client-secret", secret) in _found(bundled_scanner, f"x = {secret}\n")
    assert "adobe-client-secret" not in {
        r for r, _ in _found(bundled_scanner, f"x = P8E-{secret[4:]}\n")
    }


# -- RE2 syntax into Python's --


@pytest.mark.parametrize(
    ("go", "matches", "misses"),
    [
        # A flag set mid-pattern holds to the end of its group, across later alternatives.
        (r"\b(p8e-(?i)[a-z]{3})\b", ["p8e-ABC", "p8e-abc"], ["P8E-abc"]),
        (r"^(?:a(?i)b|c)$", ["aB", "C", "c"], ["AB"]),
        (r"^(a(?i)b)c$", ["aBc"], ["aBC"]),
        (r"^(?i)abc$", ["ABC"], ["ABD"]),
        (r"^(?i:a(?-i:b))$", ["Ab"], ["AB"]),
        (r"^(?s:a.b)$", ["a\nb"], []),
        (r"^a.b$", ["a-b"], ["a\nb"]),
        (r"(?m)^b$", ["a\nb\nc"], []),
        # POSIX classes inside brackets.
        (r"^[[:alnum:]_]+$", ["aZ9_"], ["a-b"]),
        (r"^[^[:space:]]+$", ["ab"], ["a b"]),
        (r"^[[:^alpha:]]+$", ["12"], ["1a"]),
        (r"^[[:xdigit:][:punct:]]+$", ["fF-!"], ["g"]),
        # \z is the very end (Python's $ also matches before a final newline).
        (r"a\z", ["xa"], ["a\n"]),
        # Escapes Python spells otherwise.
        (r"^\x{41}\101\x42$", ["AAB"], []),
        (r"^\Qa.b*\E$", ["a.b*"], ["axb"]),
        (r"^a{,3}$", ["a{,3}"], ["aaa"]),
        (r"^[]a]+$", ["]a"], ["b"]),
        (r"^[a-]+$", ["a-"], ["b"]),
        (r"^[&&~~||]+$", ["&~|"], ["a"]),
        (r"^(?P<name>a)(?<other>b)$", ["ab"], []),
    ],
)
def test_re2_translation_means_what_go_means(
    go: str, matches: list[str], misses: list[str]
) -> None:
    python = re2_to_python(go, for_bytes=False)
    for text in matches:
        assert re.search(python, text), (python, text)
        assert re.search(re2_to_python(go).encode(), text.encode()), (python, text)
    for text in misses:
        assert not re.search(python, text), (python, text)


def test_ungreedy_flag_swaps_greediness() -> None:
    def first(go: str) -> str:
        match = re.search(re2_to_python(go, for_bytes=False), "aaa")
        return match.group(0) if match else ""

    assert first("(?U)a+") == "a"
    assert first("(?U)a+?") == "aaa"
    assert first("a+") == "aaa"
    assert first("(?U:a+)a*") == "aaa"


def test_a_non_ascii_literal_repeats_whole_as_bytes() -> None:
    assert re.fullmatch(re2_to_python("é+").encode(), "ééé".encode())
    assert re.fullmatch(re2_to_python("é+", for_bytes=False), "ééé")


def test_capture_groups_keep_their_numbers() -> None:
    python = re2_to_python(r"(?i)(a)(?:b)(?P<c>c)((?i)d)")
    assert re.compile(python).groups == 3


@pytest.mark.parametrize(
    ("go", "problem"),
    [
        (r"\pL+", "Unicode class"),
        (r"\p{Greek}", "Unicode class"),
        (r"a(?=b)", "lookaround"),
        (r"(?<!a)b", "lookaround"),
        (r"(a)\1", "backreference"),
        (r"a**", "nested repetition"),
        (r"*a", "nothing to repeat"),
        (r"(?x)a", "invalid flags"),
        (r"[a", "missing ]"),
        (r"(a", "missing )"),
        (r"a)", "unexpected )"),
        (r"a{1001}", "repeat count"),
        (r"a{3,2}", "repeat count"),
        (r"[[:foo:]]", "POSIX class"),
        (r"[z-a]", "class range"),
        (r"\C", "invalid escape"),
        (r"a\Z", "invalid escape"),
        ("a\\", "trailing backslash"),
        (r"[é]", "non-ASCII"),
    ],
)
def test_re2_syntax_python_cannot_take_is_refused(go: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        re2_to_python(go)


# -- a team's own file: what maps onto Tether's rules --

_ONE_RULE = """
[[rules]]
id = "acme-key"
description = "ACME API key"
regex = '''acme_[a-z0-9]{10}'''
"""


def test_a_rule_maps_field_by_field() -> None:
    rules, allow = load_gitleaks_rules(
        """
        title = "team rules"
        [[rules]]
        id = "acme-key"
        description = "ACME API key"
        regex = '''(?i)acme[_-]key\\s*=\\s*"([a-z0-9]{12})"'''
        keywords = ["ACME_KEY", "acme-key"]
        tags = ["acme", "key"]
        entropy = 3
        """,
        source="team.toml",
    )
    (rule,) = rules
    assert rule.id == "acme-key"
    assert rule.description == "ACME API key"
    assert rule.keywords == ("acme_key", "acme-key")
    assert rule.tags == ("acme", "key")
    assert rule.secret_group == 1
    assert rule.entropy is not None and rule.entropy > 3
    assert allow.paths == allow.regexes == allow.stopwords == allow.commits == ()


def test_entropy_must_exceed_the_figure_as_in_gitleaks() -> None:
    scanner = _scanner("[[rules]]\nid = 'acme-key'\nregex = 'acme_([a-z]{8})'\nentropy = 2\n")
    exact = "abcdabcd"  # four symbols, evenly: exactly 2 bits per char
    assert shannon_entropy(exact) == 2
    assert _found(scanner, f"acme_{exact}\n") == []
    assert _found(scanner, "acme_abcdefgh\n") == [("acme-key", "abcdefgh")]


def test_secret_group_default_is_gitleaks_first_group() -> None:
    def group(regex: str, extra: str = "") -> int:
        toml = f"[[rules]]\nid = 'r'\nregex = '''{regex}'''\n{extra}"
        return load_gitleaks_rules(toml, source="t.toml")[0][0].secret_group

    assert group(r"key_[a-z]{8}") == 0
    assert group(r"key=([a-z]{8})") == 1
    assert group(r"key=((live|test)_[a-z]{8})") == 1  # group 1 holds the others
    assert group(r"key=(live|test)_([a-z]{8})", "secretGroup = 2") == 2


def test_alternative_groups_take_the_whole_match_and_say_so() -> None:
    config = load_gitleaks_config(
        "[[rules]]\nid = 'r'\nregex = '''a=([a-z]{8})|b=([0-9]{8})'''\n", source="t.toml"
    )
    assert config.rules[0].secret_group == 0
    assert any("rule 'r'" in n and "secretGroup" in n for n in config.ignored)


def test_path_restricts_a_rule_to_matching_files() -> None:
    scanner = _scanner(_ONE_RULE + "path = '''(?i)\\.env$'''\n")
    secret = "acme_" + _random(_LOWER_ALNUM, 10)
    assert _found(scanner, secret, "prod.ENV") == [("acme-key", secret)]
    assert _found(scanner, secret, "deploy/.env") == [("acme-key", secret)]
    assert _found(scanner, secret, "app.py") == []
    assert _found(scanner, secret, "app.env.bak") == []


def test_rule_allowlists_paths_regexes_stopwords() -> None:
    scanner = _scanner(
        _ONE_RULE
        + """
        [[rules.allowlists]]
        paths = ['''^fixtures/''']
        [[rules.allowlists]]
        regexes = ['''^acme_0''']
        stopwords = ["EXAMPLE"]
        """
    )
    secret = "acme_" + _random("abcdef", 10)
    assert _found(scanner, secret, "src/a.py") == [("acme-key", secret)]
    assert _found(scanner, secret, "fixtures/a.py") == []
    assert _found(scanner, "acme_0" + secret[6:], "src/a.py") == []
    assert _found(scanner, "acme_example12", "src/a.py") == []


def test_the_older_single_rule_allowlist_is_read() -> None:
    scanner = _scanner(_ONE_RULE + "[rules.allowlist]\nstopwords = ['test']\n")
    assert _found(scanner, "acme_test123456") == []


def test_and_condition_on_the_secret_alone_holds_exactly() -> None:
    scanner = _scanner(
        _ONE_RULE
        + """
        [[rules.allowlists]]
        condition = "AND"
        regexes = ['''9$''']
        stopwords = ["dead"]
        """
    )
    assert _found(scanner, "acme_deadbeef09") == []
    assert _found(scanner, "acme_deadbeef00") == [("acme-key", "acme_deadbeef00")]
    assert _found(scanner, "acme_0123456789") == [("acme-key", "acme_0123456789")]


def test_and_condition_of_one_kind_is_that_kind() -> None:
    scanner = _scanner(
        _ONE_RULE
        + """
        [[rules.allowlists]]
        condition = "AND"
        stopwords = ["DEAD", "cafe"]
        """
    )
    assert _found(scanner, "acme_deadbeef00") == []
    assert _found(scanner, "acme_cafe000000") == []
    assert _found(scanner, "acme_0123456789") == [("acme-key", "acme_0123456789")]


def test_what_tether_cannot_express_is_not_applied_and_listed() -> None:
    config = load_gitleaks_config(
        _ONE_RULE
        + """
        [[rules.allowlists]]
        regexTarget = "line"
        regexes = ['''import''']
        [[rules.allowlists]]
        condition = "AND"
        paths = ['''\\.bb$''']
        regexes = ['''acme''']
        [[rules.allowlists]]
        commits = ["abc123"]
        [[rules]]
        id = "p12"
        path = '''\\.p12$'''
        """,
        source="t.toml",
    )
    (rule,) = config.rules
    assert rule.allow_regexes == rule.allow_paths == ()
    notes = "\n".join(config.ignored)
    assert "condition = AND over paths and content" in notes
    assert "commits" in notes
    assert "rule 'p12'" in notes and "path-only" in notes
    # Ignored means reported: nothing is suppressed that gitleaks would report.
    scanner = Scanner(config.rules, config.allowlist)
    assert _found(scanner, "acme_0123456789", "x.bb") != []
    # A line allow-list is applied to the line.
    assert rule.allow_line_regexes == ("import",)
    assert _found(scanner, "import acme_0123456789", "x.bb") == []


def test_match_allow_lists_apply_to_the_match() -> None:
    config = load_gitleaks_config(
        _ONE_RULE + "[[rules.allowlists]]\nregexTarget = 'match'\nregexes = ['_0000']\n",
        source="t.toml",
    )
    scanner = Scanner(config.rules, config.allowlist)
    assert _found(scanner, "x acme_0000123456", "x.py") == []
    assert _found(scanner, "x acme_0123456789", "x.py") == [("acme-key", "acme_0123456789")]


def test_global_allowlist_maps_onto_allowlist() -> None:
    rules, allow = load_gitleaks_rules(
        _ONE_RULE
        + """
        [allowlist]
        description = "global"
        paths = ['''(?i)^vendor/''']
        regexes = ['''^acme_0{10}$''']
        stopwords = ["Sample"]
        commits = [" ABCDEF0123 "]
        """,
        source="t.toml",
    )
    assert allow.paths == ("(?i:^vendor/)",)
    assert allow.stopwords == ("sample",)
    assert allow.commits == ("abcdef0123",)
    scanner = Scanner(rules, allow)
    secret = "acme_" + _random("abcdef", 10)
    assert _found(scanner, secret, "Vendor/lib.py") == []
    assert _found(scanner, "acme_0000000000") == []
    assert _found(scanner, "acme_sample123x") == []
    blob = Blob("a.py", secret.encode(), commit="abcdef0123")
    assert scanner.scan_blob(blob) == []


def test_global_allowlists_with_target_rules_belong_to_those_rules() -> None:
    rules, allow = load_gitleaks_rules(
        _ONE_RULE
        + """
        [[rules]]
        id = "other"
        regex = '''other_[a-z]{5}'''
        [[allowlists]]
        targetRules = ["acme-key"]
        stopwords = ["zzz"]
        [[allowlists]]
        paths = ['''^docs/''']
        """,
        source="t.toml",
    )
    by_id = {r.id: r for r in rules}
    assert by_id["acme-key"].stopwords == ("zzz",)
    assert by_id["other"].stopwords == ()
    assert allow.paths == ("^docs/",)
    assert allow.stopwords == ()


def test_keys_are_case_insensitive_as_in_gitleaks() -> None:
    rules, _ = load_gitleaks_rules(
        "[[rules]]\nID = 'r'\nRegex = '''(a)(b)'''\nsecretgroup = 2\n", source="t.toml"
    )
    assert rules[0].secret_group == 2


def test_extend_use_default_merges_the_bundled_rules() -> None:
    config = load_gitleaks_config(
        """
        [extend]
        useDefault = true
        disabledRules = ["adafruit-api-key", "no-such-rule"]
        [[rules]]
        id = "github-pat"
        keywords = ["mine"]
        [[rules]]
        id = "acme-key"
        regex = '''acme_[a-z0-9]{10}'''
        """,
        source="team.toml",
    )
    by_id = {r.id: r for r in config.rules}
    bundled = {r.id: r for r in bundled_rules().rules}
    assert config.rules[0].id == "github-pat"
    assert "acme-key" in by_id and "adafruit-api-key" not in by_id
    assert set(bundled) - {"adafruit-api-key"} <= set(by_id)
    assert by_id["github-pat"].regex == bundled["github-pat"].regex
    assert by_id["github-pat"].keywords == (*bundled["github-pat"].keywords, "mine")
    assert config.allowlist.paths == bundled_rules().allowlist.paths
    assert any("no-such-rule" in n for n in config.ignored)


# -- errors: each names the rule and the field --

_R = "[[rules]]\nid = 'r'\nregex = 'a'\n"


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[[rules]]\nid = 'r'\nregex = 'a'\nkeyword = ['a']\n", "rule 'r': keyword: unknown field"),
        (
            "[[rules]]\nid = 'r'\nregex = 'a'\nentropy = 'high'\n",
            "rule 'r': entropy: must be a number",
        ),
        (
            "[[rules]]\nid = 'r'\nregex = 'a'\nkeywords = 'a'\n",
            "rule 'r': keywords: must be a list",
        ),
        (
            "[[rules]]\nid = 'r'\nregex = '(a)'\nsecretGroup = 2\n",
            "rule 'r': secretGroup: 2 is not a group",
        ),
        ("[[rules]]\nid = 'r'\nregex = '\\pL'\n", "rule 'r': regex: Unicode class"),
        ("[[rules]]\nid = 'r'\nregex = 'a'\npath = '(a'\n", "rule 'r': path: missing \\)"),
        ("[[rules]]\nregex = 'a'\n", "rules\\[0\\]: id: missing"),
        ("[[rules]]\nid = 'r'\n", "rule 'r': regex: missing"),
        (
            "[[rules]]\nid = 'r'\nregex = 'a'\n[[rules]]\nid = 'r'\nregex = 'b'\n",
            "rule 'r': id: defined twice",
        ),
        (
            _R + "[[rules.allowlists]]\nregexTarget = 'file'\nregexes = ['a']\n",
            "rule 'r' \\[\\[rules.allowlists\\]\\] #1: regexTarget",
        ),
        (
            _R + "[[rules.allowlists]]\ncondition = 'XOR'\npaths = ['a']\n",
            "condition",
        ),
        (
            "[[rules]]\nid = 'r'\nregex = 'a'\n[[rules.allowlists]]\ndescription = 'empty'\n",
            "at least one of",
        ),
        (
            "[[rules]]\nid = 'r'\nregex = 'a'\n[[rules.allowlists]]\nregexes = ['(?=a)']\n",
            "regexes\\[0\\]: lookaround",
        ),
        ("[allowlist]\npaths = ['a']\n[[allowlists]]\npaths = ['b']\n", "cannot both be given"),
        ("[allowlist]\npaths = ['[']\n", "\\[allowlist\\]: paths\\[0\\]: missing \\]"),
        ("[[allowlists]]\ntargetRules = ['nope']\npaths = ['a']\n", "rule 'nope' does not exist"),
        (
            "[extend]\npath = 'base.toml'\n",
            "\\[extend\\]: path: extending another file is not supported",
        ),
        ("colour = 'blue'\n", "top level: colour: unknown field"),
        ("[[rules]\nid = 'r'", "not valid TOML"),
    ],
)
def test_invalid_rules_name_the_rule_and_the_field(toml: str, problem: str) -> None:
    with pytest.raises(InvalidRules, match=problem) as caught:
        load_gitleaks_rules(toml, source="team.toml")
    assert str(caught.value).startswith("team.toml: ")


def test_every_bad_rule_is_reported_not_just_the_first() -> None:
    toml = (
        "[[rules]]\nid = 'good'\nregex = 'a'\n"
        "[[rules]]\nid = 'bad-1'\nregex = '\\pL'\n"
        "[[rules]]\nid = 'bad-2'\nregex = 'a(?=b)'\n"
    )
    with pytest.raises(InvalidRules) as caught:
        load_gitleaks_rules(toml, source="team.toml")
    assert [p.split(":")[0] for p in caught.value.problems] == ["rule 'bad-1'", "rule 'bad-2'"]


def test_invalid_rules_is_a_scan_error() -> None:
    assert issubclass(InvalidRules, ScanError)
    assert issubclass(InvalidRules, TetherError)
