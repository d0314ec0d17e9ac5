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
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tether._internal.timeutil import format_time
from tether._internal.tokens import is_well_formed, token_hash
from tether.audit import AuditLog
from tether.auth import TokenService
from tether.errors import TetherError
from tether.govern import Governance
from tether.lease import LeaseService
from tether.model import AuditEvent, Lease, LeaseState
from tether.scan._engine import Scanner
from tether.scan._model import MAX_SECRET, Blob, Location, Managed, ScanFinding, redacted
from tether.scan._rules import DEFAULT_RULES
from tether.static import StaticCredential, StaticSecrets
from tether.store import Store, Tx

log = logging.getLogger("tether.scan")

#: The providers of the built-in rules: an unmanaged match of these is a shadow NHI.
_PROVIDERS = {rule.id: rule.provider for rule in DEFAULT_RULES if rule.provider}


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
    #: The owner of an identity of the estate, or None.
    owner_of: Callable[[str], str | None]
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
    #: The identity a matched token (not a lease) stands for.
    identity_id: str | None = None


class Exposures:
    def __init__(self, parts: ExposureParts) -> None:
        self._p = parts

    def fingerprint(self, secret: str) -> str:
        return fingerprint(fingerprint_key(self._p.token_key()), secret)

    def report(
        self, reports: Sequence[Reported], *, source: str, actor: str, respond: bool = True
    ) -> list[ScanFinding]:
        """Match each reported secret and, unless `respond` is False, end what matched
        and still works. The answer is in the order of `reports`; one that could not be
        ended says `action: "failed"` (with an alert), and the others are still done."""
        key = self._p.token_key()
        shown_key = fingerprint_key(key)
        statics = self._p.statics.all()
        out: list[ScanFinding] = []
        matched = 0
        for report in reports:
            secret = report.secret[:MAX_SECRET]
            match = self._match(secret, token_hash(key, secret), statics)
            finding = ScanFinding(
                rule=report.rule,
                location=report.location,
                fingerprint=fingerprint(shown_key, secret),
                redacted=redacted(secret),
                managed=None if match is None else match.managed,
            )
            if match is not None:
                matched += 1
                action = self._exposed(finding, match, source, actor, respond=respond)
                if action == "rotated":
                    statics = self._p.statics.all()  # the versions changed
                finding = replace(finding, action=action)
            elif respond:
                # The server's own reading of the secret decides, not the reporter's label.
                provider = _PROVIDERS.get(classify(secret))
                if provider is not None and provider != "tether":
                    self._shadow(finding, provider, source, actor)
            out.append(finding)
        self._audit_report(source, actor, len(reports), matched, respond)
        return out

    def _audit_report(
        self, source: str, actor: str, count: int, matched: int, respond: bool
    ) -> None:
        """Every report is evidence, matched or not: who asked about how many secrets."""
        with self._p.store.transaction() as tx:
            self._p.audit.append(
                tx,
                [
                    AuditEvent(
                        action="exposure.report",
                        actor=actor,
                        details={
                            "source": source,
                            "secrets": count,
                            "matched": matched,
                            "respond": respond,
                        },
                    )
                ],
            )

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
                    found = self._token(tx, digest, now)
                    if found is not None:
                        return found
            else:
                claims = self._p.jwt_claims(secret) if secret.startswith("eyJ") else None
                if claims is not None:
                    lease = tx.get_lease(str(claims["jti"]))
                else:
                    lease = tx.lease_by_token_hash(digest)  # a target lease's password
            if lease is not None:
                return _Match(_lease_managed(lease, now), lease=lease)
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

    def _token(self, tx: Tx, digest: str, now: dt.datetime) -> _Match | None:
        """An API token or a join token by its keyed hash."""
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
        if joining is None:
            return None
        valid = joining.used_at is None and joining.expires_at > now
        return _Match(
            Managed(
                identity=joining.identity_id,
                owner=self._p.owner_of(joining.identity_id) or joining.created_by,
                valid=valid,
                credential=f"join-token:{joining.id}",
            ),
            join_token=digest if valid else None,
            identity_id=joining.identity_id,
        )

    # -- responding --
    def _exposed(
        self, finding: ScanFinding, match: _Match, source: str, actor: str, *, respond: bool
    ) -> str | None:
        """Record the exposure and end the credential: "revoked", "rotated", "failed",
        or None (a dry run, or a credential that no longer works: nothing to end and
        nothing new to record)."""
        if not match.managed.valid:
            return None
        now = self._p.clock()
        exposure_id = f"exp_{secrets.token_hex(8)}"
        evidence = _evidence(finding, source, exposure_id)
        where = _where(finding.location)
        if respond and match.static is not None:
            # Outside a transaction (the target's password changes): rotate first, then
            # the record links it; the rotation's reason names the exposure already.
            try:
                self._p.statics.exposed(match.static.id, f"{exposure_id} at {where}", actor)
                action = "rotated"
            except TetherError:
                log.exception("rotating an exposed secret failed", extra={"exposure": exposure_id})
                action = "failed"
            with self._p.store.transaction() as tx:
                event = _exposure_event(finding, match, evidence, actor, action)
                self._p.audit.append(tx, [event])
                self._p.govern.resolve_shadow(tx, finding.fingerprint, actor)
            return action
        with self._p.store.transaction() as tx:
            ended = self._end_in(tx, match, evidence, actor, now) if respond else None
            event = _exposure_event(finding, match, evidence, actor, ended)
            self._p.audit.append(tx, [event], now)
            self._p.govern.resolve_shadow(tx, finding.fingerprint, actor)
        return ended

    def _end_in(
        self, tx: Tx, match: _Match, evidence: Mapping[str, Any], actor: str, now: dt.datetime
    ) -> str:
        trigger = {"kind": "exposure", "at": format_time(now), "exposure": evidence["exposure"]}
        reason = f"exposed: {_where_json(evidence['location'])}"
        if match.lease is not None:
            self._p.govern.exposed_lease(tx, match.lease, evidence, actor)
            self._p.leases.revoke_leases_in(tx, [match.lease], reason, actor, trigger=trigger)
        elif match.api_token is not None:
            self._p.tokens.revoke_in(tx, match.api_token, actor, {"trigger": trigger})
        elif match.join_token is not None:
            tx.consume_join_token(match.join_token, now)
        return "revoked"

    def _shadow(self, finding: ScanFinding, provider: str, source: str, actor: str) -> None:
        with self._p.store.transaction() as tx:
            self._p.govern.shadow(
                tx,
                finding.rule,
                {
                    "provider": provider,
                    "fingerprint": finding.fingerprint,
                    "redacted": finding.redacted,
                    "source": source,
                    "location": finding.location.to_json(),
                },
                actor,
            )


def _lease_managed(lease: Lease, now: dt.datetime) -> Managed:
    valid = lease.state is LeaseState.ACTIVE and lease.expires_at > now
    return Managed(
        identity=lease.identity_id,
        owner=lease.owner_id,
        valid=valid,
        lease=lease.id,
    )


def _where(location: Location) -> str:
    return _where_json(location.to_json())


def _where_json(location: Mapping[str, Any]) -> str:
    at = f"{location['file']}:{location['line']}"
    commit = location.get("commit")
    return f"{at} in commit {str(commit)[:12]}" if commit else at


def _evidence(finding: ScanFinding, source: str, exposure_id: str) -> dict[str, Any]:
    return {
        "exposure": exposure_id,
        "rule": finding.rule,
        "fingerprint": finding.fingerprint,
        "source": source,
        "location": finding.location.to_json(),
    }


def _exposure_event(
    finding: ScanFinding,
    match: _Match,
    evidence: Mapping[str, Any],
    actor: str,
    action: str | None,
) -> AuditEvent:
    managed = match.managed
    lease = match.lease
    return AuditEvent(
        action="exposure.detected",
        actor=actor,
        result="alert",
        identity_id=lease.identity_id if lease else match.identity_id,
        owner_id=(
            lease.owner_id
            if lease
            else match.static.owner_id
            if match.static
            else managed.owner
            if match.identity_id
            else None
        ),
        task_id=lease.task_id if lease else None,
        reason=f"{finding.rule} found at {_where(finding.location)}",
        details={
            **evidence,
            "lease_id": managed.lease,
            "credential": managed.credential,
            "valid": managed.valid,
            "response": action,
        },
    )
