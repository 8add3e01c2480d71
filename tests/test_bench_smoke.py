"""The benchmark runs end to end on tiny sizes (its figures are not checked here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # runs the benchmark as a process


def test_bench_quick_runs_and_writes_the_table(database_url: str, tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, "IDP_BENCH_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = output.read_text()
    assert "| benchmark | ratio | target | verdict | measured |" in table
    for number in ("1a", "1b", "2 ", "3 ", "4 ", "5 ", "9 "):
        assert f"| {number}" in table
