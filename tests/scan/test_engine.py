"""The detection engine: what it reports, where, and what it refuses to report."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.scan.fakes import fake
from tether._internal.tokens import new_token
from tether.scan import (
    RULE_IDS,
    Allowlist,
    Blob,
    InvalidRule,
    Rule,
    Scanner,
    default_rules,
    scan_paths,
)

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def crc_token(prefix: str) -> str:
    return fake({"ghp_": "github-token", "npm_": "npm-token"}[prefix])


def _found(text: str, scanner: Scanner | None = None) -> list[tuple[str, int, int, str]]:
    scanner = scanner or Scanner()
    return [
        (d.rule, d.location.line, d.location.column, d.secret)
        for d in scanner.scan_blob(Blob("f.txt", text.encode()))
    ]


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner()


def test_every_built_in_rule_is_accelerated(scanner: Scanner) -> None:
    assert scanner.unaccelerated == ()
    assert set(RULE_IDS) == {r.id for r in default_rules()}


def test_checksummed_formats_are_found_and_look_alikes_are_not(scanner: Scanner) -> None:
    tether, github, npm = new_token(), crc_token("ghp_"), crc_token("npm_")
    broken = [t[:-1] + ("0" if t[-1] != "0" else "1") for t in (tether, github, npm)]
    text = "\n".join(
        [f"TOKEN={tether}", f"gh = '{github}'", f"//registry:_authToken={npm}", *broken]
    )
    assert _found(text, scanner) == [
        ("tether-token", 1, 7, tether),
        ("github-token", 2, 7, github),
        ("npm-token", 3, 23, npm),
    ]


def test_provider_formats(scanner: Scanner) -> None:
    aws_id = "AKIA" + _random("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    aws_secret = _random(_B62 + "/+", 40)
    fine = "github_pat_" + _random(_B62, 22) + "_" + _random(_B62, 59)
    cases = {
        "github-fine-grained-pat": fine,
        "gitlab-pat": "glpat-" + _random(_B62 + "_-", 20),
        "slack-token": f"xoxb-{_random('0123456789', 12)}-{_random('0123456789', 12)}-"
        + _random(_B62, 24),
        "stripe-key": "sk_live_" + _random(_B62, 24),
        "pypi-token": "pypi-AgEIcHlwaS5vcmc" + _random(_B62 + "_-", 60),
        "openai-key": "sk-proj-" + _random(_B62, 30) + "T3BlbkFJ" + _random(_B62, 30),
        "google-api-key": "AIza" + _random(_B62 + "_-", 35),
    }
    lines = [f'{rule.upper().replace("-", "_")} = "{value}"' for rule, value in cases.items()]
    lines += [f"aws_access_key_id = {aws_id}", f"aws_secret_access_key = {aws_secret}"]
    found = {(rule, secret) for rule, _, _, secret in _found("\n".join(lines), scanner)}
    expected = set(cases.items()) | {
        ("aws-access-key-id", aws_id),
        ("aws-secret-access-key", aws_secret),
    }
    assert found == expected


def test_private_keys_are_reported_whole_at_their_first_line(scanner: Scanner) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    openssh = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    text = f"key:\n{pem}\nother:\n{openssh}\n-----BEGIN PUBLIC KEY-----\nabc\n"
    found = _found(text, scanner)
    assert [(r, line, s.strip()) for r, line, _, s in found] == [
        ("private-key", 2, pem.strip()),
        ("private-key", 2 + pem.count("\n") + 2, openssh.strip()),
    ]


def test_generic_assignments_need_a_secret_looking_value(scanner: Scanner) -> None:
    real = secrets.token_urlsafe(18)
    # A random value with a dot is not a dotted name in code (its parts mix case/digits).
    dotted = "hR" + secrets.token_hex(6) + "Q." + "F" + secrets.token_hex(5) + "zA"
    text = "\n".join(
        [
            f'db_password = "{real}"',
            'password = os.environ["DB_PASSWORD"]',
            "password: ${DB_PASSWORD}",
            "secret = settings.SECRET_KEY",
            "token = get_token_from_vault()",
            "api_key: changeme-changeme",
            "password = aaaaaaaaaaaaaaaa",
            "token: 123e4567-e89b-12d3-a456-426614174000",
            "password=<your-password>",
            "token = this.props.apiKey",
            "password: config.Database.Password",
            f"mysql -u root --password={dotted} -h db",
        ]
    )
    assert _found(text, scanner) == [
        ("generic-secret", 1, 16, real),
        ("generic-secret", 12, 26, dotted),
    ]


def test_one_detection_per_secret_the_specific_rule_wins(scanner: Scanner) -> None:
    github = crc_token("ghp_")
    password = secrets.token_urlsafe(18)
    text = f"token = {github}\nDATABASE_URL=postgresql://app:{password}@db:5432/app\n"
    assert [(r, s) for r, _, _, s in _found(text, scanner)] == [
        ("github-token", github),
        ("database-url", password),
    ]


def test_jwts_are_told_apart_by_their_key_id(scanner: Scanner) -> None:
    import jwt

    key = ec.generate_private_key(ec.SECP256R1())
    tether = jwt.encode(
        {"sub": "x", "jti": "l1"}, key, algorithm="ES256", headers={"kid": "tk_0123456789abcdef"}
    )
    other = jwt.encode({"sub": "x"}, key, algorithm="ES256", headers={"kid": "another"})
    text = f"Authorization: Bearer {tether}\ncurl -H 'Authorization: Bearer {other}'\n"
    assert [(r, s) for r, _, _, s in _found(text, scanner)] == [
        ("tether-jwt", tether),
        ("jwt", other),
    ]


def test_allow_lists(tmp_path: Path) -> None:
    github = crc_token("ghp_")
    text = f"a = {github}  # tether:allow\nb = {github}  # gitleaks:allow\nc = {github}\n"
    assert [line for _, line, _, _ in _found(text)] == [3]
    by_regex = Scanner(allow=Allowlist(regexes=(github[-6:] + "$",)))
    assert _found(text, by_regex) == []
    by_path = Scanner(allow=Allowlist(paths=(r"^f\.txt$",)))
    assert _found(text, by_path) == []
    by_stopword = Scanner(allow=Allowlist(stopwords=(github[4:12].lower(),)))
    assert _found(text, by_stopword) == []
    commit = Scanner(allow=Allowlist(commits=("c0ffee",)))
    assert commit.scan_blob(Blob("f", text.encode(), commit="c0ffee")) == []


def test_git_blobs_report_the_files_line_numbers(scanner: Scanner) -> None:
    github = crc_token("ghp_")
    blob = Blob("app.py", f"x = 1\ntoken = {github}".encode(), lines=[10, 42], commit="a" * 40)
    [found] = scanner.scan_blob(blob)
    assert (found.location.line, found.location.commit) == (42, "a" * 40)
    chunk = Blob("big.log", f"a\nb\n{github}\n".encode(), first_line=1001)
    assert scanner.scan_blob(chunk)[0].location.line == 1003


def test_columns_count_characters_not_bytes(scanner: Scanner) -> None:
    github = crc_token("ghp_")
    assert _found(f"é€ {github}", scanner)[0][2] == 4


def test_rules_hyperscan_takes_only_approximately_or_not_at_all_still_run() -> None:
    # A back-reference: Hyperscan takes it as a prefilter (a superset), `re` decides.
    quoted = Rule("quoted", "quoted value", r"(['\"])(zz[0-9]{6})\1", secret_group=2)
    # A repeat too large for Hyperscan at all: `re` alone runs it.
    long = Rule("long", "long value", r"\byy[0-9]{6,70000}\b")
    scanner = Scanner([quoted, long])
    assert scanner.unaccelerated == ("long",)
    text = "a = 'zz123456'\nb = 'zz123456\"\nc = yy1234567\n"
    assert _found(text, scanner) == [("quoted", 1, 6, "zz123456"), ("long", 3, 5, "yy1234567")]


def test_bad_rules_are_refused_by_id() -> None:
    with pytest.raises(InvalidRule, match="broken"):
        Scanner([Rule("broken", "x", "(unclosed")])
    with pytest.raises(InvalidRule, match="twice"):
        Scanner([Rule("a", "x", "a"), Rule("a", "y", "b")])
    with pytest.raises(InvalidRule, match="validator"):
        Scanner([Rule("a", "x", "a", validator="nope")])


def test_all_cores_find_what_one_finds(tmp_path: Path) -> None:
    tokens = [crc_token("ghp_") for _ in range(40)]
    for index, token in enumerate(tokens):
        (tmp_path / f"f{index}.env").write_text(f"# file {index}\nGH={token}\n" * 2)
    one, stats_one = scan_paths([str(tmp_path)], workers=1)
    two, stats_two = scan_paths([str(tmp_path)], workers=2)
    assert [(d.location, d.secret) for d in one] == [(d.location, d.secret) for d in two]
    assert len(one) == 80 and stats_one.files == stats_two.files == 40
    assert stats_one.bytes == stats_two.bytes > 0


def test_tokens_that_end_with_a_dash_are_found_whole(scanner: Scanner) -> None:
    gitlab = "glpat-" + _random(_B62, 19) + "-"
    openai = "sk-proj-" + _random(_B62, 30) + "T3BlbkFJ" + _random(_B62, 29) + "-"
    found = _found(f'GITLAB = "{gitlab}"\nOPENAI = "{openai}"\n', scanner)
    assert [(r, s) for r, _, _, s in found] == [("gitlab-pat", gitlab), ("openai-key", openai)]


def test_query_string_values_end_at_the_next_parameter(scanner: Scanner) -> None:
    password = secrets.token_urlsafe(18)
    text = f"jdbc:postgresql://db/app?user=u&password={password}&ssl=true\n"
    assert [(r, s) for r, _, _, s in _found(text, scanner)] == [("generic-secret", password)]


def test_a_rule_whose_whitespace_spans_a_line_break_is_confirmed() -> None:
    rule = Rule("spans", "value on the next line", r"api_key\s*=\s*\"([A-Za-z0-9]{20})\"", 1)
    value = _random(_B62, 20)
    assert _found(f'x = 1\napi_key =\n  "{value}"\n', Scanner([rule])) == [("spans", 3, 4, value)]


def test_many_secrets_on_one_long_line_keep_their_columns(scanner: Scanner) -> None:
    tokens = [crc_token("ghp_") for _ in range(300)]
    filler = "x" * 10_000
    line = "é".join(f"{filler} {t}" for t in tokens)
    found = _found(line, scanner)
    assert [s for _, _, _, s in found] == tokens
    expected = [line.index(t) + 1 for t in tokens]
    assert [column for _, _, column, _ in found] == expected
