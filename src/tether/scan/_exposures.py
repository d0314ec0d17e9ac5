"""Exposures: a found secret tied to what Tether manages, and ended.

A reported secret (from `tether scan`, a partner alert or GitHub's secret scanning) is
hashed under the barrier's token key, which is how Tether stores every credential it
holds: opaque tokens, task, API and join tokens, the passwords of target leases and the
versions of static secrets. Tether's own JWTs are matched by signature and `jti`, expired
ones too. A match is an exposure: a live lease is revoked with everything derived from
it (sessions included), a static secret is rotated with no overlap, an API token is
revoked and a join token used up, in the request, and each step is in the audit trail,
linked by the exposure's id. A secret of a known provider that matches nothing is a
shadow NHI finding. The secret itself is never stored or logged: only its fingerprint
(a keyed hash that cannot be compared with the stored ones) and a redacted prefix.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether._internal.timeutil import format_time
from tether._internal.tokens import is_well_formed, token_hash
from tether.audit import AuditLog
from tether.auth import TokenService
from tether.govern import Governance
from tether.lease import LeaseService
from tether.model import AuditEvent, Lease, LeaseState
from tether.scan._engine import Scanner
from tether.scan._model import Blob, Location, Managed, ScanFinding, redacted
from tether.scan._rules import DEFAULT_RULES
from tether.static import StaticCredential, StaticSecrets
from tether.store import Store, Tx

#: The providers of the built-in rules: an unmanaged match of these is a shadow NHI.
_PROVIDERS = {rule.id: rule.provider for rule in DEFAULT_RULES if rule.provider}
_MAX_SECRET = 16 * 1024


_classifier: Scanner | None = None
_classifier_lock = threading.Lock()


def classify(secret: str) -> str:
    """The rule a secret reported without one (a partner's alert) is of, or "unknown"."""
    global _classifier  # noqa: PLW0603 - built once per process, on first use
    with _classifier_lock:
        if _classifier is None:
            _classifier = Scanner()
        found = _classifier.scan_blob(Blob("-", secret.encode("utf-8", "replace")))
    return next(
        (d.rule for d in found if d.secret == secret), found[0].rule if found else "unknown"
    )


def fingerprint_key(token_key: bytes) -> bytes:
    """The key of the fingerprints reports show: derived from the token key but not it,
    so a published fingerprint (SARIF, a ticket) says nothing about the stored hashes."""
    return hmac.new(token_key, b"tether/scan/fingerprint", hashlib.sha256).digest()


def fingerprint(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Reported:
    """One secret someone reports: which rule found it, and where."""

    rule: str
    secret: str = field(repr=False)
    location: Location


@dataclass(frozen=True, slots=True)
class ExposureParts:
    store: Store
    audit: AuditLog
    leases: LeaseService
    statics: StaticSecrets
    tokens: TokenService
    govern: Governance
    #: Claims of a JWT Tether signed, expired or not; None if it did not sign it.
    jwt_claims: Callable[[str], Mapping[str, Any] | None]
    token_key: Callable[[], bytes]
    clock: Callable[[], dt.datetime]


@dataclass(frozen=True, slots=True)
class _Match:
    managed: Managed
    lease: Lease | None = None
    static: StaticCredential | None = None
    version: int = 0
    api_token: str | None = None
    #: The keyed hash of a join token still usable.
    join_token: str | None = None


class Exposures:
    def __init__(self, parts: ExposureParts) -> None:
        self._p = parts

    def fingerprint(self, secret: str) -> str:
        return fingerprint(fingerprint_key(self._p.token_key()), secret)

    def report(
        self, reports: Sequence[Reported], *, source: str, actor: str, respond: bool = True
    ) -> list[ScanFinding]:
        """Match each reported secret and, unless `respond` is False, end what matched.
        The answer is in the order of `reports`."""
        key = self._p.token_key()
        shown_key = fingerprint_key(key)
        statics = self._p.statics.all()
        out: list[ScanFinding] = []
        for report in reports:
            secret = report.secret[:_MAX_SECRET]
            shown = fingerprint(shown_key, secret)
            match = self._match(secret, token_hash(key, secret), statics)
            finding = ScanFinding(
                rule=report.rule,
                location=report.location,
                fingerprint=shown,
                redacted=redacted(secret),
                managed=None if match is None else match.managed,
            )
            if match is not None:
                action = self._exposed(finding, match, source, actor, respond=respond)
                if action is not None:
                    statics = self._p.statics.all()  # a rotation changed the versions
                finding = ScanFinding(
                    finding.rule,
                    finding.location,
                    finding.fingerprint,
                    finding.redacted,
                    match.managed,
                    action,
                )
            elif respond and _PROVIDERS.get(report.rule) not in (None, "tether"):
                self._shadow(finding, source, actor)
            out.append(finding)
        return out

    # -- matching --
    def _match(
        self, secret: str, digest: str, statics: Sequence[StaticCredential]
    ) -> _Match | None:
        now = self._p.clock()
        with self._p.store.read() as tx:
            lease: Lease | None = None
            if is_well_formed(secret):
                lease = tx.lease_by_token_hash(digest)
                if lease is None:
                    record = tx.api_token_by_hash(digest)
                    if record is not None:
                        valid = record.revoked_at is None and (
                            record.expires_at is None or record.expires_at > now
                        )
                        return _Match(
                            Managed(
                                identity=f"api-token:{record.name}",
                                owner=record.created_by,
                                valid=valid,
                                credential=f"api-token:{record.id}",
                            ),
                            api_token=record.id if valid else None,
                        )
                    joining = tx.join_token_by_hash(digest)
                    if joining is not None:
                        valid = joining.used_at is None and joining.expires_at > now
                        return _Match(
                            Managed(
                                identity=joining.identity_id,
                                owner=joining.created_by,
                                valid=valid,
                                credential=f"join-token:{joining.id}",
                            ),
                            join_token=digest if valid else None,
                        )
            elif secret.startswith("eyJ"):
                claims = self._p.jwt_claims(secret)
                if claims is not None:
                    lease = tx.get_lease(str(claims["jti"]))
            else:
                lease = tx.lease_by_token_hash(digest)  # a target lease's password
            if lease is not None:
                return _Match(_lease_managed(tx, lease, now), lease=lease)
        for credential in statics:
            for version in credential.versions:
                if hmac.compare_digest(version.fingerprint, digest):
                    valid = version.state in ("current", "previous")
                    return _Match(
                        Managed(
                            identity=",".join(credential.readers),
                            owner=credential.owner_id,
                            valid=valid,
                            credential=f"{credential.id}@v{version.number}",
                        ),
                        static=credential,
                        version=version.number,
                    )
        return None

    # -- responding --
    def _exposed(
        self, finding: ScanFinding, match: _Match, source: str, actor: str, *, respond: bool
    ) -> str | None:
        """Record the exposure and end the credential; what was done ("revoked",
        "rotated") or None (dry run, or it was no longer valid)."""
        now = self._p.clock()
        exposure_id = f"exp_{secrets.token_hex(8)}"
        evidence = _evidence(finding, source, exposure_id)
        act = respond and match.managed.valid
        lease = match.lease
        with self._p.store.transaction() as tx:
            self._p.audit.append(tx, [_exposure_event(finding, match, evidence, actor, act)], now)
            if not respond:
                return None
            if act and match.join_token is not None:
                tx.consume_join_token(match.join_token, now)
                return "revoked"
            if lease is not None:
                self._p.govern.exposed_lease(tx, lease, evidence, actor)
                if act:
                    self._p.leases.revoke_leases_in(
                        tx,
                        [lease],
                        f"exposed: {_where(finding.location)}",
                        actor,
                        trigger={
                            "kind": "exposure",
                            "at": format_time(now),
                            "exposure": exposure_id,
                        },
                    )
                    return "revoked"
                return None
        if not act:
            return None
        if match.static is not None:
            self._p.statics.exposed(
                match.static.id, f"{exposure_id} at {_where(finding.location)}", actor
            )
            return "rotated"
        if match.api_token is not None:
            self._p.tokens.revoke(match.api_token, actor)
            return "revoked"
        return None

    def _shadow(self, finding: ScanFinding, source: str, actor: str) -> None:
        with self._p.store.transaction() as tx:
            self._p.govern.shadow(
                tx,
                finding.rule,
                {
                    "provider": _PROVIDERS[finding.rule],
                    "fingerprint": finding.fingerprint,
                    "redacted": finding.redacted,
                    "source": source,
                    "location": finding.location.to_json(),
                },
                actor,
            )


def _lease_managed(tx: Tx, lease: Lease, now: dt.datetime) -> Managed:
    valid = lease.state is LeaseState.ACTIVE and lease.expires_at > now
    return Managed(
        identity=lease.identity_id,
        owner=lease.owner_id,
        valid=valid,
        lease=lease.id,
    )


def _where(location: Location) -> str:
    at = f"{location.file}:{location.line}"
    return f"{at} in commit {location.commit[:12]}" if location.commit else at


def _evidence(finding: ScanFinding, source: str, exposure_id: str) -> dict[str, Any]:
    return {
        "exposure": exposure_id,
        "rule": finding.rule,
        "fingerprint": finding.fingerprint,
        "source": source,
        "location": finding.location.to_json(),
    }


def _exposure_event(
    finding: ScanFinding, match: _Match, evidence: Mapping[str, Any], actor: str, act: bool
) -> AuditEvent:
    managed = match.managed
    return AuditEvent(
        action="exposure.detected",
        actor=actor,
        result="alert",
        identity_id=match.lease.identity_id if match.lease else None,
        owner_id=(
            match.lease.owner_id if match.lease else match.static.owner_id if match.static else None
        ),
        task_id=match.lease.task_id if match.lease else None,
        reason=f"{finding.rule} found at {_where(finding.location)}",
        details={
            **evidence,
            "lease_id": managed.lease,
            "credential": managed.credential,
            "valid": managed.valid,
            "response": ("rotate" if match.static is not None else "revoke") if act else None,
        },
    )
