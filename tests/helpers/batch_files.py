"""Generated batch inputs with known bad rows, and readers for what either engine writes."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iris_core.table.iris import IRIS
from steps.registry.versions import Version

FEATURES = IRIS.feature_names
IRIS_MODEL = Version(IRIS, project_outputs=True)  # what batch scoring reads of an Iris version of this project

LOW, HIGH = [4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]
FLOAT_COLUMNS = (*FEATURES, "confidence")

# CSV lines that must be rejected, keyed by id, with the reason each one must get.
BAD_CSV = {
    "bad-missing": ("5.1,,1.4,0.2", "sepal_width: missing"),
    "bad-text": ("5.1,abc,1.4,0.2", "sepal_width: must be a number, got a string"),
    "bad-nan-text": ("nan,3.0,1.4,0.2", "sepal_length: must be a number, got a string"),
    "bad-inf-text": ("5.1,3.0,inf,0.2", "petal_length: must be a number, got a string"),
    "bad-overflow": ("5.1,3.0,1e999,0.2", "petal_length: must be finite"),
    "bad-negative": ("5.1,3.0,1.4,-0.2", "petal_width: must be > 0 and <= 1e+06, got -0.2"),
    "bad-zero": ("0,3.0,1.4,0.2", "sepal_length: must be > 0 and <= 1e+06, got 0"),
    "bad-huge": ("5.1,2000000,1.4,0.2", "sepal_width: must be > 0 and <= 1e+06, got 2000000"),
    "bad-two": (" ,3.0,x,0.2", "sepal_length: missing; petal_length: must be a number, got a string"),
}
# Lines with the wrong number of fields (the header has 6): the id is inside the line.
MALFORMED_CSV = {
    "bad-short": ("bad-short,5.1,3.5,1.4", "malformed CSV row: 4 fields, the header has 6: bad-short,5.1,3.5,1.4"),
    "bad-long": (
        "bad-long,5.1,3.5,1.4,0.2,a,b",
        "malformed CSV row: 7 fields, the header has 6: bad-long,5.1,3.5,1.4,0.2,a,b",
    ),
}
# Typed Parquet rows that must be rejected: (values of the four features, reason).
BAD_PARQUET = {
    "bad-null": ((5.1, None, 1.4, 0.2), "sepal_width: missing"),
    "bad-nan": ((float("nan"), 3.0, 1.4, 0.2), "sepal_length: missing"),
    "bad-inf": ((5.1, 3.0, float("inf"), 0.2), "petal_length: must be finite"),
    "bad-negative": ((5.1, 3.0, 1.4, -1.0), "petal_width: must be > 0 and <= 1e+06, got -1"),
    "bad-huge": ((5.1, 3.0, 2e6, 0.2), "petal_length: must be > 0 and <= 1e+06, got 2000000"),
}


@dataclass(frozen=True)
class Generated:
    path: Path
    valid_ids: list[str]
    reasons: dict[str, str]  # id -> the reject_reason it must get


def valid_features(count: int, seed: int) -> np.ndarray:
    return np.round(np.random.default_rng(seed).uniform(LOW, HIGH, size=(count, 4)), 2)


def write_csv(path: Path, count: int, seed: int = 0, bad_every: int = 97) -> Generated:
    """``count`` good rows with a bad or malformed line after every ``bad_every`` of them."""
    bad = [*BAD_CSV.items(), *MALFORMED_CSV.items()]
    lines, valid, reasons = ["id,sepal_length,sepal_width,petal_length,petal_width,note"], [], {}
    for index, row in enumerate(valid_features(count, seed)):
        row_id = f"row-{index}"
        lines.append(f'{row_id},{",".join(map(str, row))},"n, {index % 5}"')
        valid.append(row_id)
        if index % bad_every == 0 and index // bad_every < len(bad):
            bad_id, (text, reason) = bad[index // bad_every]
            lines.append(text if bad_id in MALFORMED_CSV else f"{bad_id},{text},q")
            reasons[bad_id] = reason
    path.write_text("\n".join(lines) + "\n")
    return Generated(path, valid, reasons)


def write_parquet(path: Path, count: int, seed: int = 0) -> Generated:
    """Typed columns: float64 features (nulls, NaN and inf among the bad rows), an int and a string."""
    features = valid_features(count, seed).tolist()
    ids = [f"row-{i}" for i in range(count)]
    for position, (bad_id, (values, _)) in enumerate(BAD_PARQUET.items()):
        at = (position * 131) % (count + 1)
        features.insert(at, list(values))
        ids.insert(at, bad_id)
    columns = {
        "id": pa.array(ids),
        **{f: pa.array([r[i] for r in features], pa.float64()) for i, f in enumerate(FEATURES)},
    }
    columns["batch"] = pa.array([i % 7 for i in range(len(ids))], pa.int32())
    pq.write_table(pa.table(columns), path, row_group_size=max(1, count // 3))
    return Generated(
        path, [i for i in ids if i.startswith("row-")], {k: reason for k, (_, reason) in BAD_PARQUET.items()}
    )


def read_any(path) -> pd.DataFrame:
    """A file, or a Spark output directory of part files, as one frame sorted by id."""
    path = Path(path)
    parts = sorted(path.glob("part-*")) if path.is_dir() else [path]
    if path.suffix == ".parquet":
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    else:
        frame = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)
    if "confidence_scores" in frame:
        frame["confidence_scores"] = [
            json.loads(v) if isinstance(v, str) else dict(v) for v in frame["confidence_scores"]
        ]
    return frame


def scored(path) -> pd.DataFrame:
    """Scored rows with numbers as numbers, whichever format and engine wrote them."""
    frame = read_any(path)
    for column in FLOAT_COLUMNS:
        frame[column] = frame[column].astype("float64")
    frame["prediction_index"] = frame["prediction_index"].astype("int64")
    return frame.sort_values("id", ignore_index=True)


def assert_same_scores(left: pd.DataFrame, right: pd.DataFrame) -> None:
    """Same rows, same values. Probabilities may differ in the last bits only: scikit-learn's BLAS
    call takes another path for a one-row batch, and the engines cut batches differently."""
    assert list(left.columns) == list(right.columns)
    assert left["id"].tolist() == right["id"].tolist()
    for column in left.columns:
        if column in FLOAT_COLUMNS:
            np.testing.assert_allclose(left[column], right[column], rtol=0, atol=1e-12, err_msg=column)
        elif column == "confidence_scores":
            for a, b in zip(left[column], right[column]):
                assert a.keys() == b.keys()
                np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=0, atol=1e-12)
        else:
            assert left[column].astype(str).tolist() == right[column].astype(str).tolist(), column


@dataclass(frozen=True)
class Lines:
    path: Path
    text: list[str]  # the file's lines, as an editor numbers them: text[n - 1] is line n
    rejects: dict[int, str]  # line -> the reject_reason it must get, in input order


def write_lines_csv(path: Path, count: int, seed: int = 0, newline: str = "\n") -> Lines:
    """``count`` good rows among bad ones, malformed ones, blank lines and lines of spaces, every few lines."""
    extras = [("bad", *item) for item in BAD_CSV.items()] + [("malformed", *item) for item in MALFORMED_CSV.items()]
    rng = np.random.default_rng(seed)
    text, rejects = ["id,sepal_length,sepal_width,petal_length,petal_width,note"], {}
    for index, row in enumerate(valid_features(count, seed)):
        text.append(f"row-{index},{','.join(map(str, row))},n{index}")
        roll = rng.random()
        if roll < 0.05:
            kind, bad_id, (line, reason) = extras[int(rng.integers(len(extras)))]
            text.append(line if kind == "malformed" else f"{bad_id},{line},q")
            rejects[len(text)] = reason
        elif roll < 0.08:
            text.append("")
        elif roll < 0.09:
            text.append("   ")
            rejects[len(text)] = "malformed CSV row: 1 fields, the header has 6:    "
    path.write_bytes((newline.join(text) + newline).encode())
    return Lines(path, text, rejects)
