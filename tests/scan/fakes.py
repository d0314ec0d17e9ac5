"""Fake secrets of every rule's format, new at each call (the corpus generator's)."""

from __future__ import annotations

import random
import secrets

from bench.scan_corpus import fake as _fake


def fake(rule_id: str) -> str:
    return _fake(rule_id, random.Random(secrets.randbits(64)))
