"""The scanner on a generated corpus of ≥ 50 MB (source, configuration, logs, base64 and
hex noise, hashes, UUIDs, archives of logs), with fakes of every format planted in
realistic places, decoys a careless scanner reports, and Tether credentials issued by a
real server in this test: precision and recall ≥ 0.95 for every rule."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.scan_corpus import (
    RULES,
    Corpus,
    Score,
    archived,
    bad_checksum,
    display_relative,
    fake,
    generate,
    score,
)

from tests.factories import estate_document
from tests.govern.world import AdminApi, admin_api
from tether._internal.tokens import is_well_formed
from tether.scan import RULE_IDS, ScanStats, scan_paths

IDENTITY = "nhi-00000"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TARGET = 0.95


def _issued(home: Path) -> dict[str, list[str]]:
    """Credentials of every kind Tether hands out, issued through its API: API, join,
    task and opaque access tokens, a JWT access token, a vaulted static password."""
    with admin_api(home) as (node, client, root, clock):
        api = AdminApi(node, client, root, clock)
        document = estate_document(2)
        document["profiles"].append(
            {"id": "opaque-api", "provider": "token", "scopes": ["push"], "max_ttl": "1h"}
        )
        document["identities"][0]["entitlements"].append({"profile": "opaque-api"})
        api.post("/v1/estate/apply", document)
        api_token = api.token("auditor")
        join = api.post("/v1/join-tokens", {"identity": IDENTITY})["token"]
        task = api.task(IDENTITY)["token"]

        def exchange(audience: str) -> str:
            form = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": task,
                "subject_token_type": ACCESS_TOKEN,
                "audience": audience,
            }
            response = client.post("/oauth2/token", data=form)
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        opaque, signed = exchange("opaque-api"), exchange("https://api.example.com")
        api.post(
            "/v1/credentials",
            {"id": "orders-db", "owner": "team-a", "readers": [IDENTITY], "overlap": "1h"},
        )
        read = client.get("/v1/credentials/orders-db", headers={"Authorization": f"Bearer {task}"})
        assert read.status_code == 200, read.text
        password = str(read.json()["value"])
    return {
        "tether-token": [api_token, join, task, opaque],
        "tether-jwt": [signed],
        "database-url": [password],
    }


@dataclass(frozen=True, slots=True)
class Scanned:
    root: Path
    corpus: Corpus
    issued: dict[str, list[str]]
    reported: list[tuple[str, str, int, str]]
    stats: ScanStats

    def __repr__(self) -> str:
        # pytest shows a failing test's arguments: the secrets in here must not appear.
        return f"Scanned({self.root}, {len(self.corpus.planted)} planted, {self.stats})"

    def scores(self) -> dict[str, Score]:
        return score(self.corpus.planted, self.reported)


@pytest.fixture(scope="session")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> Scanned:
    issued = _issued(tmp_path_factory.mktemp("tether"))
    root = tmp_path_factory.mktemp("corpus")
    corpus = generate(root, size_mb=50, seed=11, extra=issued)
    detections, stats = scan_paths([str(root)], workers=2)
    reported = [
        (d.rule, display_relative(d.location.file, root), d.location.line, d.secret)
        for d in detections
    ]
    return Scanned(root, corpus, issued, reported, stats)


def _where(items: tuple[tuple[str, int], ...], limit: int = 8) -> str:
    shown = ", ".join(f"{file}:{line}" for file, line in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


@pytest.mark.timeout(240)
def test_every_rule_finds_at_least_95_percent_of_its_secrets_and_reports_95_percent_right(
    scanned: Scanned,
) -> None:
    failing = []
    for rule, s in scanned.scores().items():
        if s.recall < TARGET or s.precision < TARGET:
            # Locations only: a secret, even a fake one, is never printed.
            failing.append(
                f"{rule}: recall {s.recall:.3f} ({s.found}/{s.planted}), precision "
                f"{s.precision:.3f} ({s.found}/{s.reported}); missed at {_where(s.misses)}; "
                f"false positives at {_where(s.false_positives)}"
            )
    assert not failing, "\n".join(failing)


@pytest.mark.timeout(240)
def test_every_credential_the_server_issued_is_found_wherever_it_was_planted(
    scanned: Scanned,
) -> None:
    # Each check is a bare boolean: pytest would print the operands of a comparison.
    found = {(rule, secret) for rule, _, _, secret in scanned.reported}
    for rule, secrets in scanned.issued.items():
        for index, secret in enumerate(secrets):
            was_found = (rule, secret) in found
            assert was_found, f"{rule} issued #{index} was not found"
    s = scanned.scores()
    issued = {(rule, secret) for rule, secrets in scanned.issued.items() for secret in secrets}
    planted = [p for p in scanned.corpus.planted if (p.rule, p.secret) in issued]
    assert len(planted) == 3 * len(issued)
    missed = {(p.file, p.line) for p in planted} & {m for r in s.values() for m in r.misses}
    assert not missed, f"issued credentials missed at {sorted(missed)}"


@pytest.mark.timeout(240)
def test_the_corpus_is_what_the_measure_claims(scanned: Scanned) -> None:
    corpus = scanned.corpus
    assert corpus.bytes >= 50 * 1024 * 1024
    assert scanned.stats.bytes >= corpus.bytes  # archives are read decompressed
    assert set(RULES) == set(RULE_IDS), "the corpus plants every rule the scanner has"
    per_rule = {rule: 0 for rule in RULES}
    for p in corpus.planted:
        per_rule[p.rule] += 1
    assert min(per_rule.values()) >= 50, per_rule
    assert sum(archived(p) for p in corpus.planted) >= 20
    assert sum(corpus.decoys.values()) >= 500
    suffixes = {p.suffix for p in scanned.root.rglob("*") if p.is_file()}
    assert {".py", ".js", ".go", ".java", ".yaml", ".json", ".env", ".tf", ".ini"} <= suffixes
    assert any(scanned.root.rglob("Dockerfile")) and any(scanned.root.rglob("*.tar.gz"))


def test_fakes_carry_the_checksums_their_formats_have() -> None:
    rng = random.Random(3)
    for _ in range(200):
        token = fake("tether-token", rng)
        checks, look_alike_refused = is_well_formed(token), not is_well_formed(bad_checksum(token))
        assert checks, "a fake Tether token fails Tether's own checksum"
        assert look_alike_refused, "a look-alike with a wrong checksum passes"
    for rule in RULES:
        differs = fake(rule, rng) != fake(rule, rng)
        assert differs, f"{rule}: two fakes are the same"
