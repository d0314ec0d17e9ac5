"""Where alerts go: a signed webhook or a JSON-lines file, as the estate's
`governance.sinks` names them.

A sink delivers one alert or raises `SinkError`; the outbox (`_outbox.py`) keeps the
alert pending and tries again later. Error messages name the sink, the HTTP status or the
error class, never the key, the URL (it may carry a token) or the alert.

Webhook signatures: the body is the alert as canonical JSON; the receiver recomputes
`HMAC-SHA256(key, "<X-Tether-Timestamp>.<body>")` and compares it with
`X-Tether-Signature: sha256=<hex>`, rejects stale timestamps, and dedupes on
`X-Tether-Delivery` (the same alert may arrive twice after a crash). The key is never in
the estate (an estate is reviewed in the open): the composition root supplies it per sink,
normally `sink_key_from(barrier token key, sink id)`, which an admin can read to configure
the receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tether._internal.canonical import canonical_json
from tether._internal.ids import is_safe_id
from tether.govern.errors import GovernError, SinkError
from tether.model import Severity

__all__ = [
    "SINK_KINDS",
    "AlertSink",
    "ConfiguredSink",
    "InvalidSink",
    "JsonLinesSink",
    "SinkConfig",
    "SinkError",
    "Sinks",
    "WebhookSink",
    "build_sink",
    "meets",
    "parse_sinks",
    "sign",
    "sink_key_from",
]

SINK_KINDS = ("webhook", "jsonl")
#: The header names a receiver reads.
TIMESTAMP_HEADER = "X-Tether-Timestamp"
SIGNATURE_HEADER = "X-Tether-Signature"
DELIVERY_HEADER = "X-Tether-Delivery"

KeyFor = Callable[[str], bytes | None]

log = logging.getLogger("tether.govern.alerts")


class InvalidSink(GovernError):
    """A `governance.sinks` entry that cannot be used; the message names the field."""

    status_code = 422
    code = "invalid_sink"


class AlertSink(Protocol):
    @property
    def id(self) -> str: ...

    def deliver(self, alert: Mapping[str, Any]) -> None:
        """Deliver one alert or raise `SinkError`."""


def meets(severity: object, min_severity: Severity) -> bool:
    """Whether an alert of `severity` goes to a sink taking `min_severity` and up.

    An alert without a known severity goes everywhere: filtering it out would silence
    it, and an alert nobody sees is worse than one too many."""
    try:
        rank = Severity(str(severity)).rank
    except ValueError:
        return True
    return rank >= min_severity.rank


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Tether-Signature` value of `body` sent at `timestamp`."""
    digest = hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sink_key_from(barrier_token_key: Callable[[], bytes], sink_id: str) -> bytes:
    """The signing key of one sink, derived from the barrier's token key: stable across
    restarts and nodes, different per sink, and never stored."""
    return hmac.new(
        barrier_token_key(), b"tether/sink/" + sink_id.encode("utf-8"), hashlib.sha256
    ).digest()


def _body(alert: Mapping[str, Any]) -> bytes:
    return canonical_json(dict(alert)).encode("utf-8")


class WebhookSink:
    """POSTs each alert, signed, to `url`. Any answer but 2xx is a failure."""

    def __init__(
        self,
        id: str,
        url: str,
        key: bytes | None,
        timeout: float = 5.0,
        *,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self._id = id
        self._url = url
        self._key = key
        self._timeout = timeout
        # Wall time, not the service clock: the receiver checks freshness against its own.
        self._unix_time = unix_time

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:  # never the key, never the URL (it may carry a token)
        return f"WebhookSink(id={self._id!r})"

    def deliver(self, alert: Mapping[str, Any]) -> None:
        if self._key is None:
            raise SinkError(f"no signing key registered for sink {self._id}")
        body = _body(alert)
        timestamp = str(int(self._unix_time()))
        delivery = alert.get("id")
        if not isinstance(delivery, str) or not delivery:
            # Still something to dedupe on: the same alert always hashes the same.
            delivery = hashlib.sha256(body).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tether-alerts",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._key, timestamp, body),
            DELIVERY_HEADER: delivery,
        }
        import httpx  # on first delivery, not at a node's start

        try:
            response = httpx.post(
                self._url,
                content=body,
                headers=headers,
                timeout=self._timeout,
                # A redirect would resend a signed alert somewhere the estate never named.
                follow_redirects=False,
            )
        except Exception as exc:  # transport, TLS, a URL httpx refuses: all mean "not now"
            raise SinkError(f"webhook sink {self._id}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise SinkError(f"webhook sink {self._id} answered HTTP {response.status_code}")


class JsonLinesSink:
    """Appends each alert as one line of canonical JSON, synced to disk before returning:
    for a SIEM agent tailing a file, or for an air-gapped site."""

    def __init__(self, id: str, path: str | os.PathLike[str]) -> None:
        self._id = id
        self._path = Path(path)
        # One line per write() even with several threads: the lock keeps lines whole.
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"JsonLinesSink(id={self._id!r})"

    def deliver(self, alert: Mapping[str, Any]) -> None:
        line = _body(alert) + b"\n"
        # Alerts name identities and owners: the file is its owner's only. No symlink
        # following, so a planted link cannot redirect alerts elsewhere.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        with self._lock:
            try:
                fd = os.open(self._path, flags, 0o600)
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise SinkError(f"jsonl sink {self._id}: {type(exc).__name__}") from None


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One `governance.sinks` entry."""

    id: str
    kind: str
    url: str | None = None
    path: str | None = None
    min_severity: Severity = Severity.LOW

    @classmethod
    def parse(cls, spec: Mapping[str, Any], where: str = "governance.sinks[0]") -> SinkConfig:
        if not isinstance(spec, Mapping):
            raise InvalidSink(f"{where}: expected a mapping")
        unknown = sorted(set(spec) - {"id", "kind", "url", "path", "min_severity"})
        if unknown:
            raise InvalidSink(f"{where}.{unknown[0]}: unknown field")
        sink_id = spec.get("id")
        if not is_safe_id(sink_id):
            raise InvalidSink(f"{where}.id: expected an id")
        kind = spec.get("kind")
        if kind not in SINK_KINDS:
            raise InvalidSink(f"{where}.kind: expected one of {', '.join(SINK_KINDS)}")
        needed = "url" if kind == "webhook" else "path"
        value = spec.get(needed)
        if not isinstance(value, str) or not value:
            raise InvalidSink(f"{where}.{needed}: is required for a {kind} sink")
        if kind == "webhook" and not value.startswith(("https://", "http://")):
            raise InvalidSink(f"{where}.url: expected an http:// or https:// URL")
        try:
            min_severity = Severity(spec.get("min_severity", "low"))
        except ValueError:
            names = ", ".join(s.value for s in Severity)
            raise InvalidSink(f"{where}.min_severity: expected one of {names}") from None
        return cls(
            id=str(sink_id),
            kind=str(kind),
            url=value if kind == "webhook" else None,
            path=value if kind == "jsonl" else None,
            min_severity=min_severity,
        )


def parse_sinks(section: Sequence[Mapping[str, Any]]) -> tuple[SinkConfig, ...]:
    """The `governance.sinks` list; sink ids are unique."""
    configs: list[SinkConfig] = []
    seen: set[str] = set()
    for i, spec in enumerate(section):
        config = SinkConfig.parse(spec, f"governance.sinks[{i}]")
        if config.id in seen:
            raise InvalidSink(f"governance.sinks[{i}].id: duplicate id {config.id!r}")
        seen.add(config.id)
        configs.append(config)
    return tuple(configs)


@dataclass(frozen=True, slots=True)
class ConfiguredSink:
    """A sink and the least severity it takes."""

    sink: AlertSink
    min_severity: Severity = Severity.LOW


def build_sink(config: SinkConfig, key_for: KeyFor) -> AlertSink:
    if config.kind == "webhook":
        assert config.url is not None
        return WebhookSink(config.id, config.url, key_for(config.id))
    assert config.path is not None
    return JsonLinesSink(config.id, config.path)


class Sinks:
    """The sinks the estate names now, for `AlertOutbox(sinks=...)`: built again only
    when the section or a key changes (a key is None while the barrier is sealed)."""

    def __init__(self, section: Callable[[], Sequence[Mapping[str, Any]]], key_for: KeyFor) -> None:
        self._section = section
        self._key_for = key_for
        self._lock = threading.Lock()
        self._built: tuple[object, tuple[ConfiguredSink, ...]] | None = None

    def __call__(self) -> Sequence[ConfiguredSink]:
        configs = self._configs(self._section())
        keys = {c.id: self._key_for(c.id) for c in configs if c.kind == "webhook"}
        # Compared, never printed: the keys stay in memory only.
        state = (configs, keys)
        with self._lock:
            if self._built is None or self._built[0] != state:
                built = tuple(
                    ConfiguredSink(build_sink(c, keys.get), c.min_severity) for c in configs
                )
                self._built = (state, built)
            return self._built[1]

    @staticmethod
    def _configs(section: Sequence[Mapping[str, Any]]) -> tuple[SinkConfig, ...]:
        # The estate was checked when it was applied (parse_sinks); this runs inside the
        # transaction that raises an alert, where an error would undo a finding. An entry
        # that is somehow bad is skipped, loudly, and the others still get their alerts.
        configs: dict[str, SinkConfig] = {}
        for i, spec in enumerate(section):
            try:
                config = SinkConfig.parse(spec, f"governance.sinks[{i}]")
            except InvalidSink as exc:
                log.error("alert sink skipped: %s", exc)
                continue
            configs.setdefault(config.id, config)
        return tuple(configs.values())
