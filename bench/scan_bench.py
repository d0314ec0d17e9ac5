"""The secret scanner's speed and accuracy on the generated corpus (`bench.scan_corpus`):
MB/s on one process and on every core, precision and recall per rule, next to
`detect-secrets` run on the same corpus in the same run, in its own virtualenv.

    python -m bench scan                     # through the dispatcher (100 MB)
    python -m bench.scan_bench --mb 200 --detect-secrets-mb 20

MB is 10^6 bytes of content scanned (archive members decompressed, as the scanner
reads them). detect-secrets is run with `--no-verify` (its verifiers make network
calls; Tether's scanner makes none) on every core it wants. It does not open archives:
the secrets planted in them are left out of its recall. With `--detect-secrets-mb` it
scans a subset of the corpus's files, chosen by a hash of their names, and its MB/s is
that subset's; the JSON says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.scan_corpus import Planted, archived, display_relative, generate, score
from tether.scan import scan_paths

DETECT_SECRETS = "detect-secrets==1.5.0"
VENV = Path(__file__).resolve().parent.parent / ".venv-bench" / "detect-secrets"
TARGETS = {"mb_per_s": 100, "speedup_vs_detect_secrets": 100, "precision": 0.95, "recall": 0.95}


def detect_secrets_binary(venv: Path = VENV) -> Path:
    """detect-secrets in a virtualenv of its own (made once, then reused): its
    dependencies never meet Tether's."""
    binary = venv / "bin" / "detect-secrets"
    if not binary.exists():
        print(f"installing {DETECT_SECRETS} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--disable-pip-version-check", DETECT_SECRETS], check=True)
    return binary


def _tether(root: Path, workers: int) -> tuple[dict[str, Any], list[tuple[str, str, int, str]]]:
    detections, stats = scan_paths([str(root)], workers=workers)
    reported = [
        (d.rule, display_relative(d.location.file, root), d.location.line, d.secret)
        for d in detections
    ]
    mb = stats.bytes / 1e6
    timing = {
        "workers": workers,
        "mb": round(mb, 1),
        "files": stats.files,
        "seconds": round(stats.seconds, 3),
        "mb_per_s": round(mb / stats.seconds, 1),
    }
    return timing, reported


def _accuracy(planted: Sequence[Planted], reported: list[tuple[str, str, int, str]]) -> Any:
    scores = score(planted, reported)
    found = sum(s.found for s in scores.values())
    total_reported = sum(s.reported for s in scores.values())
    return {
        "precision": round(found / total_reported, 4) if total_reported else 1.0,
        "recall": round(found / len(planted), 4) if planted else 1.0,
        "per_rule": {
            rule: {
                "planted": s.planted,
                "found": s.found,
                "reported": s.reported,
                "precision": round(s.precision, 4),
                "recall": round(s.recall, 4),
            }
            for rule, s in scores.items()
        },
    }


def _subset(root: Path, mb: float) -> list[str]:
    """Files (relative to root) in an order fixed by their names' hashes, up to `mb`."""
    files = sorted(
        (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        key=lambda rel: hashlib.sha1(rel.encode()).digest(),
    )
    chosen, total = [], 0
    for rel in files:
        if total >= mb * 1e6:
            break
        chosen.append(rel)
        total += (root / rel).stat().st_size
    return chosen


def _detect_secrets(root: Path, planted: Sequence[Planted], subset_mb: float | None) -> Any:
    binary = detect_secrets_binary()
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    everything = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    paths = ["."] if subset_mb is None else _subset(root, subset_mb)
    scanned = set(everything if subset_mb is None else paths)
    size = sum((root / rel).stat().st_size for rel in scanned)
    started = time.perf_counter()
    done = subprocess.run(
        [str(binary), "scan", "--all-files", "--no-verify", *paths],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    results = json.loads(done.stdout)["results"]
    by_line: set[tuple[str, int]] = set()
    by_value: set[tuple[str, int, str]] = set()
    for filename, items in results.items():
        rel = os.path.normpath(filename)
        for item in items:
            by_line.add((rel, item["line_number"]))
            by_value.add((rel, item["line_number"], item["hashed_secret"]))
    # Archive members are not read by detect-secrets: left out of its recall.
    truth = [p for p in planted if not archived(p) and p.file in scanned]
    planted_lines = {(p.file, p.line) for p in truth}
    hits = [p for p in truth if (p.file, p.line) in by_line]
    exact = [
        p
        for p in truth
        if (p.file, p.line, hashlib.sha1(p.secret.encode()).hexdigest()) in by_value
    ]
    per_rule_truth = Counter(p.rule for p in truth)
    per_rule_hits = Counter(p.rule for p in hits)
    mb = size / 1e6
    return {
        "version": version,
        "command": "detect-secrets scan --all-files --no-verify",
        "cores": os.cpu_count(),
        "mb": round(mb, 1),
        "subset": subset_mb is not None,
        "note": (
            "MB/s measured on a subset of the corpus's files (chosen by a hash of their "
            "names) and taken as its rate on the whole"
            if subset_mb is not None
            else "the whole corpus"
        ),
        "seconds": round(seconds, 2),
        "mb_per_s": round(mb / seconds, 3),
        "reported_lines": len(by_line),
        # A reported line holding a planted secret is right; any other is a false positive.
        "precision": round(len(by_line & planted_lines) / len(by_line), 4) if by_line else 1.0,
        "recall": round(len(hits) / len(truth), 4) if truth else 1.0,
        # The same, counting only reports whose secret hash is the planted secret's.
        "recall_by_value": round(len(exact) / len(truth), 4) if truth else 1.0,
        "per_rule_recall": {
            rule: round(per_rule_hits[rule] / n, 4) for rule, n in sorted(per_rule_truth.items())
        },
        "archives": "not read by detect-secrets: their planted secrets are excluded from recall",
        "planted_in_scope": len(truth),
    }


def measure(tmp: Path, *, mb: int, detect_secrets_mb: float | None) -> dict[str, Any]:
    root = tmp / "corpus"
    corpus = generate(root, size_mb=mb, seed=0)
    workers = os.cpu_count() or 1
    print(f"corpus: {corpus.bytes / 1e6:.0f} MB in {corpus.seconds:.1f} s", file=sys.stderr)
    single, reported_single = _tether(root, 1)
    every, reported = _tether(root, workers)
    tether = {
        "single_process": single,
        "all_cores": every,
        "same_findings_single_and_all_cores": sorted(reported_single) == sorted(reported),
        **_accuracy(corpus.planted, reported),
    }
    print(f"tether: {single['mb_per_s']} / {every['mb_per_s']} MB/s", file=sys.stderr)
    ds = _detect_secrets(root, corpus.planted, detect_secrets_mb)
    speedup = every["mb_per_s"] / ds["mb_per_s"]
    rules = tether["per_rule"].values()
    return {
        "corpus": {
            "mb": round(corpus.bytes / 1e6, 1),
            "files": corpus.files,
            "generation_seconds": round(corpus.seconds, 2),
            "planted": len(corpus.planted),
            "planted_in_archives": sum(archived(p) for p in corpus.planted),
            "planted_per_rule": dict(sorted(Counter(p.rule for p in corpus.planted).items())),
            "decoys": dict(sorted(corpus.decoys.items())),
        },
        "tether": tether,
        "detect_secrets": ds,
        "speedup_vs_detect_secrets": {
            "all_cores": round(speedup, 1),
            "single_process": round(single["mb_per_s"] / ds["mb_per_s"], 1),
        },
        "targets": TARGETS,
        "meets": {
            "mb_per_s": every["mb_per_s"] >= TARGETS["mb_per_s"],
            "speedup_vs_detect_secrets": speedup >= TARGETS["speedup_vs_detect_secrets"],
            "precision_per_rule": all(r["precision"] >= TARGETS["precision"] for r in rules),
            "recall_per_rule": all(r["recall"] >= TARGETS["recall"] for r in rules),
        },
    }


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    """The dispatcher's entry: 100 MB (quick: 10 MB, detect-secrets on 2 MB of it)."""
    if quick:
        return measure(tmp, mb=10, detect_secrets_mb=2)
    return measure(tmp, mb=100, detect_secrets_mb=None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scan_bench")
    parser.add_argument("--mb", type=int, default=100, help="corpus size (at least 50)")
    parser.add_argument(
        "--detect-secrets-mb",
        type=float,
        default=None,
        help="run detect-secrets on this many MB of the corpus and extrapolate its MB/s",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-bench-scan-") as tmp:
        result = measure(Path(tmp), mb=args.mb, detect_secrets_mb=args.detect_secrets_mb)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
