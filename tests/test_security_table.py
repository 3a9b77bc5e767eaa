"""docs/security.md's "Enforcement paths" table names the test for each path: every test and
test file it names exists, so the table cannot point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table() -> str:
    text = (ROOT / "docs" / "security.md").read_text()
    start = text.index("## Enforcement paths")
    return text[start : text.index("\n## ", start + 1)]


def _defined_tests() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.update(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    return names


def test_every_test_the_table_names_exists() -> None:
    table = _table()
    cited = set(re.findall(r"`[^`]*?(?:::)?(test_\w+)`", table))
    files = set(re.findall(r"`(tests/[\w/]+\.py)", table))
    assert len(cited) > 20 and files
    assert sorted(cited - _defined_tests()) == []
    assert sorted(f for f in files if not (ROOT / f).is_file()) == []
