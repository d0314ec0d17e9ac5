"""`tether serve --workers N`: real worker processes behind one socket, one supervisor.

Which worker answers a request is the kernel's choice; to ask one worker in particular a
test stops the others (SIGSTOP), opens a connection (only that worker can accept it) and
lets them go on (SIGCONT) before it sends anything that the supervisor relays to every
worker. Every wait polls for the state it needs; nothing is timed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.running import ACCESS, EXCHANGE, estate, task_token
from tests.factories import write_estate
from tests.scenario.harness import Server, free_port
from tether.barrier import decode_share, shamir

#: Long enough for a worker of a loaded 2-core machine to import and start its node.
_PATIENCE = 90.0


def _poll(done: Callable[[], bool], what: str, patience: float = _PATIENCE) -> None:
    deadline = time.monotonic() + patience
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # state, ppid, ...


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _serving(server: Server) -> set[int]:
    """The supervisor's workers, once there are two and each answers."""
    assert server.process is not None
    _poll(lambda: len(_children(server.process.pid)) == 2, "two workers")  # type: ignore[union-attr]
    workers = _children(server.process.pid)
    for pid in workers:
        _pinned(server, pid, workers).close()
    return workers


def _pinned(server: Server, pid: int, workers: set[int]) -> http.client.HTTPConnection:
    """A keep-alive connection that worker `pid` accepted: every request on it is its."""
    others = workers - {pid}
    for other in others:
        os.kill(other, signal.SIGSTOP)
    try:
        _poll(lambda: all((_stat(o) or ["T"])[0] in "Tt" for o in others), "stopped workers")
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=_PATIENCE)
        connection.request("GET", "/v1/sys/health")  # answered, so accepted, by `pid`
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    finally:
        for other in others:
            os.kill(other, signal.SIGCONT)
    return connection


def _call(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null")


def _on(
    server: Server, pid: int, workers: set[int], method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    """One request answered by worker `pid`."""
    connection = _pinned(server, pid, workers)
    try:
        return _call(connection, method, path, **kw)
    finally:
        connection.close()


@contextmanager
def _node(tmp_path: Path, *flags: str, **env: str) -> Iterator[Server]:
    server = Server(home=tmp_path / "home", extra_env=dict(env))
    server.start("--workers", "2", *flags)
    try:
        yield server
    finally:
        server.stop()


def _init(server: Server, shares: int = 3, threshold: int = 2) -> list[str]:
    init = server.cli("init", "--shares", str(shares), "--threshold", str(threshold), "--json")
    assert init.code == 0, init.stderr
    server.token = init.json()["root_token"]
    return list(init.json()["shares"])


def _audit_actions(server: Server) -> Counter[str]:
    entries = httpx.get(
        f"{server.addr}/v1/audit",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {server.token}"},
    )
    assert entries.status_code == 200, entries.text
    return Counter(e["action"] for e in entries.json()["items"])


def test_shares_given_to_different_workers_unseal_every_worker_and_one_seal_seals_all(
    tmp_path: Path,
) -> None:
    with _node(tmp_path) as server:
        shares = _init(server)
        first, second = sorted(_serving(server))
        workers = {first, second}

        status, body = _on(
            server, first, workers, "POST", "/v1/sys/unseal", body={"share": shares[0]}
        )
        assert status == 200 and body["sealed"] and body["progress"] == 1
        # The other worker shows the supervisor's progress, and takes the next share.
        assert _on(server, second, workers, "GET", "/v1/sys/status")[1]["progress"] == 1
        status, body = _on(
            server, second, workers, "POST", "/v1/sys/unseal", body={"share": shares[1]}
        )
        assert status == 200 and not body["sealed"] and body["progress"] == 0
        # Open on every worker by the time the answer came: no wait, no retry.
        for pid in workers:
            assert _on(server, pid, workers, "GET", "/v1/sys/status")[1]["sealed"] is False
            assert _on(server, pid, workers, "GET", "/v1/identities", token=server.token)[0] == 200
        assert _audit_actions(server)["sys.unseal"] == 1  # the node's unseal, recorded once

        status, body = _on(server, first, workers, "POST", "/v1/sys/seal", token=server.token)
        assert status == 200 and body["sealed"]
        for pid in workers:
            assert _on(server, pid, workers, "GET", "/v1/sys/status")[1]["sealed"] is True
            status, body = _on(server, pid, workers, "GET", "/v1/identities", token=server.token)
            assert status == 503 and body["error"] == "sealed"

        for share in shares[1:]:
            assert server.cli("unseal", share).code == 0
        for pid in workers:
            assert _on(server, pid, workers, "GET", "/v1/identities", token=server.token)[0] == 200
        actions = _audit_actions(server)
        assert actions["sys.unseal"] == 2 and actions["sys.seal"] == 1


def test_failed_unseal_attempts_are_limited_for_the_node_not_for_each_worker(
    tmp_path: Path,
) -> None:
    with _node(tmp_path) as server:
        shares = _init(server)
        workers = _serving(server)
        # A share of the right form that init did not make: refused, and counted.
        forged = base64.b64encode(bytes(32) + b"\x09").decode()
        for attempt in range(10):
            pid = sorted(workers)[attempt % 2]
            status, body = _on(
                server, pid, workers, "POST", "/v1/sys/unseal", body={"share": forged}
            )
            assert status == 400 and body["error"] == "invalid_share", body
        for pid in workers:  # ten failures over two workers used up the one limit
            status, body = _on(
                server, pid, workers, "POST", "/v1/sys/unseal", body={"share": shares[0]}
            )
            assert status == 429 and body["error"] == "rate_limited", body
        assert _on(server, min(workers), workers, "GET", "/v1/sys/status")[1]["progress"] == 0


def _said_serving(server: Server, pid: int) -> bool:
    """The supervisor logged that worker `pid` serves."""
    for line in server.log_file.read_text().splitlines():
        if '"worker serving"' in line and json.loads(line).get("pid") == pid:
            return True
    return False


def _load(
    server: Server, task_token: str, stop: threading.Event, results: Counter[str], clients: int
) -> tuple[list[threading.Thread], list[str]]:
    """`clients` keep-alive clients exchanging `task_token` for tokens until `stop`;
    returns the threads and the lease of every credential a client received."""
    received: list[str] = []

    def client() -> None:
        with httpx.Client(base_url=server.addr, timeout=_PATIENCE) as http_client:
            while not stop.is_set():
                try:
                    response = http_client.post(
                        "/oauth2/token",
                        data={
                            "grant_type": EXCHANGE,
                            "subject_token": task_token,
                            "subject_token_type": ACCESS,
                            "audience": "push",
                        },
                    )
                except httpx.TransportError:
                    results["cut"] += 1  # a connection the killed worker held
                    continue
                results[str(response.status_code)] += 1
                if response.status_code == 200:
                    received.append(response.json()["tether_lease"])

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads, received


def test_a_worker_killed_under_load_is_replaced_and_the_node_stays_unsealed(
    tmp_path: Path,
) -> None:
    with _node(tmp_path) as server:
        shares = _init(server, 1, 1)
        token = server.token
        assert server.cli("unseal", shares[0]).code == 0
        applied = server.cli("apply", "-f", str(write_estate(tmp_path / "e.yaml", estate())))
        assert applied.code == 0, applied.stderr
    # Started again, every worker loads the estate as it starts (a change made while it
    # runs reaches the others within the bound, not at once).
    with _node(
        tmp_path, TETHER_UNSEAL_KEY_FILE=str(_write_shares(tmp_path / "k", shares))
    ) as server:
        server.token = token
        task = task_token(server, "batch-host", tmp_path)
        workers = _serving(server)
        results: Counter[str] = Counter()
        stop = threading.Event()
        clients = 8
        threads, received = _load(server, task["token"], stop, results, clients)
        try:
            _poll(lambda: results["200"] >= 50, "tokens issued before the kill")
            victim, survivor = sorted(workers)
            os.kill(victim, signal.SIGKILL)
            assert server.process is not None
            supervisor = server.process.pid
            _poll(lambda: len(_children(supervisor) - workers) == 1, "a replacement worker")
            (replacement,) = _children(supervisor) - workers
            _poll(lambda: _said_serving(server, replacement), "the replacement to serve")
            issued = results["200"]
            _poll(lambda: results["200"] >= issued + 50, "tokens issued after the kill")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        # The replacement had the key before it served (asked once the load is over: a
        # worker stopped to reach the other must not be holding the database's write lock).
        now = {survivor, replacement}
        status, body = _on(server, replacement, now, "GET", "/v1/identities", token=server.token)
        assert status == 200, body
        assert _on(server, replacement, now, "GET", "/v1/sys/status")[1]["sealed"] is False
        assert not [code for code in results if code.startswith("5")], results
        assert set(results) <= {"200", "cut"}, results
        # Only connections the dead worker held were cut: at most one for each client.
        assert results["cut"] <= clients, results
        leases = httpx.get(
            f"{server.addr}/v1/leases",
            params={"limit": 10000},
            headers={"Authorization": f"Bearer {server.token}"},
        ).json()["items"]
        assert set(received) <= {lease["id"] for lease in leases}  # each has its lease


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_stops_every_worker_and_the_supervisor_exits_0(
    signum: int, tmp_path: Path
) -> None:
    with _node(tmp_path) as server:
        workers = _serving(server)
        assert server.process is not None
        server.process.send_signal(signum)
        assert server.process.wait(timeout=_PATIENCE) == 0, server.log_file.read_text()[-3000:]
        _poll(lambda: not any(_alive(pid) for pid in workers), "the workers to exit")
        log = server.log_file.read_text()
        assert "Traceback" not in log and log.count('"msg": "Finished server process') == 2


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    with _node(tmp_path) as server:
        workers = _serving(server)
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        _poll(lambda: not any(_alive(pid) for pid in workers), "orphaned workers to exit")


def _write_shares(path: Path, shares: list[str], mode: int = 0o600) -> Path:
    path.write_text("\n".join(shares) + "\n")
    path.chmod(mode)
    return path


def _serve(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", "serve", "--listen", f"127.0.0.1:{free_port()}", *args],
        env={"PATH": "/usr/bin:/bin", "TETHER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=_PATIENCE,
        check=False,
    )


def test_a_node_unseals_itself_from_its_unseal_key_file(tmp_path: Path) -> None:
    with _node(tmp_path) as server:
        shares = _init(server)
        token = server.token
    key_file = _write_shares(tmp_path / "unseal.key", shares[:2])
    with _node(tmp_path, TETHER_UNSEAL_KEY_FILE=str(key_file)) as server:
        server.token = token
        workers = _serving(server)
        for pid in workers:  # no one gave a share: every worker started unsealed
            assert _on(server, pid, workers, "GET", "/v1/identities", token=server.token)[0] == 200
    # One process (`--workers 1`) reads it the same way.
    single = Server(home=tmp_path / "home", extra_env={"TETHER_UNSEAL_KEY_FILE": str(key_file)})
    single.start("--workers", "1")
    try:
        assert httpx.get(f"{single.addr}/v1/sys/status").json()["sealed"] is False
    finally:
        single.stop()

    home = tmp_path / "home"
    readable = _write_shares(tmp_path / "readable.key", shares[:2], 0o644)
    done = _serve(home, "--workers", "2", TETHER_UNSEAL_KEY_FILE=str(readable))
    assert done.returncode == 1 and "chmod 600" in done.stderr, done.stderr
    too_few = _write_shares(tmp_path / "one.key", shares[:1])
    done = _serve(home, "--workers", "2", TETHER_UNSEAL_KEY_FILE=str(too_few))
    assert done.returncode == 1, done.stderr
    assert "holds 1 share(s); unsealing takes 2" in done.stderr
    assert shares[0] not in done.stderr + done.stdout


def test_the_root_key_is_never_in_an_argument_the_environment_or_a_file(tmp_path: Path) -> None:
    with _node(tmp_path) as server:
        shares = _init(server)
        for share in shares[:2]:
            assert server.cli("unseal", share).code == 0
        workers = _serving(server)
        for pid in workers:
            assert _on(server, pid, workers, "GET", "/v1/identities", token=server.token)[0] == 200
        root_key = shamir.combine([decode_share(s) for s in shares[:2]])
        forms = [root_key, base64.b64encode(root_key), root_key.hex().encode()]
        forms += [s.encode() for s in shares]
        assert server.process is not None
        for pid in {server.process.pid, *workers}:
            for name in ("cmdline", "environ"):
                exposed = Path(f"/proc/{pid}/{name}").read_bytes()
                assert not any(form in exposed for form in forms), (pid, name)
        for path in server.home.rglob("*"):
            if path.is_file():
                assert not any(form in path.read_bytes() for form in forms), path


def test_one_worker_is_one_process_and_dev_mode_bootstraps_in_the_supervisor(
    tmp_path: Path,
) -> None:
    single = Server(home=tmp_path / "single")
    single.start("--workers", "1")
    try:
        assert single.process is not None and _children(single.process.pid) == set()
    finally:
        single.stop()
    with _node(tmp_path, "--dev") as server:
        workers = _serving(server)
        server.token = (server.home / "dev-root-token").read_text().strip()
        for pid in workers:
            assert _on(server, pid, workers, "GET", "/v1/identities", token=server.token)[0] == 200
        assert _audit_actions(server)["sys.init"] == 1


def _cpus_of(pid: int) -> set[int]:
    """The CPUs every thread of `pid` may run on (a thread may have its own mask)."""
    masks = [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]
    return set().union(*masks)


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="pinning chooses among CPUs: the tests have one"
)
def test_each_worker_runs_on_a_cpu_of_its_own_and_its_replacement_on_the_same(
    tmp_path: Path,
) -> None:
    with _node(tmp_path / "pinned") as server:
        workers = _serving(server)
        cpus = {pid: _cpus_of(pid) for pid in workers}
        assert all(len(mask) == 1 for mask in cpus.values()), cpus
        assert len(set().union(*cpus.values())) == 2, "both workers on one CPU"
        assert cpus[next(iter(workers))] <= os.sched_getaffinity(0)

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert server.process is not None
        supervisor = server.process.pid
        _poll(lambda: len(_children(supervisor) - workers) == 1, "a replacement worker")
        (replacement,) = _children(supervisor) - workers
        _poll(lambda: len(os.sched_getaffinity(replacement)) == 1, "the replacement pinned")
        _serving(server)  # it serves
        assert _cpus_of(replacement) == cpus[victim]

    with _node(tmp_path / "floating", "--no-pin-workers") as server:
        for pid in _serving(server):
            assert _cpus_of(pid) == os.sched_getaffinity(0)


def test_a_refusal_crosses_the_channel_as_the_error_a_single_process_raises() -> None:
    import socket as socket_module
    from multiprocessing.connection import Connection

    from tether.barrier import InvalidShare, RateLimited
    from tether.cli._channel import Channel, ChannelClosed, error_message, raise_error
    from tether.system import CustodianRefused

    ours, theirs = socket_module.socketpair()
    near, far = Channel(Connection(ours.detach())), Channel(Connection(theirs.detach()))
    for error in (
        RateLimited("too many", retry_after=7),
        InvalidShare("not one of ours"),
        RuntimeError("a bug with /secret/path"),
    ):
        near.send({"error": error_message(error)})
        with pytest.raises(Exception) as raised:
            raise_error(far.receive()["error"])
        if isinstance(error, RateLimited):
            assert isinstance(raised.value, RateLimited) and raised.value.retry_after == 7
        elif isinstance(error, InvalidShare):
            assert type(raised.value) is InvalidShare and str(raised.value) == "not one of ours"
        else:  # not a Tether error: its message stays in the supervisor
            assert isinstance(raised.value, CustodianRefused)
            assert raised.value.status_code == 500 and "/secret" not in str(raised.value)
    near.close()
    with pytest.raises(ChannelClosed):
        far.receive()
