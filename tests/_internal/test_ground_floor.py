"""`tether._internal` is the ground floor: it imports nothing above it.

Every feature package may use `_internal`; if `_internal` imported a feature package
back, the layers would form a cycle and the ground floor would carry feature code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tether._internal

INTERNAL = Path(tether._internal.__file__).parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the package itself
                base = "tether._internal" if node.level == 1 else "tether"
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def test_nothing_in_internal_imports_a_feature_package() -> None:
    modules = sorted(INTERNAL.rglob("*.py"))
    assert modules, "no modules found under tether/_internal"
    upward = [
        f"{path.relative_to(INTERNAL.parent)}:{line}: imports {module}"
        for path in modules
        for line, module in _imported_modules(path)
        if (module == "tether" or module.startswith("tether."))
        and not (module == "tether._internal" or module.startswith("tether._internal."))
    ]
    assert upward == []


def test_the_walk_sees_an_upward_import(tmp_path: Path) -> None:
    """The check above would catch the import it exists for (`_internal.logs` once
    imported `tether.auth.tokens`), in each spelling."""
    module = tmp_path / "m.py"
    module.write_text(
        "from tether.auth.tokens import TOKEN_PATTERN\nimport tether.lease\nfrom .. import audit\n"
    )
    assert [name for _, name in _imported_modules(module)] == [
        "tether.auth.tokens",
        "tether.lease",
        "tether",
    ]
