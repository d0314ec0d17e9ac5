"""The registry of target kinds is the only place a kind is named.

The rule this test enforces, for every module of `src/tether`: a string literal that
names a registered target kind (`postgres`, `redis`, ...), the static credential kind it
serves (`postgres-static`) or one of its DSN schemes (`postgresql://`, `rediss://`, ...)
appears only inside that kind's own package (the package that declares its TargetKind,
e.g. `tether/targets/postgres/`). A name counts when it stands as a word of the literal,
so `"^(postgres|redis)$"` and `f"{kind} needs ..."`'s constant parts are checked too;
docstrings are not code and are skipped. One exception: `tether/store` may spell
`postgresql://` and `postgres://`, because those are Tether's *own* database URLs, not
a target's.

So a new kind is its package plus one line in the registry, and nothing else in Tether
has to learn its name.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import tether
from tether.targets import TARGET_KINDS, TargetKind

SRC = Path(tether.__file__).parent
#: Tether's own database is PostgreSQL (or SQLite): its URLs are not a target's.
OWN_DATABASE = SRC / "store"


def _home(kind: TargetKind) -> Path:
    """The package that declares the kind (where its provider factory is defined)."""
    module = sys.modules[kind.provider.__module__]
    assert module.__file__ is not None
    return Path(module.__file__).parent


def _words(kind: TargetKind) -> list[str]:
    names = [kind.name] + ([kind.static_kind] if kind.static_kind else [])
    schemes = [scheme.removesuffix("://") for scheme in kind.dsn_schemes]
    return names + [s for s in schemes if s not in names]


def _pattern(words: list[str]) -> re.Pattern[str]:
    # A word: not part of a longer identifier, a dotted name (`tether.targets.postgres`
    # is a module path, not a kind) or a hyphenated one (`postgres-static` vs `postgres`).
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w-]|\.\w)")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _literals(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _offences(root: Path) -> list[str]:
    found = []
    kinds = list(TARGET_KINDS.values())
    for path in sorted(root.rglob("*.py")):
        for kind in kinds:
            if path.is_relative_to(_home(kind)):
                continue
            words = _words(kind)
            if path.is_relative_to(OWN_DATABASE):
                words = [w for w in words if w not in ("postgresql", "postgres")]
            if not words:
                continue
            pattern = _pattern(words)
            for line, text in _literals(path):
                if pattern.search(text):
                    where = path.relative_to(root.parent)
                    found.append(f"{where}:{line}: {text!r} names kind {kind.name}")
    return found


def test_only_the_kind_packages_name_a_target_kind() -> None:
    assert _offences(SRC) == []


def test_the_rule_catches_a_kind_named_elsewhere(tmp_path: Path) -> None:
    # The check itself, on the shapes main once had: a mapping of kinds in the
    # composition root, a choice list in the CLI, a regex in a request body.
    root = tmp_path / "tether"
    root.mkdir()
    (root / "app.py").write_text(
        '"""Docstrings may say postgres."""\n'
        '_TARGET_KINDS = {"postgres": 1, "redis": 2}\n'
        'PATTERN = "^(static|postgres-static)$"\n'
        'DSN = ("rediss://", "redis://")\n'
        'LOGGER = "tether.targets.postgres"\n'
    )
    offences = _offences(root)
    assert sorted(o.split(": ", 1)[0] for o in offences) == [
        "tether/app.py:2",  # postgres
        "tether/app.py:2",  # redis
        "tether/app.py:3",  # postgres-static
        "tether/app.py:4",  # rediss://
        "tether/app.py:4",  # redis://
    ]
