"""Every script in examples/ runs to the end (in a scratch directory)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# minutes of MD each: run with -m slow
SLOW = {"md_raw_vs_symmetrized.py", "mts_nve.py"}


SCRIPTS = [
    pytest.param(script, id=script.stem, marks=[pytest.mark.slow] if script.name in SLOW else [])
    for script in sorted(EXAMPLES.glob("*.py"))
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stderr[-3000:]}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
