"""Schemathesis against a real `tether serve`: every check, bounded examples per operation,
as an admin, an auditor and with no token. No 5xx, and every response as the OpenAPI
document declares it (status, content type, headers, body)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import estate_document
from tests.scenario.harness import Server

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Bounded: enough for the coverage phase's edge cases and some fuzzing per operation.
MAX_EXAMPLES = "10"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    srv = Server(home=tmp_path_factory.mktemp("fuzz"))
    srv.start()
    try:
        init = httpx.post(f"{srv.addr}/v1/sys/init", json={"shares": 1, "threshold": 1}).json()
        httpx.post(f"{srv.addr}/v1/sys/unseal", json={"share": init["shares"][0]})
        admin = {"Authorization": f"Bearer {init['root_token']}"}
        document = estate_document(8)
        applied = httpx.post(f"{srv.addr}/v1/estate/apply", json=document, headers=admin)
        assert applied.status_code == 200, applied.text
        auditor = httpx.post(
            f"{srv.addr}/v1/tokens", json={"name": "fuzz", "roles": ["auditor"]}, headers=admin
        ).json()["token"]
        yield srv, {"admin": init["root_token"], "auditor": auditor}
    finally:
        srv.stop()


@pytest.mark.parametrize("caller", ["admin", "auditor", "none"])
def test_the_api_matches_its_openapi_document(
    server: tuple[Server, dict[str, str]], caller: str, tmp_path: Path
) -> None:
    srv, tokens = server
    header = f"Authorization: Bearer {tokens[caller]}" if caller in tokens else "X-Caller: none"
    args = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{srv.addr}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        "7",
        "--no-shrink",
        "--workers",
        "1",
        "--header",
        header,
        "--output-truncate",
        "true",
        # Sealing the node would answer 503 to everything after it; the access matrix
        # test calls it, last.
        "--exclude-path",
        "/v1/sys/seal",
    ]
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
    assert "failures" not in done.stdout.splitlines()[-1]
    assert "server error" not in srv.log_file.read_text().lower()
