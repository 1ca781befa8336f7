"""The README's "Your own data and models", as written: the line that writes wine.csv, then the pipeline on it.

The walk-through (``tests/integration/docs/test_readme.py``) runs only the project's own commands, so it
cannot write the wine table first; this runs the section's every line in order, in a fresh
clone with MLflow's default store, as a reader types them, and checks what the README shows.
"""

import subprocess

import pytest

from tests.helpers.readme import README, fresh_clone, new_user_env, section_blocks

pytestmark = pytest.mark.slow

SECTION = "Your own data and models"


def test_the_readme_section_trains_and_promotes_wine_as_it_shows(tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    env = new_user_env()
    ran = []
    for language, lines in section_blocks(README, SECTION):
        for line in lines:
            if language == "bash" and line.strip():
                typed, shown = line, None
            elif language == "console" and line.startswith("$ "):
                typed = line[2:]
                shown = lines[lines.index(line) + 1 :]
            else:
                continue
            done = subprocess.run(
                ["bash", "-c", typed], cwd=clone, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, (typed, done.stderr[-2000:])
            ran.append(typed)
            if shown is not None:
                assert done.stdout.splitlines() == shown, typed
    assert len(ran) == 2 and "wine.csv" in ran[0] and ran[1].startswith("mlflow run .")
    assert (clone / "mlflow.db").exists()
