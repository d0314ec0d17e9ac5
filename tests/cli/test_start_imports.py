"""What a worker of `tether serve` loads before it serves. Each worker is a fresh
interpreter, so every module here is paid for at every start and every replacement
(the 1,000,000-lease start budget of design.md §6, measured by bench/scale_bench.py)."""

from __future__ import annotations

import subprocess
import sys

#: Loaded on first use only: a JWKS fetch or an alert (httpx), an estate parse
#: (jsonschema), a Workload API socket (h2, protobuf), a migration (alembic), printing
#: commands (rich, click's commands and the HTTP client of `tether.client`).
LATER = ("httpx", "jsonschema", "h2", "google.protobuf", "alembic", "rich", "tether.client")


def test_a_worker_loads_none_of_what_it_needs_only_later() -> None:
    probe = (
        "import sys\n"
        "import tether.cli._worker, tether.cli._server, tether.app, tether.api\n"
        f"print(' '.join(m for m in {LATER!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []
