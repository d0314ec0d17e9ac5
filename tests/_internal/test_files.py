"""Private files (the dev-mode unseal key and root token): owner-only, no symlinks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tether._internal.files import write_private_file


def test_a_private_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dev-root-token"
    write_private_file(path, b"first")
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rewriting_replaces_the_contents_and_tightens_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"a much longer old content")
    path.chmod(0o644)
    write_private_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_symlink_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    link = tmp_path / "key"
    link.symlink_to(elsewhere)
    with pytest.raises(OSError):
        write_private_file(link, b"secret")
    assert elsewhere.read_bytes() == b"untouched"
