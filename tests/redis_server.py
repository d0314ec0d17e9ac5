"""A throwaway redis-server for tests: its own port and directory, no persistence, no
default user, and an admin ACL user with a generated password.

    with redis_server() as server:
        provider = RedisProvider(server.target)

The admin's password reaches the server only as a SHA-256 hash in an ACL file readable by
its owner alone, never on a command line that `ps` would show.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.services import unavailable
from tether.targets import Target

REDIS_SERVER = os.environ.get("TETHER_TEST_REDIS_SERVER", "/usr/bin/redis-server")
HOST = "127.0.0.1"
ADMIN = "tether-admin"
#: What the provider needs and no more: the ACL and CLIENT commands, PING and INFO (health)
#: and SELECT (a DSN naming another database); no access to any key.
ADMIN_RULES = "resetkeys resetchannels -@all +acl +client +ping +info +select"
_START_ATTEMPTS = 3
_START_DEADLINE = 10.0  # seconds for the server to answer; a startup bound, not a test


@dataclass(frozen=True, slots=True)
class RedisServer:
    host: str
    port: int
    admin: str
    password: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def target(self) -> Target:
        return Target(name="redis-test", kind="redis", dsn=self.url(self.admin, self.password))

    def url(self, username: str, password: str, db: int = 0) -> str:
        auth = f"{quote(username, safe='')}:{quote(password, safe='')}"
        return f"redis://{auth}@{self.host}:{self.port}/{db}"

    def client(self, username: str, password: str, db: int = 0) -> redis.Redis:
        """A client that never reconnects behind the test's back."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=username,
            password=password,
            decode_responses=True,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )

    def admin_client(self) -> redis.Redis:
        return self.client(self.admin, self.password)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _start(directory: Path, admin_rules: str) -> RedisServer | None:
    password = secrets.token_urlsafe(32)
    acl = directory / "users.acl"
    acl.write_text(
        "user default off resetpass resetkeys resetchannels -@all\n"
        f"user {ADMIN} on #{hashlib.sha256(password.encode()).hexdigest()} {admin_rules}\n"
    )
    acl.chmod(0o600)
    port = _free_port()
    options = {
        "bind": HOST,
        "port": str(port),
        "save": "",  # no snapshots and no append-only file: nothing outlives the test
        "appendonly": "no",
        "daemonize": "no",
        "dir": str(directory),
        "aclfile": str(acl),
        "logfile": str(directory / "redis.log"),
    }
    process = subprocess.Popen(
        [REDIS_SERVER, *(arg for k, v in options.items() for arg in (f"--{k}", v))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(HOST, port, ADMIN, password, process, directory)
    deadline = time.monotonic() + _START_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None  # most likely the port was taken meanwhile: try another
        try:
            with server.admin_client() as probe:
                probe.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.02)
    server.stop()
    return None


@contextmanager
def redis_server(admin_rules: str = ADMIN_RULES) -> Iterator[RedisServer]:
    """Start a private redis-server; stop it and remove its directory afterwards."""
    if not (Path(REDIS_SERVER).exists() or shutil.which(REDIS_SERVER)):
        unavailable(f"redis-server not found at {REDIS_SERVER}")
    with tempfile.TemporaryDirectory(prefix="tether-redis-") as tmp:
        server = None
        for _ in range(_START_ATTEMPTS):
            server = _start(Path(tmp), admin_rules)
            if server is not None:
                break
        if server is None:
            log = Path(tmp, "redis.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            unavailable(f"redis-server did not start:\n{tail}")
            raise AssertionError("unreachable")
        try:
            yield server
        finally:
            server.stop()
