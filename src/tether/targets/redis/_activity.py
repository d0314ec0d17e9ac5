"""Usage evidence from Redis: live clients (`CLIENT LIST`) of Tether's per-lease users and
of given static users, and which users can still log in (`ACL GETUSER`).

The calls run through the provider's admin connection and error translation; these
functions only send the commands and read the answers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis

from tether.providers import OBJECT_PREFIX
from tether.targets._sessions import LOCAL_SOURCE, TargetSession


def client_list(r: redis.Redis) -> tuple[str, list[dict[str, Any]]]:
    """Our own client id and every client, over one connection (a pipeline), so our own
    connection can be told apart from the others."""
    with r.pipeline(transaction=False) as pipe:
        pipe.client_id()
        pipe.client_list()
        own, clients = pipe.execute()
    return str(own), list(clients)


def sessions_of(
    target: str,
    clients: Sequence[Mapping[str, Any]],
    *,
    own_id: str,
    admin: str,
    static_users: Collection[str],
    now: dt.datetime,
    lease_id_of: Callable[[str], str | None],
) -> list[TargetSession]:
    """The clients of prefixed users (never the admin) and of `static_users`.

    Redis reports a client's age in whole seconds and no start time, so `started_at` is
    `now` minus the age, on this side's clock (precise to a second or so)."""
    wanted = set(static_users)
    sessions = []
    for client in clients:
        user = str(client.get("user", ""))
        if str(client.get("id")) == own_id or not user:
            continue
        prefixed = user.startswith(OBJECT_PREFIX) and user != admin
        if not prefixed and user not in wanted:
            continue
        age = str(client.get("age", ""))
        name = str(client.get("name", ""))
        sessions.append(
            TargetSession(
                target=target,
                user=user,
                lease_id=lease_id_of(user) if prefixed else None,
                application=name or None,
                source=_source(client),
                started_at=now - dt.timedelta(seconds=int(age)) if age.isdigit() else None,
            )
        )
    sessions.sort(key=lambda s: (s.user, s.started_at or now))
    return sessions


def _source(client: Mapping[str, Any]) -> str | None:
    """The client's address without its port: `addr` is `ip:port`, `[ip6]:port` or, on a
    Unix socket, `path:0` with the `U` flag."""
    addr = str(client.get("addr", ""))
    if "U" in str(client.get("flags", "")) or addr.startswith("/"):
        return LOCAL_SOURCE
    host = addr.rpartition(":")[0]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or None


def usable_users(r: redis.Redis, users: Collection[str]) -> set[str]:
    """The users among `users` that exist, are `on`, and can authenticate: they have a
    password or are `nopass` (an `on` user with neither cannot log in)."""
    names = sorted(users)
    with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.acl_getuser(name)
        answers = pipe.execute()
    usable = set()
    for name, info in zip(names, answers, strict=True):
        if not isinstance(info, Mapping):
            continue  # no such user
        flags = info.get("flags") or []
        if "on" in flags and ("nopass" in flags or info.get("passwords")):
            usable.add(name)
    return usable
