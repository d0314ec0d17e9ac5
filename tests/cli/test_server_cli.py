"""`tether serve`/`tether dev` before they serve: every flag and the port are checked before
the store is opened, and a database that cannot be used is one line naming it."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scenario.harness import free_port

PASSWORD = "hunter2-do-not-print"  # the secret no message may carry


def _tether(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        env={"PATH": "/usr/bin:/bin", "TETHER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize("command", ["serve", "dev"])
def test_a_busy_port_is_refused_before_anything_starts(
    command: str, busy_port: int, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    done = _tether(command, "--listen", f"127.0.0.1:{busy_port}", home=home)
    message = _one_line_error(done)
    assert f"cannot listen on 127.0.0.1:{busy_port} (--listen): address already in use" in message
    assert "--listen HOST:PORT or TETHER_LISTEN" in message
    assert "Serving on" not in done.stdout and "{" not in done.stderr  # no JSON log line
    assert not (home / "tether.db").exists()  # the store was never opened


def test_a_busy_port_from_tether_listen_names_the_variable(busy_port: int, tmp_path: Path) -> None:
    done = _tether("dev", home=tmp_path, TETHER_LISTEN=f"127.0.0.1:{busy_port}")
    assert f"127.0.0.1:{busy_port} (TETHER_LISTEN)" in _one_line_error(done)


@pytest.mark.parametrize("listen", ["18840", "127.0.0.1:99999", "127.0.0.1:0", "127.0.0.1:http"])
def test_a_bad_listen_address_is_refused_before_the_store_is_opened(
    listen: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    message = _one_line_error(_tether("serve", "--listen", listen, home=home))
    assert "--listen must be HOST:PORT with a port from 1 to 65535" in message
    assert repr(listen) in message
    assert not home.exists()


def test_a_listen_host_that_does_not_resolve_is_refused(tmp_path: Path) -> None:
    message = _one_line_error(
        _tether(
            "serve", "--listen", "no-such-host.invalid:8737", "--allow-plain-http", home=tmp_path
        )
    )
    assert "cannot listen on no-such-host.invalid:8737 (--listen)" in message
    assert not (tmp_path / "tether.db").exists()


def test_an_unreachable_database_is_one_line_with_host_and_cause(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://tether:{PASSWORD}@127.0.0.1:{port}/tether"
    done = _tether(
        "serve", "--listen", f"127.0.0.1:{free_port()}", home=tmp_path, TETHER_DATABASE_URL=url
    )
    message = _one_line_error(done)
    assert f"cannot open the database postgresql://tether:***@127.0.0.1:{port}/tether" in message
    assert "connection refused" in message
    assert PASSWORD not in done.stdout + done.stderr


def test_dev_refuses_a_database_with_other_tables_unless_allowed(tmp_path: Path) -> None:
    shared = tmp_path / "shared.db"
    with sqlite3.connect(shared) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    env = {"TETHER_DATABASE_URL": f"sqlite:///{shared}"}
    message = _one_line_error(_tether("dev", "--once", home=tmp_path / "h1", **env))
    assert "invoices" in message and "--allow-existing-schema" in message

    allowed = _tether("dev", "--once", "--allow-existing-schema", home=tmp_path / "h2", **env)
    assert allowed.returncode == 0, allowed.stderr
    assert "chain verified" in allowed.stdout
    # Tether's history is there now: the next start needs no flag, and the variable works too.
    again = _tether("dev", "--once", home=tmp_path / "h2", **env)
    assert again.returncode == 0, again.stderr

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    by_env = _tether(
        "dev",
        "--once",
        home=tmp_path / "h3",
        TETHER_DATABASE_URL=f"sqlite:///{other}",
        TETHER_ALLOW_EXISTING_SCHEMA="1",
    )
    assert by_env.returncode == 0, by_env.stderr
