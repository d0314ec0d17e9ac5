"""The kinds of event on the change feed, and how the lease service publishes ended
leases (in chunks: one event's JSON stays small however many leases a revocation ends)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tether.model import Lease, LeaseState
from tether.store import Tx

#: An estate apply committed: {"version": int}. Nodes reload their estate view (and with
#: it the policy set and the attestor's issuers).
ESTATE_APPLIED: Final = "estate.applied"
#: {"token_id": str}. Nodes drop their cache of verified API tokens.
API_TOKEN_REVOKED: Final = "api_token.revoked"  # noqa: S105 - a kind, not a secret
#: {"token_id": str}. Nothing is cached for an unknown token today; published so a node
#: that starts caching refusals has its invalidation already.
API_TOKEN_CREATED: Final = "api_token.created"  # noqa: S105 - a kind, not a secret
#: {"kids": [str]}. Nodes reload the signing keys (or forget them, sealed).
SIGNING_KEYS_CHANGED: Final = "signing_keys.changed"
#: {"term": int | None}. Nodes re-read the keyring.
KEYRING_ROTATED: Final = "keyring.rotated"
#: {"name": str}: a target's stored connection was replaced (or its admin credential
#: rotated). Nodes drop the provider they built from the old one.
TARGET_CHANGED: Final = "target.changed"
#: {"lease_ids": [str], "revoking": bool}. Nodes add the ids to their ended leases; with
#: `revoking` (an external revocation is due), the leader's sweep wakes.
LEASES_ENDED: Final = "leases.ended"

#: {"identities": [str]} or {"all": true}: what governance knows of these identities
#: changed (usage flushed, an exception or a review decision). The leader re-evaluates.
GOVERN_CHANGED: Final = "govern.changed"
#: Identity ids per `govern.changed` event.
GOVERN_CHUNK = 1000


def publish_govern_changed(tx: Tx, identity_ids: Sequence[str]) -> None:
    """Publish, in `tx`, that these identities need evaluating again (in chunks)."""
    named = sorted(set(identity_ids))
    for start in range(0, len(named), GOVERN_CHUNK):
        tx.publish(GOVERN_CHANGED, {"identities": named[start : start + GOVERN_CHUNK]})


#: Lease ids per `leases.ended` event.
ENDED_CHUNK = 1000


def publish_ended(tx: Tx, ended: Sequence[Lease]) -> None:
    """Publish, in `tx`, that these leases ended (after the audit append: see Tx.publish)."""
    for start in range(0, len(ended), ENDED_CHUNK):
        chunk = ended[start : start + ENDED_CHUNK]
        tx.publish(
            LEASES_ENDED,
            {
                "lease_ids": [lease.id for lease in chunk],
                "revoking": any(lease.state is LeaseState.REVOKING for lease in chunk),
            },
        )
