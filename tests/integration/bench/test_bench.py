"""The benchmarks as a reader meets them: each runs with ``python -m bench.<name>`` (the goals they report:
``tests/unit/bench/test_bench.py``).

The figures themselves are measured on a quiet machine, never here.
"""

import subprocess
import sys

import pytest

from tests.helpers.bench_scripts import SCRIPTS
from tests.helpers.tracking import REPO


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_runs_as_a_module_from_the_repository_root(name):
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr[-1000:]
