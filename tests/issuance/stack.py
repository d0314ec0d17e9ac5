"""Issuance and the lease service of a real node and store, on a clock the test moves."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

from tether.app import Tether
from tether.config import Settings
from tether.issuance import IssuanceService
from tether.lease import LeaseService


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Stack:
    """A node's store, audit, estate view and policy; its issuance and leases on `clock`."""

    def __init__(self, home: Path, database_url: str, now: dt.datetime) -> None:
        self.node = Tether(Settings(home=home, database_url=database_url))
        self.node.initialize(1, 1)
        self.clock = Clock(now)
        parts = self.node.issuance.parts
        node = self.node
        self.leases = LeaseService(node.store, node.audit, parts.providers, clock=self.clock)
        self.issuance = IssuanceService(replace(parts, leases=self.leases, clock=self.clock))

    def close(self) -> None:
        self.node.stop()
