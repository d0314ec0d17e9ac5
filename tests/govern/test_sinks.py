"""Alerts out: signed webhooks to a real local receiver, JSON lines, the outbox's retries,
severities and the Prometheus gauges."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.clock import SettableClock
from tether._internal.canonical import canonical_json
from tether.govern._outbox import ALERT, AlertOutbox, FindingGauges, backoff
from tether.govern._sinks import (
    ConfiguredSink,
    InvalidSink,
    JsonLinesSink,
    SinkConfig,
    Sinks,
    WebhookSink,
    parse_sinks,
    sink_key_from,
)
from tether.govern.errors import SinkError
from tether.model import Severity
from tether.store import GovernFilter, GovernRecord, Store

KEY = b"k" * 32


def _no_key(sink_id: str) -> bytes | None:
    """The composition root's answer while no key is registered (e.g. sealed)."""
    return None


# -- a receiver that checks signatures the way the docs tell receivers to --


@dataclass
class Received:
    delivery: str
    timestamp: str
    body: bytes
    valid: bool
    #: Answered 2xx (not told to fail).
    ok: bool = True


@dataclass
class Receiver:
    key: bytes
    fail_next: int = 0
    status_when_failing: int = 503
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def accepted(self) -> list[Received]:
        """Requests it answered 2xx: at most one per delivery id once deduped."""
        return [r for r in self.received if r.valid and r.ok]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            timestamp = self.headers.get("X-Tether-Timestamp", "")
            expected = hmac.new(
                receiver.key, timestamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
            valid = hmac.compare_digest(
                self.headers.get("X-Tether-Signature", ""), f"sha256={expected}"
            )
            with receiver.lock:
                failing = receiver.fail_next > 0
                if failing:
                    receiver.fail_next -= 1
                delivery = self.headers.get("X-Tether-Delivery", "")
                receiver.received.append(Received(delivery, timestamp, body, valid, not failing))
            status = receiver.status_when_failing if failing else (204 if valid else 401)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(key=KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tether?token=s3cr3t"
    yield state
    server.shutdown()
    server.server_close()


def _alert(severity: str = "high", **more: Any) -> dict[str, Any]:
    return {
        "type": "finding.open",
        "finding": "fnd_1",
        "rule": "orphaned",
        "title": "Owner departed",
        "severity": severity,
        "identity": "svc-billing",
        "owner": "team-pay",
        **more,
    }


# -- sinks --


def test_webhook_posts_signed_canonical_json(receiver: Receiver) -> None:
    sink = WebhookSink("siem", receiver.url, KEY, unix_time=lambda: 1_765_000_000.9)
    alert = _alert(id="alr_1", nested={"b": 1, "a": [2, 1]})
    sink.deliver(alert)
    [got] = receiver.received
    assert got.valid
    assert got.timestamp == "1765000000"
    assert got.delivery == "alr_1"
    assert got.body == canonical_json(alert).encode()


def test_webhook_failure_names_only_the_status(receiver: Receiver) -> None:
    receiver.fail_next = 1
    sink = WebhookSink("siem", receiver.url, KEY)
    with pytest.raises(SinkError) as caught:
        sink.deliver(_alert(id="alr_1"))
    message = str(caught.value)
    assert message == "webhook sink siem answered HTTP 503"
    assert "s3cr3t" not in repr(sink) and KEY.decode() not in repr(sink)


def test_webhook_transport_error_names_the_error_class() -> None:
    # A port nothing listens on: bound, then closed.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = WebhookSink("siem", f"http://127.0.0.1:{port}/x?token=s3cr3t", KEY, timeout=2.0)
    with pytest.raises(SinkError) as caught:
        sink.deliver(_alert(id="alr_1", secret_note="hunter2"))
    message = str(caught.value)
    assert message == "webhook sink siem: ConnectError"


def test_webhook_without_key_fails_before_sending(receiver: Receiver) -> None:
    sink = WebhookSink("siem", receiver.url, None)
    with pytest.raises(SinkError, match="no signing key registered for sink siem"):
        sink.deliver(_alert(id="alr_1"))
    assert receiver.received == []


def test_jsonl_sink_appends_one_synced_line_per_alert(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    sink = JsonLinesSink("file", path)
    sink.deliver(_alert(id="a1"))
    sink.deliver(_alert("low", id="a2"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a1", "a2"]
    assert lines[0] == canonical_json(_alert(id="a1"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_jsonl_sink_error_is_a_sink_error(tmp_path: Path) -> None:
    sink = JsonLinesSink("file", tmp_path / "missing-dir" / "alerts.jsonl")
    with pytest.raises(SinkError, match=r"^jsonl sink file: FileNotFoundError$"):
        sink.deliver(_alert(id="a1"))


def test_sink_key_is_derived_per_sink() -> None:
    token_key = b"t" * 32
    key = sink_key_from(lambda: token_key, "siem")
    assert key == hmac.new(token_key, b"tether/sink/siem", hashlib.sha256).digest()
    assert key != sink_key_from(lambda: token_key, "pager")
    assert key == sink_key_from(lambda: token_key, "siem")


def test_sink_config_parses() -> None:
    configs = parse_sinks(
        [
            {"id": "siem", "kind": "webhook", "url": "https://siem.example/hook"},
            {"id": "file", "kind": "jsonl", "path": "/var/log/t.jsonl", "min_severity": "high"},
        ]
    )
    assert configs == (
        SinkConfig("siem", "webhook", url="https://siem.example/hook"),
        SinkConfig("file", "jsonl", path="/var/log/t.jsonl", min_severity=Severity.HIGH),
    )


@pytest.mark.parametrize(
    ("spec", "field_named"),
    [
        ({"kind": "jsonl", "path": "/x"}, "governance.sinks[0].id"),
        ({"id": "a/b", "kind": "jsonl", "path": "/x"}, "governance.sinks[0].id"),
        ({"id": "a", "kind": "email", "path": "/x"}, "governance.sinks[0].kind"),
        ({"id": "a", "kind": "webhook"}, "governance.sinks[0].url"),
        ({"id": "a", "kind": "webhook", "url": "ftp://x"}, "governance.sinks[0].url"),
        ({"id": "a", "kind": "jsonl", "path": ""}, "governance.sinks[0].path"),
        ({"id": "a", "kind": "jsonl", "path": "/x", "min_severity": "urgent"}, "min_severity"),
        ({"id": "a", "kind": "jsonl", "path": "/x", "colour": "red"}, "sinks[0].colour"),
    ],
)
def test_sink_config_errors_name_the_field(spec: dict[str, Any], field_named: str) -> None:
    with pytest.raises(InvalidSink, match=field_named.replace("[", r"\[").replace("]", r"\]")):
        parse_sinks([spec])


def test_duplicate_sink_ids_are_refused() -> None:
    spec = {"id": "a", "kind": "jsonl", "path": "/x"}
    with pytest.raises(InvalidSink, match=r"governance\.sinks\[1\]\.id: duplicate"):
        parse_sinks([spec, spec])


def test_sinks_are_rebuilt_when_a_key_appears(receiver: Receiver) -> None:
    keys: dict[str, bytes | None] = {"siem": None}
    sinks = Sinks(lambda: [{"id": "siem", "kind": "webhook", "url": receiver.url}], keys.get)
    first = sinks()
    assert sinks() is first  # nothing changed: the same objects
    with pytest.raises(SinkError, match="no signing key"):
        first[0].sink.deliver(_alert(id="x"))
    keys["siem"] = KEY
    sinks()[0].sink.deliver(_alert(id="x"))
    assert [r.valid for r in receiver.received] == [True]


def test_a_bad_entry_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Sinks runs inside the transaction raising an alert: an error there would undo it.
    good = {"id": "good", "kind": "jsonl", "path": str(tmp_path / "a")}
    sinks = Sinks(lambda: [{"id": "bad", "kind": "email"}, good, {**good, "path": "/x"}], _no_key)
    with caplog.at_level("ERROR", "tether.govern.alerts"):
        [only] = sinks()
    assert only.sink.id == "good"
    assert isinstance(only.sink, JsonLinesSink) and only.sink.path == tmp_path / "a"
    assert "governance.sinks[0].kind" in caplog.text


def test_backoff_doubles_from_one_second_to_ten_minutes() -> None:
    assert [backoff(n, 1.0).total_seconds() for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff(10, 1.0) == dt.timedelta(seconds=512)
    assert backoff(11, 1.0) == dt.timedelta(minutes=10)
    assert backoff(10_000, 1.0) == dt.timedelta(minutes=10)
    assert backoff(1, 0.0) == dt.timedelta(seconds=0.75)  # jitter shortens, never lengthens


# -- the outbox, on every store backend (the `store` fixture of tests/conftest.py) --


def _outbox(store: Store, clock: SettableClock, sinks: list[ConfiguredSink] | Sinks) -> AlertOutbox:
    listed = sinks if isinstance(sinks, Sinks) else (lambda: sinks)
    # No jitter: the waits are exactly 1 s, 2 s, 4 s ...
    return AlertOutbox(store, listed, clock, jitter=lambda: 1.0)


def _alerts(store: Store, **where: Any) -> list[GovernRecord]:
    with store.read() as tx:
        return tx.list_govern(GovernFilter(type=ALERT, **where))


def _enqueue(store: Store, outbox: AlertOutbox, alert: Mapping[str, Any]) -> None:
    with store.transaction() as tx:
        outbox.enqueue(tx, alert)


def test_alerts_are_retried_with_backoff_and_delivered_once(
    store: Store, receiver: Receiver
) -> None:
    clock = SettableClock()
    receiver.fail_next = 3
    outbox = _outbox(store, clock, [ConfiguredSink(WebhookSink("siem", receiver.url, KEY))])
    _enqueue(store, outbox, _alert())
    [record] = _alerts(store)
    assert (record.group_id, record.state, record.spec["attempts"]) == ("siem", "pending", 0)

    waits = []
    for attempt in (1, 2, 3):
        assert outbox.deliver_due() == 0
        [record] = _alerts(store)
        assert record.state == "pending"
        assert record.spec["attempts"] == attempt
        assert record.spec["last_error"] == "webhook sink siem answered HTTP 503"
        # Not due yet: a pass now sends nothing.
        requests = len(receiver.received)
        assert outbox.deliver_due() == 0
        assert len(receiver.received) == requests
        wait = dt.datetime.fromisoformat(record.spec["next_attempt_at"]) - clock.now
        waits.append(wait.total_seconds())
        clock.advance(seconds=wait.total_seconds())
    assert waits == [1.0, 2.0, 4.0]

    assert outbox.deliver_due() == 1
    [record] = _alerts(store)
    assert record.state == "delivered"
    assert "last_error" not in record.spec
    clock.advance(minutes=30)
    assert outbox.deliver_due() == 0
    [accepted] = receiver.accepted()
    assert accepted.delivery == record.id
    body = json.loads(accepted.body)
    assert body == {**_alert(), "id": record.id, "sink": "siem"}
    assert len(receiver.received) == 4
    # Every attempt carried the same signed body and delivery id: a receiver that saw
    # an attempt whose answer got lost dedupes the retry.
    assert {(r.delivery, r.body, r.valid) for r in receiver.received} == {
        (record.id, accepted.body, True)
    }


def test_a_webhook_without_key_stays_pending(store: Store, receiver: Receiver) -> None:
    clock = SettableClock()
    sinks = Sinks(lambda: [{"id": "siem", "kind": "webhook", "url": receiver.url}], _no_key)
    outbox = _outbox(store, clock, sinks)
    _enqueue(store, outbox, _alert())
    for _ in range(3):
        assert outbox.deliver_due() == 0
        clock.advance(hours=1)
    [record] = _alerts(store)
    assert record.state == "pending"
    assert record.spec["attempts"] == 3
    assert record.spec["last_error"] == "no signing key registered for sink siem"
    assert receiver.received == []
    assert outbox.pending() == {"siem": 1}


def test_min_severity_picks_the_sinks(store: Store, tmp_path: Path, receiver: Receiver) -> None:
    clock = SettableClock()
    everything = tmp_path / "all.jsonl"
    sinks = Sinks(
        lambda: [
            {"id": "all", "kind": "jsonl", "path": str(everything)},
            {"id": "pager", "kind": "webhook", "url": receiver.url, "min_severity": "high"},
        ],
        {"pager": KEY}.get,
    )
    outbox = _outbox(store, clock, sinks)
    _enqueue(store, outbox, _alert("medium", finding="f-medium"))
    _enqueue(store, outbox, _alert("critical", finding="f-critical"))
    _enqueue(store, outbox, _alert("no-such-severity", finding="f-unknown"))
    by_sink = {
        sink: sorted(r.spec["alert"]["finding"] for r in _alerts(store, group_id=sink))
        for sink in ("all", "pager")
    }
    assert by_sink == {
        "all": ["f-critical", "f-medium", "f-unknown"],
        # An alert of no known severity is not filtered out: it goes everywhere.
        "pager": ["f-critical", "f-unknown"],
    }
    assert outbox.deliver_due() == 5
    lines = [json.loads(x) for x in everything.read_text().splitlines()]
    assert sorted(x["finding"] for x in lines) == ["f-critical", "f-medium", "f-unknown"]
    assert sorted(json.loads(r.body)["finding"] for r in receiver.accepted()) == [
        "f-critical",
        "f-unknown",
    ]


def test_an_alert_commits_with_its_transaction(store: Store, tmp_path: Path) -> None:
    clock = SettableClock()
    outbox = _outbox(store, clock, [ConfiguredSink(JsonLinesSink("f", tmp_path / "a"))])

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as tx:
        outbox.enqueue(tx, _alert())
        raise Boom
    assert _alerts(store) == []
    _enqueue(store, outbox, _alert())
    assert len(_alerts(store)) == 1


def test_a_failing_sink_gets_one_request_per_pass(store: Store, receiver: Receiver) -> None:
    clock = SettableClock()
    receiver.fail_next = 100
    outbox = _outbox(store, clock, [ConfiguredSink(WebhookSink("siem", receiver.url, KEY))])
    for i in range(5):
        _enqueue(store, outbox, _alert(finding=f"f{i}"))
    assert outbox.deliver_due() == 0
    assert len(receiver.received) == 1
    receiver.fail_next = 0
    clock.advance(seconds=1)
    assert outbox.deliver_due() == 5
    # Delivered in the order they were raised.
    assert [json.loads(r.body)["finding"] for r in receiver.accepted()] == [
        f"f{i}" for i in range(5)
    ]


def test_deliver_due_honours_its_limit(store: Store, tmp_path: Path) -> None:
    clock = SettableClock()
    outbox = _outbox(store, clock, [ConfiguredSink(JsonLinesSink("f", tmp_path / "a"))])
    for i in range(7):
        _enqueue(store, outbox, _alert(finding=f"f{i}"))
    assert outbox.deliver_due(limit=3) == 3
    assert outbox.deliver_due(limit=3) == 3
    assert outbox.deliver_due(limit=3) == 1
    assert outbox.pending() == {}


def test_prune_removes_only_old_delivered_alerts(store: Store, tmp_path: Path) -> None:
    clock = SettableClock()
    good = ConfiguredSink(JsonLinesSink("good", tmp_path / "a"))
    bad = ConfiguredSink(JsonLinesSink("bad", tmp_path / "no-dir" / "a"))
    outbox = _outbox(store, clock, [good, bad])
    _enqueue(store, outbox, _alert())
    assert outbox.deliver_due() == 1
    clock.advance(days=1)
    assert outbox.prune(clock.now - dt.timedelta(days=2)) == 0
    assert outbox.prune(clock.now) == 1
    [left] = _alerts(store)
    assert (left.group_id, left.state) == ("bad", "pending")


# -- gauges --


def test_finding_gauges_reflect_the_counts(store: Store) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    findings = [
        GovernRecord("finding", f"f{i}", rule, state, {}, now)
        for i, (rule, state) in enumerate(
            [("orphaned", "open")] * 3 + [("orphaned", "excepted"), ("dormant", "resolved")]
        )
    ]
    with store.transaction() as tx:
        tx.put_govern(findings)
    with store.read() as tx:
        counts = tx.govern_counts("finding")
    registry = CollectorRegistry()
    gauges = FindingGauges(registry)
    severity_of = {"orphaned": "high", "dormant": "medium", "leaked": "critical"}
    gauges.set_from(counts, severity_of)

    def value(rule: str, state: str) -> float | None:
        labels = {"rule": rule, "severity": severity_of[rule], "state": state}
        result: float | None = registry.get_sample_value("tether_findings", labels)
        return result

    assert value("orphaned", "open") == 3
    assert value("orphaned", "excepted") == 1
    assert value("orphaned", "resolved") == 0
    assert value("dormant", "resolved") == 1
    assert value("leaked", "open") == 0  # a rule with no findings still shows, at 0

    gauges.set_from({("orphaned", "resolved"): 4}, severity_of)
    assert value("orphaned", "open") == 0
    assert value("orphaned", "resolved") == 4


def test_pending_gauge_per_sink(store: Store, tmp_path: Path) -> None:
    clock = SettableClock()
    outbox = _outbox(
        store,
        clock,
        [
            ConfiguredSink(JsonLinesSink("good", tmp_path / "a")),
            ConfiguredSink(JsonLinesSink("bad", tmp_path / "no-dir" / "a")),
        ],
    )
    _enqueue(store, outbox, _alert())
    _enqueue(store, outbox, _alert())
    registry = CollectorRegistry()
    gauges = FindingGauges(registry)
    gauges.set_pending(outbox.pending(), ["good", "bad"])
    assert registry.get_sample_value("tether_alerts_pending", {"sink": "good"}) == 2
    assert registry.get_sample_value("tether_alerts_pending", {"sink": "bad"}) == 2
    assert outbox.deliver_due() == 2
    gauges.set_pending(outbox.pending(), ["good", "bad"])
    assert registry.get_sample_value("tether_alerts_pending", {"sink": "good"}) == 0
    assert registry.get_sample_value("tether_alerts_pending", {"sink": "bad"}) == 2
