"""The contract lives in one place: every protocol of the package is defined in
``persona_mw/types.py`` (issue 18), so reading that file tells the whole architecture."""

from __future__ import annotations

import ast
from pathlib import Path

import persona_mw.types

ROOT = Path(__file__).resolve().parents[1]


def _protocols(path: Path) -> list[str]:
    """Classes with a ``Protocol`` base, generic ones (``Protocol[T]``) included."""
    tree = ast.parse(path.read_text())
    return [
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(ast.unparse(base).partition("[")[0].endswith("Protocol") for base in node.bases)
    ]


def test_every_public_protocol_is_defined_in_types() -> None:
    """Private helper protocols (a leading underscore) may stay beside their one user."""
    elsewhere = {
        f"{path.relative_to(ROOT)}:{name}"
        for folder in ("persona_mw", "integrations")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "persona_mw" / "types.py"
        for name in _protocols(path)
        if not name.startswith("_")
    }
    assert not elsewhere


def test_types_exports_each_protocol() -> None:
    defined = set(_protocols(ROOT / "persona_mw" / "types.py"))
    assert defined <= set(persona_mw.types.__all__)
    assert {"Detector", "UsageStore", "ActionStateStore", "ProfileStore", "LLMClient"} <= defined
