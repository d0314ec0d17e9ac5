"""A throwaway PostgreSQL cluster for provider tests, built from the installed binaries.

Unlike `tests.services.throwaway_postgres_database`, which borrows a database on a server
someone else runs (with whatever authentication it has), this starts a private cluster
whose pg_hba demands SCRAM passwords over TCP, so a wrong, expired or revoked password is
really refused. It listens on a free port on 127.0.0.1 only, with no Unix socket, and is
deleted on teardown.

Layout of what it creates (all passwords generated per run):

- a bootstrap superuser `postgres` (for test assertions that need to see everything),
- an admin role `nhi_admin` with LOGIN CREATEROLE but *not* superuser, as the least
  privilege a PostgreSQL target should need,
- a database `appdb` owned by the admin, with schema `payments` (table `accounts`, three
  rows) and schema `other` (table `secrets`, one row), both owned by the admin.

Use the `pg_cluster` fixture (session scoped: one cluster per run, a few seconds), or
`running_cluster()` directly. If the binaries are missing, the test is skipped locally and
fails under CI=true (`tests.services.unavailable`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.services import unavailable
from tether.targets import Target

ADMIN_ROLE = "nhi_admin"
SUPERUSER = "postgres"
DBNAME = "appdb"
_OS_USER = "postgres"
_SEARCH_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/*/bin")


@dataclass(frozen=True, slots=True)
class PgCluster:
    """A running cluster. `target` is what a PostgresProvider is built from."""

    host: str
    port: int
    dbname: str
    admin_user: str
    admin_password: str
    superuser_password: str
    data_dir: Path
    _run_as: tuple[str, ...]
    _pg_ctl: str

    def dsn(self, user: str, password: str, dbname: str | None = None) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname or self.dbname}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(self.admin_user, self.admin_password)

    @property
    def superuser_dsn(self) -> str:
        return self.dsn(SUPERUSER, self.superuser_password)

    @property
    def target(self) -> Target:
        return Target(name="payments-db", kind="postgres", dsn=self.admin_dsn)

    def superuser(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection to the app database (close it yourself)."""
        return psycopg.connect(self.superuser_dsn, autocommit=True, connect_timeout=5)

    def stop(self) -> None:
        _run([*self._run_as, self._pg_ctl, "stop", "-D", str(self.data_dir), "-m", "fast", "-w"])

    def start(self) -> None:
        log = self.data_dir.parent / "server.log"
        _run([*self._run_as, self._pg_ctl, "start", "-D", str(self.data_dir), "-l", str(log), "-w"])

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The cluster is down inside the block and running again after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for pattern in _SEARCH_DIRS:
        for directory in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if (directory / binary).is_file():
                return str(directory / binary)
    return None


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed: {done.stderr.strip()[-2000:]}")


def _free_port() -> int:
    # Racy by nature (the port is free now, maybe not in a second); start retries.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write(path: Path, text: str, owner: tuple[int, int] | None) -> None:
    path.write_text(text)
    if owner is not None:
        os.chown(path, *owner)


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        raise AssertionError("unreachable")
    # initdb refuses to run as root: run the server tools as the `postgres` OS user.
    run_as: tuple[str, ...] = ()
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam(_OS_USER)
        except KeyError:
            unavailable(f"running as root and there is no {_OS_USER!r} OS user to run initdb")
            raise AssertionError("unreachable") from None
        owner = (entry.pw_uid, entry.pw_gid)
        run_as = ("runuser", "-u", _OS_USER, "--")

    base = Path(tempfile.mkdtemp(prefix="tether-pg-"))
    cluster: PgCluster | None = None
    try:
        if owner is not None:
            os.chown(base, *owner)
        superuser_password = secrets.token_urlsafe(24)
        admin_password = secrets.token_urlsafe(24)
        pwfile = base / "pwfile"
        _write(pwfile, superuser_password + "\n", owner)
        data = base / "data"
        _run(
            [
                *run_as,
                initdb,
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        # Only password logins over TCP from loopback; no Unix socket at all.
        _write(data / "pg_hba.conf", "host all all 127.0.0.1/32 scram-sha-256\n", owner)
        last_error: Exception | None = None
        for _ in range(3):
            port = _free_port()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(port),
                "unix_socket_directories": "''",
                "password_encryption": "'scram-sha-256'",
                "max_connections": "60",
                "shared_buffers": "'16MB'",
                # A throwaway cluster: durability buys nothing here and costs seconds.
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            _write(
                data / "postgresql.auto.conf",
                "".join(f"{k} = {v}\n" for k, v in settings.items()),
                owner,
            )
            cluster = PgCluster(
                host="127.0.0.1",
                port=port,
                dbname=DBNAME,
                admin_user=ADMIN_ROLE,
                admin_password=admin_password,
                superuser_password=superuser_password,
                data_dir=data,
                _run_as=run_as,
                _pg_ctl=pg_ctl,
            )
            try:
                cluster.start()
                break
            except RuntimeError as exc:  # most likely the port was taken meanwhile
                last_error = exc
                cluster = None
        if cluster is None:
            raise RuntimeError("could not start the throwaway cluster") from last_error
        _populate(cluster)
        yield cluster
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def _populate(cluster: PgCluster) -> None:
    with psycopg.connect(
        cluster.dsn(SUPERUSER, cluster.superuser_password, "postgres"), autocommit=True
    ) as su:
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(cluster.admin_user), sql.Literal(cluster.admin_password)
            )
        )
        su.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(cluster.dbname), sql.Identifier(cluster.admin_user)
            )
        )
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE SCHEMA payments")
        admin.execute(
            "CREATE TABLE payments.accounts (id int PRIMARY KEY, holder text, balance numeric)"
        )
        admin.execute(
            "INSERT INTO payments.accounts VALUES (1, 'ada', 100), (2, 'bob', 250), (3, 'cy', 7)"
        )
        admin.execute("CREATE TABLE payments.ledger (id int PRIMARY KEY, note text)")
        admin.execute("CREATE SCHEMA other")
        admin.execute("CREATE TABLE other.secrets (id int PRIMARY KEY, value text)")
        admin.execute("INSERT INTO other.secrets VALUES (1, 'not for you')")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway cluster per test session. It is registered in tests/conftest.py;
    importing it into a test module as well would start a second cluster."""
    with running_cluster() as cluster:
        yield cluster
