"""A real `tether serve` process and the real CLI, as an operator would run them."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Server:
    home: Path
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    token: str | None = None
    process: subprocess.Popen[bytes] | None = None
    #: Every byte any CLI call wrote to stderr, for the secret search.
    cli_stderr: list[str] = field(default_factory=list)
    #: Extra environment for the server process (not the CLI).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: HTTPS: the CA the CLI (TETHER_CACERT) and the health check verify the server with;
    #: the TLS flags themselves go to `start`.
    cacert: Path | None = None
    #: mTLS: the client certificate and key the CLI and the health check present.
    client_cert: tuple[Path, Path] | None = None
    #: The host `start` listens on; clients always connect to 127.0.0.1.
    listen_host: str = "127.0.0.1"
    #: How `start` runs the server: the real CLI, unless a test launches its own (say,
    #: one that registers a target kind of its own first). The CLI calls always run `tether`.
    launcher: list[str] = field(default_factory=lambda: [sys.executable, "-m", "tether"])

    @property
    def addr(self) -> str:
        scheme = "https" if self.cacert else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx should verify this server with (`verify=`)."""
        if self.cacert is None:
            return True
        context = ssl.create_default_context(cafile=self.cacert)
        if self.client_cert:
            context.load_cert_chain(*self.client_cert)
        return context

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        env["TETHER_HOME"] = str(self.home)
        env["TETHER_ADDR"] = self.addr
        if self.database_url:
            env["TETHER_DATABASE_URL"] = self.database_url
        if self.token:
            env["TETHER_TOKEN"] = self.token
        if self.cacert:
            env["TETHER_CACERT"] = str(self.cacert)
        if self.client_cert:
            env["TETHER_CLIENT_CERT"] = str(self.client_cert[0])
            env["TETHER_CLIENT_KEY"] = str(self.client_cert[1])
        return env

    def start(self, *extra: str) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        listen = f"{self.listen_host}:{self.port}"
        # One process unless a test asks for workers (`--workers N`): these tests kill the
        # server (a custom launcher's registrations are in its process alone) and use what
        # they applied at once on whichever process answers (tests/cli/test_workers.py
        # covers the workers; across processes a change is in force within the bound).
        self.process = subprocess.Popen(
            [*self.launcher, "serve", "--listen", listen, *extra],
            env={"TETHER_WORKERS": "1", **self.env(), **self.extra_env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        verify = self.verify()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_file.read_text()[-2000:]}")
            try:
                health = httpx.get(f"{self.addr}/v1/sys/health", timeout=1, verify=verify)
                if health.status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()  # not left running behind the failed test
        raise RuntimeError("server did not become healthy in 60 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cli(self, *args: str, stdin: str | None = None) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "tether", *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.cli_stderr.append(done.stderr)
        return CliResult(done.returncode, done.stdout, done.stderr)
