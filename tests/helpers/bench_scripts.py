"""The benchmarks a reader can run, each with ``python -m bench.<name>``."""

from tests.helpers.tracking import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "bench").glob("*.py") if 'if __name__ == "__main__":' in p.read_text())
