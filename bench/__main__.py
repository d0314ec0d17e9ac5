"""Run every benchmark and print JSON. `--quick` shrinks the sizes for a smoke run."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    audit_bench,
    authzen_bench,
    dashboard_bench,
    estate_bench,
    govern_bench,
    issuance_bench,
    keys_bench,
    policy_bench,
    scale_bench,
    scan_bench,
    spiffe_bench,
    target_bench,
)

BENCHMARKS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "audit": audit_bench.run,
    "authzen": authzen_bench.run,
    "dashboard": dashboard_bench.run,
    "estate_apply": estate_bench.run,
    "governance": govern_bench.run,
    "issuance": issuance_bench.run,
    "keys": keys_bench.run,
    "policy": policy_bench.run,
    "postgres": target_bench.run,
    "scale": scale_bench.run,
    "scan": scan_bench.run,
    "spiffe": spiffe_bench.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("only", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "quick": args.quick,
    }
    for name, run in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix=f"tether-bench-{name}-") as tmp:
            print(f"running {name} ...", file=sys.stderr)
            results[name] = run(Path(tmp), args.quick)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
