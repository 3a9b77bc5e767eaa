"""Docs that run: every ```python block in the README and docs/ is executed, so they cannot drift.

A block that cannot run here (it needs a real provider key, say) is preceded by a line
``<!-- not-run: why -->`` and is only compiled.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?P<marker><!-- not-run:[^>]*-->\s*\n)?(?P<indent>[ ]*)```python\n(?P<code>.*?)```", re.S
)


def _blocks() -> list[tuple[str, str, bool]]:
    found = []
    for doc in DOCS:
        for n, match in enumerate(BLOCK.finditer(doc.read_text()), 1):
            code = textwrap.dedent(match["code"])
            found.append((f"{doc.relative_to(ROOT)}#{n}", code, match["marker"] is None))
    return found


@pytest.mark.parametrize(("where", "code", "runnable"), _blocks(), ids=[b[0] for b in _blocks()])
def test_doc_block(where: str, code: str, runnable: bool, tmp_path: Path) -> None:
    compile(code, where, "exec")
    if not runnable:
        return
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PERSONA_MW_HASH_SECRET": "docs"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"


def test_readme_quick_start_prints_only_the_reply(tmp_path: Path) -> None:
    """The library's logs go to stderr while the application has not configured logging: the
    quick start's stdout is the two replies and nothing else (its logs are on stderr)."""
    where, code, _ = next(b for b in _blocks() if b[0].startswith("README.md"))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PERSONA_MW_HASH_SECRET": "docs"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    from persona_mw.bounds.policy import AIDisclosure

    # the first reply of the day carries the AI disclosure: it is part of the reply
    replies = {
        AIDisclosure().text,
        "Run `python -m cProfile -s cumtime app.py`.",
        "Try `tracemalloc`.",
    }
    printed = [line for line in result.stdout.splitlines() if line]
    assert set(printed) == replies and len(printed) == len(replies), (where, result.stdout)
    assert "request.completed" in result.stderr
