"""Batch scoring benchmark: rows per second and peak memory of the pandas and spark engines.

It trains a champion with the real pipeline in a temporary store, writes a generated file
of ``--rows`` rows (one in a thousand bad), and runs ``python -m steps.batch_predict`` on
it once per engine, one engine at a time, after a 1,000-row file that shows the fixed
cost. "command s" is the whole command (imports, for Spark the JVM start); "scoring s" is
what the job reports (model load, checks, scoring, writing) and gives rows/s. Peak memory is
the largest resident set of the whole process tree (the JVM and Spark's Python workers
included), sampled every 0.1 s; the pandas engine also scores a quarter of the file, to
show that its memory does not grow with the file. It measures and prints; it asserts
nothing. Run from the repository root:

    python -m bench.batch_benchmark [--rows 2000000] [--format csv|parquet] [--engines pandas,spark]
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.serving_benchmark import PeakRss
from bench.store import REPO, store_env, train
from iris_core.schema import FEATURES

SMALL = 1_000


@dataclass(frozen=True)
class Measurement:
    engine: str
    rows: int
    seconds: float  # the whole command
    scoring_seconds: float  # what the job reports: model load, checks, scoring, writing
    peak_rss_mb: float


def write_input(path: Path, rows: int, seed: int = 0) -> Path:
    """Iris-like rows with an id; every 1,000th row has a negative petal width (a reject)."""
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 500_000):
        count = min(500_000, rows - start)
        values = np.round(rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(count, 4)), 2)
        ids = np.arange(start, start + count)
        values[ids % 1000 == 999, 3] = -1.0
        table = pa.table({"id": ids, **{name: values[:, i] for i, name in enumerate(FEATURES)}})
        if path.suffix == ".parquet":
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        else:
            import pyarrow.csv as pacsv

            writer = writer or pacsv.CSVWriter(path, table.schema)
            writer.write_table(table)
    writer.close()
    return path


def run_engine(engine: str, source: Path, workdir: Path, env: dict, chunk_size: int) -> Measurement:
    output = workdir / f"{engine}-{source.stem}-out{source.suffix}"
    command = [
        sys.executable,
        "-m",
        "steps.batch_predict",
        "--input",
        str(source),
        "--output",
        str(output),
        "--engine",
        engine,
        "--chunk-size",
        str(chunk_size),
    ]
    started = time.perf_counter()
    with open(workdir / f"{engine}-{source.stem}.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        with PeakRss({engine: proc.pid}, interval=0.1) as rss:
            code = proc.wait(timeout=3600)
    seconds = time.perf_counter() - started
    if code != 0:
        raise click.ClickException(f"{engine} failed (exit {code}); see {workdir / f'{engine}-{source.stem}.log'}")
    rows = pq.ParquetFile(source).metadata.num_rows if source.suffix == ".parquet" else sum(1 for _ in open(source)) - 1
    took = re.search(r"^took ([\d.]+) s", (workdir / f"{engine}-{source.stem}.log").read_text(), re.MULTILINE)
    return Measurement(engine, rows, seconds, float(took.group(1)), rss.peaks[engine] / 2**20)


@click.command(help="Rows per second and peak memory of batch_predict's pandas and spark engines.")
@click.option("--rows", type=click.IntRange(min=SMALL), default=2_000_000, show_default=True)
@click.option("--format", "file_format", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--engines", default="pandas,spark", show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=100_000, show_default=True)
def main(rows, file_format, engines, chunk_size):
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        workdir = Path(tmp)
        env = store_env(workdir)
        click.echo(f"training a champion in {workdir} ...", err=True)
        train(workdir, env)
        click.echo(f"writing {rows:,} rows of {file_format} ...", err=True)
        big = write_input(workdir / f"big.{file_format}", rows)
        small = write_input(workdir / f"small.{file_format}", SMALL)
        quarter = write_input(workdir / f"quarter.{file_format}", max(SMALL, rows // 4))
        click.echo(f"{'engine':<8} {'rows':>10} {'command s':>10} {'scoring s':>10} {'rows/s':>10} {'peak MB':>8}")
        for engine in [e.strip() for e in engines.split(",") if e.strip()]:
            sizes = [small, quarter, big] if engine == "pandas" else [small, big]
            for source in sizes:
                m = run_engine(engine, source, workdir, env, chunk_size)
                rate = f"{m.rows / m.scoring_seconds:,.0f}" if m.scoring_seconds >= 0.1 else "-"  # printed to 0.1 s
                click.echo(
                    f"{engine:<8} {m.rows:>10,} {m.seconds:>10.1f} {m.scoring_seconds:>10.1f} {rate:>10} {m.peak_rss_mb:>8.0f}"
                )
        click.echo(
            f"file: {big.stat().st_size / 2**20:.0f} MB {file_format}; chunk size {chunk_size:,}; {os.cpu_count()} cores"
        )


if __name__ == "__main__":
    main()
