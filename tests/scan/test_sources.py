"""Files, trees and archives as Blobs: what a scan reads, under which name, from which
line, and what it leaves alone (binary, unreadable, bombs) without failing."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import secrets
import tarfile
import zipfile
from pathlib import Path

import pytest

from tether.scan._model import Blob
from tether.scan._sources import Skipped, iter_files, read_blobs, stdin_blob
from tether.scan.errors import ScanError, ScanSourceError


def fake() -> str:
    return "fake_" + secrets.token_hex(16)


def blobs(path: Path | str, display: str | None = None, **kw: object) -> list[Blob]:
    return list(read_blobs(str(path), display or str(path), **kw))  # type: ignore[arg-type]


def line_of(blobs_: list[Blob], needle: bytes) -> tuple[str, int]:
    """(blob name, 1-based line) of the first line holding `needle`, as a scanner would
    compute it from the Blob's first_line."""
    for b in blobs_:
        at = b.data.find(needle)
        if at != -1:
            return b.name, b.first_line + b.data.count(b"\n", 0, at)
    raise AssertionError(f"{needle!r} not in any blob")


def tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as t:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


# --- iter_files -----------------------------------------------------------------------


def make_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a\n")
    (root / "src" / "pkg" / "b.py").write_text("b\n")
    (root / "README").write_text("r\n")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")


def test_iter_files_walks_a_tree_in_a_stable_order_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    listed = list(iter_files(["."]))
    assert [d for _, d in listed] == ["README", "src/a.py", "src/pkg/b.py"]
    for fs, display in listed:
        assert Path(fs).read_bytes() == Path(display).read_bytes()
    assert list(iter_files(["."])) == listed


def test_iter_files_display_names_follow_what_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert [d for _, d in iter_files(["./src/a.py"])] == ["src/a.py"]
    assert [d for _, d in iter_files(["./src/"])] == ["src/a.py", "src/pkg/b.py"]
    absolute = [d for _, d in iter_files([str(tmp_path / "src")])]
    assert absolute == [str(tmp_path / "src" / "a.py"), str(tmp_path / "src" / "pkg" / "b.py")]


def test_iter_files_does_not_follow_symlinks_inside_a_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(fake())
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "real.txt").write_text("x\n")
    (tree / "linked_dir").symlink_to(outside, target_is_directory=True)
    (tree / "out_link.txt").symlink_to(outside / "secret.txt")
    (tree / "in_link.txt").symlink_to(tree / "real.txt")
    skipped: list[Skipped] = []
    listed = [d for _, d in iter_files([str(tree)], skipped=skipped)]
    assert listed == [str(tree / "real.txt")]
    assert Skipped(str(tree / "out_link.txt"), "symlink-outside") in skipped
    assert Skipped(str(tree / "linked_dir"), "symlink-outside") in skipped
    assert all("in_link" not in s.name for s in skipped)


def test_iter_files_takes_a_path_given_directly_even_a_link(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("x\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert [d for _, d in iter_files([str(tmp_path / "link.txt")])] == [str(tmp_path / "link.txt")]


def test_iter_files_names_a_missing_path_before_listing_anything(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("x\n")
    missing = str(tmp_path / "nope")
    with pytest.raises(ScanSourceError, match="nope") as e:
        iter_files([str(tmp_path / "here.txt"), missing])
    assert isinstance(e.value, ScanError)
    assert e.value.code == "scan_source_error"


# --- plain files ----------------------------------------------------------------------


def test_a_file_is_one_blob(tmp_path: Path) -> None:
    secret = fake()
    f = tmp_path / "config.env"
    f.write_text(f"A=1\nTOKEN={secret}\n")
    [blob] = blobs(f, "config.env")
    assert blob.name == "config.env"
    assert blob.data == f.read_bytes()
    assert blob.first_line == 1
    assert blob.commit is None
    assert line_of([blob], secret.encode()) == ("config.env", 2)


def test_a_large_file_is_chunked_at_newlines_with_its_line_numbers(tmp_path: Path) -> None:
    planted = {n: fake() for n in (1, 7, 333, 999, 1000)}
    lines = [f"line {n} " + ("x" * (n % 50)) for n in range(1, 1001)]
    for n, s in planted.items():
        lines[n - 1] = f"key={s}"
    f = tmp_path / "big.log"
    f.write_text("\n".join(lines) + "\n")
    got = blobs(f, "big.log", chunk_bytes=1000)
    assert len(got) > 20
    assert b"".join(b.data for b in got) == f.read_bytes()
    line = 1
    for b in got:
        assert b.first_line == line
        assert len(b.data) <= 1000
        assert b.data.endswith(b"\n")
        line += b.data.count(b"\n")
    for n, s in planted.items():
        assert line_of(got, s.encode()) == ("big.log", n)


def test_a_line_longer_than_a_chunk_is_cut_and_keeps_its_line_number(tmp_path: Path) -> None:
    f = tmp_path / "min.js"
    f.write_bytes(b"first\n" + b"y" * 2500 + b"\nlast\n")
    got = blobs(f, chunk_bytes=1000)
    assert b"".join(b.data for b in got) == f.read_bytes()
    assert all(len(b.data) <= 1000 for b in got)
    assert line_of(got, b"last") == (str(f), 3)
    assert got[0].data == b"first\n"
    assert [b.first_line for b in got if b"y" in b.data] == [2, 2, 2]


def test_an_empty_file_is_one_empty_blob(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert [b.data for b in blobs(tmp_path / "empty")] == [b""]


def test_a_binary_file_is_skipped_and_recorded(tmp_path: Path) -> None:
    f = tmp_path / "image.png"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + fake().encode())
    skipped: list[Skipped] = []
    assert blobs(f, "image.png", skipped=skipped) == []
    assert skipped == [Skipped("image.png", "binary")]
    # Also when the file is past a chunk and read in pieces.
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x00" + b"a\n" * 1000)
    assert blobs(big, chunk_bytes=100) == []


def test_a_text_file_named_like_an_archive_is_read_as_text(tmp_path: Path) -> None:
    f = tmp_path / "notes.zip"
    f.write_text("just text\n")
    assert [b.data for b in blobs(f)] == [b"just text\n"]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads a file whatever its mode, so chmod 000 cannot make it unreadable",
)
def test_an_unreadable_file_is_skipped_and_recorded(tmp_path: Path) -> None:
    f = tmp_path / "locked.txt"
    f.write_text(fake())
    f.chmod(0)
    try:
        skipped: list[Skipped] = []
        assert blobs(f, "locked.txt", skipped=skipped) == []
        assert skipped == [Skipped("locked.txt", "unreadable")]
    finally:
        f.chmod(0o600)


def test_a_file_that_vanished_is_skipped_and_recorded(tmp_path: Path) -> None:
    skipped: list[Skipped] = []
    assert blobs(tmp_path / "gone.txt", "gone.txt", skipped=skipped) == []
    assert skipped == [Skipped("gone.txt", "unreadable")]


def test_stdin_is_one_blob_named_dash() -> None:
    data = f"x\n{fake()}\n".encode()
    blob = stdin_blob(io.BytesIO(data))
    assert (blob.name, blob.data, blob.first_line) == ("-", data, 1)


# --- archives -------------------------------------------------------------------------


def test_zip_members_are_blobs_and_binary_members_are_skipped(tmp_path: Path) -> None:
    secret = fake()
    f = tmp_path / "logs.zip"
    f.write_bytes(
        zip_bytes(
            {
                "app/one.log": b"ok\n",
                "app/two.log": f"a\nb\npassword={secret}\n".encode(),
                "app/": b"",
                "blob.bin": b"\x00\x01" + secret.encode(),
            }
        )
    )
    skipped: list[Skipped] = []
    got = blobs(f, "logs.zip", skipped=skipped)
    assert [b.name for b in got] == ["logs.zip!app/one.log", "logs.zip!app/two.log"]
    assert line_of(got, secret.encode()) == ("logs.zip!app/two.log", 3)
    assert skipped == [Skipped("logs.zip!blob.bin", "binary")]


def test_tar_gz_with_a_nested_archive_one_level_deep(tmp_path: Path) -> None:
    top, inner, deepest = fake(), fake(), fake()
    innermost = zip_bytes({"deep.txt": deepest.encode()})
    inner_zip = zip_bytes({"conf/inner.env": f"\nX={inner}\n".encode(), "z.zip": innermost})
    outer = tar_bytes(
        {"./etc/app.conf": f"k={top}\n".encode(), "bundle/inner.zip": inner_zip}, "w:gz"
    )
    f = tmp_path / "backup.tar.gz"
    f.write_bytes(outer)
    skipped: list[Skipped] = []
    got = blobs(f, "backup.tar.gz", skipped=skipped)
    assert line_of(got, top.encode()) == ("backup.tar.gz!etc/app.conf", 1)
    assert line_of(got, inner.encode()) == ("backup.tar.gz!bundle/inner.zip!conf/inner.env", 2)
    assert not any(deepest.encode() in b.data for b in got)
    assert skipped == [Skipped("backup.tar.gz!bundle/inner.zip!z.zip", "nested-archive")]


@pytest.mark.parametrize(
    ("suffix", "mode"), [(".tar", "w"), (".tar.bz2", "w:bz2"), (".txz", "w:xz")]
)
def test_other_tar_flavours(tmp_path: Path, suffix: str, mode: str) -> None:
    secret = fake()
    f = tmp_path / f"a{suffix}"
    f.write_bytes(tar_bytes({"x/y.txt": f"1\n2\n{secret}\n".encode()}, mode))
    assert line_of(blobs(f, f.name), secret.encode()) == (f"{f.name}!x/y.txt", 3)


@pytest.mark.parametrize(
    ("name", "compress", "member"),
    [
        ("app.log.gz", gzip.compress, "app.log"),
        ("app.log.bz2", bz2.compress, "app.log"),
        ("app.log.xz", lzma.compress, "app.log"),
        ("rotated", gzip.compress, "rotated"),
    ],
)
def test_a_single_compressed_file(tmp_path: Path, name: str, compress: object, member: str) -> None:
    secret = fake()
    f = tmp_path / name
    f.write_bytes(compress(f"a\nb\nc\nd={secret}\n".encode()))  # type: ignore[operator]
    got = blobs(f, f"logs/{name}")
    assert line_of(got, secret.encode()) == (f"logs/{name}!{member}", 4)


def test_an_archive_member_larger_than_a_chunk_keeps_line_numbers(tmp_path: Path) -> None:
    secret = fake()
    lines = [f"row {n}" for n in range(1, 2001)]
    lines[1499] = f"token={secret}"
    f = tmp_path / "big.log.gz"
    f.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    got = blobs(f, "big.log.gz", chunk_bytes=500)
    assert len(got) > 10
    assert line_of(got, secret.encode()) == ("big.log.gz!big.log", 1500)


def test_a_large_archive_is_read_from_the_file(tmp_path: Path) -> None:
    # Past chunk_bytes the archive is opened on the file itself (zip seeks in it).
    secret = fake()
    noise = os.urandom(4000).hex().encode()
    f = tmp_path / "big.zip"
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        z.writestr("noise.txt", noise)
        z.writestr("s.txt", secret.encode())
    got = blobs(f, "big.zip", chunk_bytes=1024)
    assert line_of(got, secret.encode()) == ("big.zip!s.txt", 1)


def test_a_zip_bomb_stops_at_the_byte_budget(tmp_path: Path) -> None:
    secret = fake()
    # 64 MiB of text that deflates to well under 1 MiB, after a member worth finding.
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("first.txt", f"{secret}\n".encode())
        z.writestr("bomb.txt", b"a" * (64 << 20))
        z.writestr("after.txt", b"never read\n")
    assert (tmp_path / "bomb.zip").stat().st_size < 1 << 20
    skipped: list[Skipped] = []
    got = blobs(tmp_path / "bomb.zip", "bomb.zip", max_archive_bytes=4 << 20, skipped=skipped)
    assert line_of(got, secret.encode()) == ("bomb.zip!first.txt", 1)
    assert sum(len(b.data) for b in got) <= 4 << 20
    assert not any(b.name.endswith("after.txt") for b in got)
    assert skipped == [Skipped("bomb.zip", "archive-limit")]


def test_a_gzip_bomb_stops_at_the_byte_budget(tmp_path: Path) -> None:
    f = tmp_path / "huge.log.gz"
    f.write_bytes(gzip.compress(b"b\n" * (16 << 20)))
    skipped: list[Skipped] = []
    got = blobs(f, "huge.log.gz", max_archive_bytes=1 << 20, skipped=skipped)
    assert sum(len(b.data) for b in got) <= 1 << 20
    assert skipped == [Skipped("huge.log.gz", "archive-limit")]


def test_the_member_count_is_capped(tmp_path: Path) -> None:
    f = tmp_path / "many.zip"
    f.write_bytes(zip_bytes({f"m{n:03}.txt": b"x\n" for n in range(50)}))
    skipped: list[Skipped] = []
    got = blobs(f, "many.zip", max_members=10, skipped=skipped)
    assert len(got) == 10
    assert skipped == [Skipped("many.zip", "archive-limit")]


def test_a_corrupt_archive_is_skipped_not_raised(tmp_path: Path) -> None:
    f = tmp_path / "broken.zip"
    f.write_bytes(b"PK\x03\x04" + os.urandom(200))
    g = tmp_path / "broken.gz"
    g.write_bytes(b"\x1f\x8b" + os.urandom(200))
    skipped: list[Skipped] = []
    assert blobs(f, "broken.zip", skipped=skipped) == []
    assert blobs(g, "broken.gz", skipped=skipped) == []
    assert skipped == [Skipped("broken.zip", "bad-archive"), Skipped("broken.gz", "bad-archive")]


def test_an_encrypted_zip_member_is_skipped(tmp_path: Path) -> None:
    f = tmp_path / "enc.zip"
    f.write_bytes(zip_bytes({"plain.txt": b"hello\n", "locked.txt": b"x\n"}))
    # zipfile cannot write encrypted members: set the flag bit in both of its headers.
    data = bytearray(f.read_bytes())
    for sig, flag_at, name_len_at, name_at in (
        (b"PK\x03\x04", 6, 26, 30),
        (b"PK\x01\x02", 8, 28, 46),
    ):
        at = data.find(sig)
        while at != -1:
            n = int.from_bytes(data[at + name_len_at : at + name_len_at + 2], "little")
            if data[at + name_at : at + name_at + n] == b"locked.txt":
                data[at + flag_at] |= 1
            at = data.find(sig, at + 4)
    f.write_bytes(bytes(data))
    skipped: list[Skipped] = []
    got = blobs(f, "enc.zip", skipped=skipped)
    assert [b.name for b in got] == ["enc.zip!plain.txt"]
    assert skipped == [Skipped("enc.zip!locked.txt", "encrypted")]
