"""Counting use without a database write per operation.

Encryptions (and signatures, MACs, data keys: every use that makes something new under
a version) are counted by *reserving* blocks: a process takes `block` encryptions of a
version with one atomic store increment before it makes any of them, then hands them
out from memory. Every node's blocks are disjoint, a crash leaves its unused rest
counted, so the stored counter may run ahead of the encryptions made but never behind.
A block that reaches a version's usage limit is cut short at it; the next reservation
finds the version spent, and the caller rotates.

Everything else (decryptions, verifications, failures) is tallied in memory per key,
version, operation and principal, and written out by `flush` as one `key.usage` audit
entry per tally (and the decryption counters) in one transaction: the hot path costs no
audit write per operation. Denials are audited one by one, at once.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

_Version = tuple[str, int]


class _Block:
    __slots__ = ("end", "next", "spent")

    def __init__(self, next_: int, end: int, spent: bool) -> None:
        self.next = next_
        self.end = end
        self.spent = spent


class Reservations:
    """Encryption blocks per (key, version), reserved through `reserve(key, version, n)`
    (an atomic store increment returning the new total)."""

    def __init__(self, reserve: Callable[[str, int, int], int], block: int = 1024) -> None:
        if block < 1:
            raise ValueError("a block is of one encryption or more")
        self._reserve = reserve
        self._block = block
        self._lock = threading.Lock()
        self._blocks: dict[_Version, _Block] = {}
        self._reserving: dict[_Version, threading.Lock] = {}
        #: The newest total seen per version: what this process knows is counted.
        self._seen: dict[_Version, int] = {}

    def block_for(self, limit: int | None) -> int:
        # A small limit gets small blocks, so it is reached by encryptions, not by waste.
        if limit is None:
            return self._block
        return max(1, min(self._block, limit // 64))

    def take(self, key: str, version: int, limit: int | None) -> bool:
        """Count one encryption under (key, version): True if it may be made, False if
        the version has reached `limit` (the caller rotates)."""
        item = (key, version)
        while True:
            with self._lock:
                block = self._blocks.get(item)
                if block is not None:
                    if block.next < block.end:
                        block.next += 1
                        return True
                    if block.spent:
                        return False
                reserving = self._reserving.setdefault(item, threading.Lock())
            with reserving:
                with self._lock:
                    block = self._blocks.get(item)
                    if block is not None and (block.next < block.end or block.spent):
                        continue  # another thread refilled it meanwhile
                n = self.block_for(limit)
                end = self._reserve(key, version, n)
                start = end - n
                usable = end if limit is None else min(end, limit)
                with self._lock:
                    self._seen[item] = max(self._seen.get(item, 0), end)
                    self._blocks[item] = _Block(start, usable, spent=start >= usable)

    def seen(self, key: str, version: int) -> int:
        with self._lock:
            return self._seen.get((key, version), 0)

    def forget(self, key: str | None = None) -> None:
        """Drop blocks (of one key, or all): the rest of a dropped block stays counted."""
        with self._lock:
            for item in [i for i in self._blocks if key is None or i[0] == key]:
                del self._blocks[item]


@dataclass(slots=True)
class Tally:
    count: int
    failed: int
    first: dt.datetime
    last: dt.datetime


#: (key, version, operation, actor, identity_id, task_id, from_version)
TallyKey = tuple[str, int, str, str, str | None, str | None, int | None]


class UsageTally:
    """Per-process tallies of use, drained by the service's `flush_usage`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies: dict[TallyKey, Tally] = {}
        self._decryptions: dict[_Version, int] = {}
        self._users: dict[str, dict[str, dt.datetime]] = {}

    def add(self, item: TallyKey, at: dt.datetime, *, failed: bool = False, n: int = 1) -> int:
        """Count `n` uses; returns how many tallies are held (the caller flushes when many)."""
        with self._lock:
            tally = self._tallies.get(item)
            if tally is None:
                self._tallies[item] = Tally(0 if failed else n, n if failed else 0, at, at)
            else:
                if failed:
                    tally.failed += n
                else:
                    tally.count += n
                tally.last = at
            if not failed:
                key, version, operation, _actor, identity_id, _task, from_version = item
                if operation in ("decrypt", "verify") or (
                    operation == "rewrap" and from_version is not None
                ):
                    counted = (key, from_version if operation == "rewrap" else version)
                    assert counted[1] is not None
                    self._decryptions[(counted[0], counted[1])] = (
                        self._decryptions.get((counted[0], counted[1]), 0) + n
                    )
                if identity_id is not None:
                    self._users.setdefault(key, {})[identity_id] = at
            return len(self._tallies)

    def drain(
        self,
    ) -> tuple[dict[TallyKey, Tally], dict[_Version, int], dict[str, dict[str, dt.datetime]]]:
        with self._lock:
            out = (self._tallies, self._decryptions, self._users)
            self._tallies, self._decryptions, self._users = {}, {}, {}
            return out

    def restore(
        self,
        tallies: dict[TallyKey, Tally],
        decryptions: dict[_Version, int],
        users: dict[str, dict[str, dt.datetime]],
        cap: int,
    ) -> None:
        """Put a failed flush back, to be written next time (bounded by `cap` tallies)."""
        with self._lock:
            for item, tally in tallies.items():
                if len(self._tallies) >= cap and item not in self._tallies:
                    break
                held = self._tallies.get(item)
                if held is None:
                    self._tallies[item] = tally
                else:
                    held.count += tally.count
                    held.failed += tally.failed
                    held.first = min(held.first, tally.first)
                    held.last = max(held.last, tally.last)
            for version, n in decryptions.items():
                self._decryptions[version] = self._decryptions.get(version, 0) + n
            for key, seen in users.items():
                mine = self._users.setdefault(key, {})
                for identity_id, at in seen.items():
                    mine[identity_id] = max(at, mine.get(identity_id, at))

    def pending(self) -> int:
        with self._lock:
            return len(self._tallies)
