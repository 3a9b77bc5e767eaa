"""The pipeline benchmark still runs (it is not a timed test; nothing here checks a figure).

It wires the stages by hand (a last-message-only input check beside the real one), so a change
of a stage's signature breaks it without breaking any test: it happened twice. A handful of
calls is enough to run every variant once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("bare", "empty", "lastonly", "full", "unmetered", "history", "nocache")


@pytest.mark.parametrize("heap", [[], ["--frozen-heap"]], ids=["live-heap", "frozen-heap"])
def test_bench_pipeline_runs_every_variant(heap: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_pipeline.py", "--calls", "3", "--rounds", "1", *heap],
        cwd=ROOT,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line[:2] == "| "}
    assert set(VARIANTS) <= rows, result.stdout
    assert "cached (in-process hit)" in rows
