"""How much the whole pipeline costs over the cheapest possible ``mlflow run``.

Goal (issue 2): ``mlflow run . --env-manager local`` of ``main`` on a fresh store takes at
most 2x a trivial ``mlflow run`` (an entry point that only imports mlflow and logs one
metric, bench/trivial_project) on a fresh store. Both are timed side by side, alternating,
each on its own new sqlite store, and the medians and their ratio are printed.

    python -m bench.pipeline_overhead [--repeats 3]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from bench.goals import Goal, report

REPO = Path(__file__).resolve().parents[1]
GOAL_RATIO = 2.0
MLFLOW = str(Path(sys.executable).parent / "mlflow")
PROJECTS = {"trivial": REPO / "bench" / "trivial_project", "pipeline": REPO}


def timed_run(project: Path) -> float:
    """Seconds for one ``mlflow run`` of the project's main entry point on a fresh store."""
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
        start = time.perf_counter()
        subprocess.run(
            [MLFLOW, "run", str(project), "--env-manager", "local"],
            cwd=store,
            env=env,
            check=True,
            capture_output=True,
            timeout=600,
        )
        return time.perf_counter() - start


@click.command()
@click.option("--repeats", default=3, show_default=True, help="Runs of each, alternated.")
def main(repeats):
    times = {name: [] for name in PROJECTS}
    for _ in range(repeats):
        for name, project in PROJECTS.items():
            times[name].append(timed_run(project))
    medians = {name: statistics.median(values) for name, values in times.items()}
    click.echo(f"{'run':<10}{'median s':>10}  all runs (s)")
    for name, values in times.items():
        click.echo(f"{name:<10}{medians[name]:>10.2f}  {', '.join(f'{v:.2f}' for v in values)}")
    ratio = medians["pipeline"] / medians["trivial"]
    click.echo(f"pipeline / trivial = {ratio:.2f} on {os.cpu_count()} cores")
    click.echo(report([Goal("pipeline <= 2x trivial", ratio <= GOAL_RATIO, f"{ratio:.2f}x")]))


if __name__ == "__main__":
    main()
