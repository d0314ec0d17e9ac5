"""Which profile a token request is for: by audience or resource, else the one the
identity is entitled to."""

from __future__ import annotations

from tether.estate import EstateView
from tether.issuance.errors import InvalidRequest, InvalidTarget
from tether.model import Identity, Profile
from tether.providers import JWT_TOKEN_TYPE

#: Profiles issued by the token endpoint; database and cache credentials go through /v1/creds.
EXCHANGE_PROVIDERS = frozenset({"jwt", "token"})


def _candidates(view: EstateView, wanted: list[str], entitled: set[str]) -> list[Profile]:
    if wanted:
        return [p for p in view.profiles.values() if any(w in (p.audience, p.id) for w in wanted)]
    candidates = [
        view.profiles[p]
        for p in entitled
        if p in view.profiles and view.profiles[p].provider in EXCHANGE_PROVIDERS
    ]
    if len(candidates) != 1:
        raise InvalidRequest("audience or resource is required to choose what to issue")
    return candidates


def select_profile(
    view: EstateView,
    identity: Identity,
    wanted: list[str],
    requested_token_type: str | None,
) -> Profile:
    """The profile `wanted` (audiences or resources, possibly none) names for `identity`."""
    entitled = {e.profile_id for e in identity.entitlements}
    candidates = _candidates(view, wanted, entitled)
    if requested_token_type == JWT_TOKEN_TYPE:
        candidates = [p for p in candidates if p.provider == "jwt"]
    if not candidates:
        raise InvalidTarget(f"no profile serves {' / '.join(wanted)}")
    mine = [p for p in candidates if p.id in entitled]
    if len(mine) > 1:
        raise InvalidTarget(
            "several entitled profiles match: name one by "
            "its id as audience (" + ", ".join(sorted(p.id for p in mine)) + ")"
        )
    profile = mine[0] if mine else candidates[0]
    if profile.provider not in EXCHANGE_PROVIDERS:
        raise InvalidTarget(
            f"profile {profile.id} ({profile.provider}) is "
            "issued through /v1/creds, not the token endpoint"
        )
    return profile
