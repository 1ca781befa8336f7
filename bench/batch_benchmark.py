"""Batch scoring benchmark: the pandas engine against the floor on the same file, and Spark.

It trains a champion with the real pipeline in a temporary store and, for each format,
writes a generated file of ``--rows`` rows (one in a thousand bad), a quarter of it and a
1,000-row one. On the large file it runs ``python -m steps.batch_predict`` (pandas engine)
and the floor (``python -m bench.batch_floor``: read with Arrow, ``predict_proba`` on
100,000-row blocks, write with Arrow, nothing else) one after the other, ``--rounds``
times, and takes the median of each: the ratio of the two is measured side by side. The
pandas engine also scores the quarter file, to show that its memory does not grow with the
file, and the small one, for the fixed cost; Spark (``local[*]``) scores the small and the
large file.

"command s" is the whole command (imports, the model's load, for Spark the JVM); "scoring
s" is what the job reports (checking, scoring, writing; the floor: reading, scoring,
writing) and gives rows/s. Peak memory is the largest resident set of the process tree
(Spark's JVM and Python workers included), sampled every 0.1 s. It ends with the goals,
each ``[met]`` or ``[missed]``; it measures and prints, and asserts nothing. From the
repository root:

    python -m bench.batch_benchmark [--rows 2000000] [--formats parquet,csv] [--engines pandas,spark] [--rounds 3]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench import options
from bench.goals import Goal, report
from bench.serving_benchmark import PeakRss
from bench.store import REPO, store_env, train
from iris_core.table.iris import IRIS

SMALL = 1_000
MODEL_URI = "models:/iris@champion"
# The goals of the performance issue, for the pandas engine on 2 cores.
RATE_GOALS = {"parquet": 1_000_000, "csv": 400_000}  # rows/s, each format to itself
FLOOR_RATIO_GOAL = 2.0
MEMORY_GROWTH_GOAL = 1.25  # peak on the whole file / peak on a quarter of it


@dataclass(frozen=True)
class Measurement:
    what: str  # "pandas", "spark" or "floor"
    file_format: str
    rows: int
    seconds: float  # the whole command
    scoring_seconds: float
    peak_rss_mb: float

    @property
    def rate(self) -> float:
        return self.rows / self.scoring_seconds


def write_input(path: Path, rows: int, seed: int = 0) -> Path:
    """Iris-like rows with an id; every 1,000th row has a negative fourth feature (a reject)."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 500_000):
        count = min(500_000, rows - start)
        values = np.round(rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(count, 4)), 2)
        ids = np.arange(start, start + count)
        values[ids % 1000 == 999, 3] = -1.0
        table = pa.table({"id": ids, **{name: values[:, i] for i, name in enumerate(IRIS.feature_names)}})
        if path.suffix == ".parquet":
            writer = writer or pq.ParquetWriter(path, table.schema)
        else:
            writer = writer or pacsv.CSVWriter(path, table.schema)
        writer.write_table(table)
    writer.close()
    return path


def row_count(source: Path) -> int:
    if source.suffix == ".parquet":
        return pq.ParquetFile(source).metadata.num_rows
    with open(source, "rb") as handle:
        return sum(1 for _ in handle) - 1


def measured(what: str, command: list[str], source: Path, log: Path, env: dict) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, output) of one command run from the repository root."""
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        with PeakRss({what: proc.pid}, interval=0.1) as rss:
            code = proc.wait(timeout=3600)
    seconds = time.perf_counter() - started
    if code != 0:
        raise click.ClickException(f"{what} on {source.name} failed (exit {code}); see {log}")
    return seconds, rss.peaks[what] / 2**20, log.read_text()


def run_engine(engine: str, source: Path, workdir: Path, env: dict, chunk_size: int) -> Measurement:
    output = workdir / f"{engine}-{source.stem}-out{source.suffix}"
    command = [sys.executable, "-m", "steps.batch_predict", "--input", str(source), "--output", str(output)]
    command += ["--engine", engine, "--chunk-size", str(chunk_size), "--model-uri", MODEL_URI, "--overwrite"]
    seconds, peak, text = measured(engine, command, source, workdir / f"{engine}-{source.stem}.log", env)
    took = re.search(r"^took ([\d.]+) s", text, re.MULTILINE)
    return Measurement(engine, source.suffix[1:], row_count(source), seconds, float(took.group(1)), peak)


def run_floor(source: Path, workdir: Path, env: dict) -> Measurement:
    output = workdir / f"floor-{source.stem}-out{source.suffix}"
    command = [sys.executable, "-m", "bench.batch_floor", "--input", str(source), "--output", str(output)]
    command += ["--model-uri", MODEL_URI]
    seconds, peak, text = measured("floor", command, source, workdir / f"floor-{source.stem}.log", env)
    figures = json.loads(text.strip().splitlines()[-1])
    return Measurement("floor", source.suffix[1:], figures["rows"], seconds, figures["seconds"], peak)


def median_of(runs: list[Measurement]) -> Measurement:
    middle = sorted(runs, key=lambda m: m.scoring_seconds)[len(runs) // 2]
    return Measurement(
        middle.what,
        middle.file_format,
        middle.rows,
        statistics.median(m.seconds for m in runs),
        middle.scoring_seconds,
        max(m.peak_rss_mb for m in runs),
    )


def row_line(m: Measurement, note: str = "") -> str:
    rate = f"{m.rate:,.0f}" if m.scoring_seconds > 0 else "-"
    return (
        f"| {m.what} | {m.file_format} | {m.rows:,} | {m.seconds:.1f} | {m.scoring_seconds:.3g} | {rate} "
        f"| {m.peak_rss_mb:.0f} | {note} |"
    )


def goals(results: dict[str, dict[str, Measurement]], quarters: dict[str, Measurement]) -> list[Goal]:
    """The issue's goals for the pandas engine, per format that was measured."""
    found = []
    for fmt, by_what in results.items():
        if "pandas" not in by_what:
            continue
        engine = by_what["pandas"]
        goal = RATE_GOALS[fmt]
        found.append(
            Goal(f"pandas {fmt} to {fmt} >= {goal:,} rows/s", engine.rate >= goal, f"{engine.rate:,.0f} rows/s")
        )
        if "floor" in by_what:
            ratio = engine.scoring_seconds / by_what["floor"].scoring_seconds
            found.append(
                Goal(
                    f"pandas {fmt} within {FLOOR_RATIO_GOAL:g}x of the floor on the same file",
                    ratio <= FLOOR_RATIO_GOAL,
                    f"{ratio:.2f}x ({by_what['floor'].rate:,.0f} rows/s floor)",
                )
            )
        if fmt in quarters:
            growth = engine.peak_rss_mb / quarters[fmt].peak_rss_mb
            found.append(
                Goal(
                    f"pandas {fmt} peak memory bounded by the chunk: whole file <= {MEMORY_GROWTH_GOAL:g}x a quarter",
                    growth <= MEMORY_GROWTH_GOAL,
                    f"{engine.peak_rss_mb:.0f} MB vs {quarters[fmt].peak_rss_mb:.0f} MB ({growth:.2f}x)",
                )
            )
    return found


@click.command(help="The pandas engine against the floor on the same file, Spark beside them, and the goals.")
@click.option("--rows", type=click.IntRange(min=SMALL), default=2_000_000, show_default=True)
@click.option("--formats", default="parquet,csv", show_default=True, help="Each format is scored to itself.")
@click.option("--engines", default="pandas,spark", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=100_000, show_default=True)
@options.rounds(3, "Engine/floor pairs per format.")
def main(rows, formats, engines, chunk_size, rounds):
    chosen_formats = [f.strip() for f in formats.split(",") if f.strip()]
    if unknown := set(chosen_formats) - set(RATE_GOALS):
        raise click.BadParameter(f"unknown format {', '.join(sorted(unknown))}", param_hint="--formats")
    chosen_engines = [e.strip() for e in engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        workdir = Path(tmp)
        env = store_env(workdir)
        click.echo(f"training a champion in {workdir} ...", err=True)
        train(workdir, env)
        lines, results, quarters, sizes = [], {}, {}, []
        for fmt in chosen_formats:
            click.echo(f"writing {rows:,} rows of {fmt} ...", err=True)
            big = write_input(workdir / f"big.{fmt}", rows)
            small = write_input(workdir / f"small.{fmt}", SMALL)
            quarter = write_input(workdir / f"quarter.{fmt}", max(SMALL, rows // 4))
            sizes.append(f"{big.stat().st_size / 2**20:.0f} MB {fmt}")
            results[fmt] = {}
            if "pandas" in chosen_engines:
                click.echo(f"pandas engine and floor on {fmt}, {rounds} round(s) ...", err=True)
                lines.append(row_line(run_engine("pandas", small, workdir, env, chunk_size), "fixed cost"))
                quarters[fmt] = run_engine("pandas", quarter, workdir, env, chunk_size)
                lines.append(row_line(quarters[fmt], "a quarter of the file"))
                pairs = [(run_engine("pandas", big, workdir, env, chunk_size), run_floor(big, workdir, env))]
                pairs += [
                    (run_engine("pandas", big, workdir, env, chunk_size), run_floor(big, workdir, env))
                    for _ in range(rounds - 1)
                ]
                results[fmt]["pandas"] = median_of([engine for engine, _ in pairs])
                results[fmt]["floor"] = median_of([floor for _, floor in pairs])
                ratio = results[fmt]["pandas"].scoring_seconds / results[fmt]["floor"].scoring_seconds
                lines.append(row_line(results[fmt]["pandas"], f"median of {rounds}; {ratio:.2f}x the floor"))
                lines.append(row_line(results[fmt]["floor"], f"median of {rounds}"))
            if "spark" in chosen_engines:
                click.echo(f"spark engine on {fmt} ...", err=True)
                lines.append(row_line(run_engine("spark", small, workdir, env, chunk_size), "fixed cost"))
                results[fmt]["spark"] = run_engine("spark", big, workdir, env, chunk_size)
                lines.append(row_line(results[fmt]["spark"]))
        click.echo("| run | format | rows | command s | scoring s | rows/s | peak MB | |")
        click.echo("|---|---|---|---|---|---|---|---|")
        click.echo("\n".join(lines))
        click.echo(f"files: {', '.join(sizes)}; chunk size {chunk_size:,}; {os.cpu_count()} cores")
        click.echo(report(goals(results, quarters)))


if __name__ == "__main__":
    main()
