"""What a worker of a node needs from the process that keeps the node's root key."""

from __future__ import annotations

from typing import Protocol


class Custodian(Protocol):
    """The keeper of a node's root key for its workers: the supervisor of
    `tether serve --workers N`, reached over a private channel.

    It combines the shares (one rate limit and one audit trail for the node) and opens or
    seals every worker, the asking one included, before it answers.
    """

    def unseal(self, share: str, source: str) -> None:
        """Give one share from `source`; raises the barrier's error if it was refused."""

    def seal(self) -> None:
        """Seal the supervisor and every worker (this one has recorded `sys.seal`)."""

    def adopt(self, root_key: bytes) -> None:
        """This worker initialized the node and kept it open: the supervisor takes the
        key and opens every other worker with it."""
