"""Git history and the index as Blobs, on real throwaway repositories: every added line
of every commit on every ref, at its line in that commit's file, with who and when."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tether.scan._git import iter_git_blobs, iter_staged_blobs
from tether.scan._model import Blob
from tether.scan.errors import ScanSourceError

AUTHOR = ("-c", "user.name=Ada Tester", "-c", "user.email=ada@example.test")


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither the developer's git config nor a hook's environment may leak into a test.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_CONFIG_PARAMETERS"):
        monkeypatch.delenv(var, raising=False)


def fake() -> str:
    return "fake_" + secrets.token_hex(16)


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._tick = 0
        path.mkdir(exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        date = f"2024-03-0{1 + self._tick % 9}T10:00:00+02:00"
        env = dict(os.environ, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        done = subprocess.run(
            ["git", "-C", str(self.path), *AUTHOR, *args],
            capture_output=True,
            check=True,
            env=env,
        )
        return done.stdout.decode().strip()

    def write(self, name: str, text: str | bytes) -> None:
        f = self.path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            f.write_text(text)
        else:
            f.write_bytes(text)

    def commit(self, message: str = "change") -> str:
        self._tick += 1
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def history(repo: Repo, since: str | None = None) -> list[Blob]:
    return list(iter_git_blobs(str(repo.path), since=since))


def found(blobs: list[Blob], needle: str) -> list[tuple[str, int, str | None]]:
    """(file, line, commit) of every added line holding `needle`."""
    out = []
    for b in blobs:
        assert b.lines is not None
        for text, number in zip(b.data.split(b"\n"), b.lines, strict=True):
            if needle.encode() in text:
                out.append((b.name, number, b.commit))
    return out


def lines(n: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i}\n" for i in range(1, n + 1))


def test_line_numbers_across_hunks_and_commits(repo: Repo) -> None:
    repo.write("app/settings.py", lines(20))
    first = repo.commit()
    s1, s2, s3 = fake(), fake(), fake()
    text = lines(20).splitlines()
    text[2] = f"TOKEN = '{s1}'"  # line 3, replaced
    text.insert(10, f"KEY = '{s2}'")  # line 11, inserted
    text.append(f"LAST = '{s3}'")  # line 22, appended
    repo.write("app/settings.py", "\n".join(text) + "\n")
    second = repo.commit()
    blobs = history(repo)
    assert found(blobs, s1) == [("app/settings.py", 3, second)]
    assert found(blobs, s2) == [("app/settings.py", 11, second)]
    assert found(blobs, s3) == [("app/settings.py", 22, second)]
    [blob] = [b for b in blobs if b.commit == second]
    assert blob.lines == (3, 11, 22)
    assert blob.data == f"TOKEN = '{s1}'\nKEY = '{s2}'\nLAST = '{s3}'".encode()
    [initial] = [b for b in blobs if b.commit == first]
    assert initial.lines == tuple(range(1, 21))


def test_commit_author_and_date(repo: Repo) -> None:
    secret = fake()
    repo.write("a.txt", secret + "\n")
    sha = repo.commit()
    [blob] = history(repo)
    assert len(sha) == 40
    assert blob.commit == sha
    assert blob.author == "Ada Tester <ada@example.test>"
    assert blob.date == "2024-03-02T10:00:00+02:00"


def test_a_secret_removed_later_is_still_found_at_the_commit_that_added_it(repo: Repo) -> None:
    secret = fake()
    repo.write("deploy.sh", f"#!/bin/sh\nexport PASSWORD={secret}\nrun\n")
    added = repo.commit("add")
    repo.write("deploy.sh", "#!/bin/sh\nexport PASSWORD=$PASSWORD\nrun\n")
    repo.commit("remove")
    (repo.path / "deploy.sh").unlink()
    repo.commit("delete the file")
    assert found(history(repo), secret) == [("deploy.sh", 2, added)]


def test_since_scans_only_what_came_after(repo: Repo) -> None:
    old, new = fake(), fake()
    repo.write("a.txt", old + "\n")
    base = repo.commit()
    repo.write("a.txt", old + "\n" + new + "\n")
    later = repo.commit()
    blobs = history(repo, since=base)
    assert found(blobs, new) == [("a.txt", 2, later)]
    assert found(blobs, old) == []
    # By name, too.
    repo.git("tag", "v1", base)
    assert found(history(repo, since="v1"), new) == [("a.txt", 2, later)]


def test_nothing_after_since_is_no_blobs(repo: Repo) -> None:
    repo.write("a.txt", "x\n")
    head = repo.commit()
    assert history(repo, since=head) == []
    assert history(repo, since="main") == []


def test_every_ref_is_scanned(repo: Repo) -> None:
    repo.write("a.txt", "x\n")
    repo.commit()
    repo.git("checkout", "-q", "-b", "feature")
    secret = fake()
    repo.write("feature.env", f"K={secret}\n")
    on_branch = repo.commit()
    repo.git("checkout", "-q", "main")
    tagged = fake()
    repo.git("checkout", "-q", "--detach")
    repo.write("t.txt", tagged + "\n")
    tag_commit = repo.commit()
    repo.git("tag", "only-a-tag")
    repo.git("checkout", "-q", "main")
    blobs = history(repo)
    assert found(blobs, secret) == [("feature.env", 1, on_branch)]
    assert found(blobs, tagged) == [("t.txt", 1, tag_commit)]


def test_odd_file_names(repo: Repo) -> None:
    names = [
        "dir with space/naïve résumé.txt",
        'a "quoted" name.txt',
        "tab\there.txt",
        "back\\slash.txt",
        "日本語.env",
    ]
    planted = {name: fake() for name in names}
    for name, secret in planted.items():
        repo.write(name, f"first\n{secret}\n")
    sha = repo.commit()
    blobs = history(repo)
    for name, secret in planted.items():
        assert found(blobs, secret) == [(name, 2, sha)]


def test_a_binary_file_is_skipped(repo: Repo) -> None:
    secret = fake()
    repo.write("blob.bin", b"\x00\x01\x02" + secret.encode() + b"\n")
    repo.write("text.txt", "x\n")
    repo.commit()
    blobs = history(repo)
    assert [b.name for b in blobs] == ["text.txt"]
    assert found(blobs, secret) == []


def test_content_that_looks_like_diff_syntax_is_content(repo: Repo) -> None:
    secret = fake()
    tricky = f"++ b/evil\n+++ b/other\n--- a/x\n@@ -1 +99 @@\ndiff --git a/x b/x\n\\ x\n{secret}\n"
    repo.write("patch.txt", tricky)
    sha = repo.commit()
    [blob] = history(repo)
    assert blob.name == "patch.txt"
    assert blob.data == tricky.rstrip("\n").encode()
    assert found([blob], secret) == [("patch.txt", 7, sha)]


def test_non_utf8_content_and_a_last_line_without_newline(repo: Repo) -> None:
    secret = fake()
    repo.write("latin1.txt", b"caf\xe9\n" + secret.encode())
    repo.commit()
    [blob] = history(repo)
    assert blob.data == b"caf\xe9\n" + secret.encode()
    assert blob.lines == (1, 2)


def test_a_rename_reports_only_the_changed_lines(repo: Repo) -> None:
    body = lines(30)
    repo.write("old/name.cfg", body)
    repo.commit()
    secret = fake()
    (repo.path / "old" / "name.cfg").unlink()
    repo.write("new/name.cfg", body.replace("line 17\n", f"s={secret}\n"))
    sha = repo.commit()
    blobs = [b for b in history(repo) if b.commit == sha]
    assert [(b.name, b.lines) for b in blobs] == [("new/name.cfg", (17,))]


def test_merges_report_only_what_the_merge_itself_wrote(repo: Repo) -> None:
    repo.write("f.txt", "a\nb\nc\n")
    repo.commit()
    repo.git("checkout", "-q", "-b", "topic")
    on_topic = fake()
    repo.write("f.txt", f"a\nb\nc\n{on_topic}\n")
    topic_commit = repo.commit()
    repo.git("checkout", "-q", "main")
    on_main = fake()
    repo.write("f.txt", f"{on_main}\na\nb\nc\n")
    main_commit = repo.commit()
    # A clean merge, then a resolution that adds a line neither side had.
    repo.git("merge", "-q", "--no-ff", "--no-commit", "topic")
    evil = fake()
    repo.write("f.txt", f"{on_main}\na\nb\n{evil}\nc\n{on_topic}\n")
    merge = repo.commit("merge")
    blobs = history(repo)
    assert found(blobs, on_topic) == [("f.txt", 4, topic_commit)]
    assert found(blobs, on_main) == [("f.txt", 1, main_commit)]
    assert found(blobs, evil) == [("f.txt", 4, merge)]


def test_an_empty_repository_has_no_blobs(repo: Repo) -> None:
    assert history(repo) == []
    assert list(iter_staged_blobs(str(repo.path))) == []


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ScanSourceError, match="not a git repository"):
        iter_git_blobs(str(tmp_path))
    with pytest.raises(ScanSourceError):
        iter_git_blobs(str(tmp_path / "missing"))


def test_an_unknown_revision(repo: Repo, tmp_path: Path) -> None:
    repo.write("a.txt", "x\n")
    repo.commit()
    with pytest.raises(ScanSourceError, match="unknown revision 'nope'"):
        iter_git_blobs(str(repo.path), since="nope")
    out = tmp_path / "written"
    with pytest.raises(ScanSourceError, match="not a revision"):
        iter_git_blobs(str(repo.path), since=f"--output={out}")
    assert not out.exists()


def test_stopping_early_ends_git(repo: Repo) -> None:
    # More output than the pipe and the reader's buffer hold: git cannot finish by itself.
    for n in range(12):
        repo.write(f"f{n}.txt", lines(25_000, prefix=f"file {n} line"))
        repo.commit()
    it = iter_git_blobs(str(repo.path))
    assert next(it).name == "f11.txt"
    assert git_children() != []
    it.close()  # type: ignore[attr-defined]
    assert git_children() == []


def git_children() -> list[str]:
    """Command lines of this process's git children, live or not yet reaped (/proc)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        pytest.skip("no /proc here to list child processes")
    pids = " ".join(p.read_text() for p in tasks.glob("*/children")).split()
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except FileNotFoundError:
            continue
    return [c for c in out if c == "git"]


# --- the index ------------------------------------------------------------------------


def test_staged_lines_with_their_numbers(repo: Repo) -> None:
    repo.write("app.env", lines(10))
    repo.commit()
    staged, unstaged = fake(), fake()
    text = lines(10).replace("line 4\n", f"TOKEN={staged}\n")
    repo.write("app.env", text)
    repo.write("new file.txt", f"{staged}\n")
    repo.git("add", "-A")
    repo.write("app.env", text + f"LATER={unstaged}\n")  # in the work tree only
    blobs = list(iter_staged_blobs(str(repo.path)))
    assert sorted(found(blobs, staged)) == [("app.env", 4, None), ("new file.txt", 1, None)]
    assert found(blobs, unstaged) == []
    assert all(b.author is None and b.date is None for b in blobs)


def test_staged_before_the_first_commit(repo: Repo) -> None:
    secret = fake()
    repo.write("first.txt", f"a\n{secret}\n")
    repo.git("add", "-A")
    assert found(list(iter_staged_blobs(str(repo.path))), secret) == [("first.txt", 2, None)]


def test_staged_honours_the_hook_index(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    # `git commit -a` runs hooks against a temporary index named by GIT_INDEX_FILE.
    repo.write("a.txt", "x\n")
    repo.commit()
    secret = fake()
    repo.write("a.txt", f"x\n{secret}\n")
    index = repo.path / ".git" / "hook-index"
    env = dict(os.environ, GIT_INDEX_FILE=str(index))
    subprocess.run(["git", "-C", str(repo.path), "read-tree", "HEAD"], env=env, check=True)
    subprocess.run(["git", "-C", str(repo.path), "add", "a.txt"], env=env, check=True)
    assert list(iter_staged_blobs(str(repo.path))) == []
    monkeypatch.setenv("GIT_INDEX_FILE", str(index))
    assert found(list(iter_staged_blobs(str(repo.path))), secret) == [("a.txt", 2, None)]
