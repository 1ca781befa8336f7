"""Every reject can be found in its input: its line in a CSV file, its row in a Parquet file, in input order."""

import collections
import re

import pyarrow.parquet as pq
import pytest

from steps.batch.lines import LineNumbers, empty_lines_in
from steps.batch.pandas_engine import score_file
from tests.helpers.batch_files import IRIS_MODEL, read_any, write_lines_csv, write_parquet


def file_lines(data: bytes) -> list[str]:
    """The lines of a file as an editor numbers them (``\\n``, ``\\r\\n`` and a lone ``\\r`` end one)."""
    lines = re.split(r"\r\n|\r|\n", data.decode())
    return lines[:-1] if lines and lines[-1] == "" else lines


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_each_csv_reject_names_its_line_in_the_file(champion, tmp_path, newline):
    data = write_lines_csv(tmp_path / "in.csv", 3000, seed=1, newline=newline)
    score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=250)
    rejects = read_any("rejects.csv")
    lines = rejects["input_line"].astype(int).tolist()
    assert dict(zip(lines, rejects["reject_reason"])) == data.rejects
    on_disk = file_lines(data.path.read_bytes())
    for line, row_id in zip(lines, rejects["id"]):
        assert on_disk[line - 1] == data.text[line - 1]
        assert row_id == "" or on_disk[line - 1].startswith(f"{row_id},")


def test_malformed_lines_come_in_input_order_among_the_other_rejects(champion, tmp_path):
    data = write_lines_csv(tmp_path / "in.csv", 30_000, seed=2)  # several of Arrow's blocks
    score_file(str(data.path), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=1000)
    rejects = read_any("rejects.csv")
    lines = rejects["input_line"].astype(int).tolist()
    assert lines == sorted(data.rejects)
    malformed = rejects["reject_reason"].str.startswith("malformed").tolist()
    assert True in malformed[: len(malformed) // 2] and False in malformed[len(malformed) // 2 :]


def test_each_parquet_reject_names_its_row_in_the_file(champion, tmp_path):
    data = write_parquet(tmp_path / "in.parquet", 2000, seed=3)
    score_file(str(data.path), "out.parquet", "rejects.parquet", champion.predict, version=IRIS_MODEL, chunk_size=128)
    rejects = pq.read_table("rejects.parquet")
    assert rejects.column_names[:2] == ["reject_reason", "input_row"]
    ids = pq.read_table(data.path).column("id")
    rows = rejects.column("input_row").to_pylist()
    assert rows == sorted(rows)
    assert [ids[row].as_py() for row in rows] == rejects.column("id").to_pylist()


def test_a_file_that_ends_with_malformed_lines_keeps_them_last_and_numbered(champion, tmp_path):
    header = "id,sepal_length,sepal_width,petal_length,petal_width"
    (tmp_path / "in.csv").write_text(f"{header}\na,5.1,3.5,1.4,0.2\nb,5.1,x,1.4,0.2\n\nc,1\nd,2,3\n")
    tally = score_file(
        str(tmp_path / "in.csv"), "out.csv", "rejects.csv", champion.predict, version=IRIS_MODEL, chunk_size=1
    )
    rejects = read_any("rejects.csv")
    assert rejects["input_line"].astype(int).tolist() == [3, 5, 6]
    assert rejects["reject_reason"].tolist()[1:] == [
        "malformed CSV row: 2 fields, the header has 5: c,1",
        "malformed CSV row: 3 fields, the header has 5: d,2,3",
    ]
    assert (tally.rows_read, tally.rows_scored, tally.rows_rejected) == (4, 1, 3)


def test_empty_lines_are_found_across_reads_and_line_ends_split_between_them():
    assert empty_lines_in(b"a\n\nb\r\n\r\nc\r\rd", at_line_start=True)[0].tolist() == [1, 3, 5]
    assert empty_lines_in(b"\nx\n", at_line_start=True)[0].tolist() == [0]
    assert empty_lines_in(b"\nx\n", at_line_start=False)[0].tolist() == []


def test_line_numbers_skip_the_header_malformed_and_empty_lines_before_each_record():
    # line 1 header, 2 record 0, 3 empty, 4 malformed, 5 record 1, 6 empty, 7 empty, 8 record 2
    numbers = LineNumbers(empty_lines=collections.deque([3, 6, 7]))
    numbers.malformed.append((3, "bad"))  # Arrow's number among the non-empty lines
    lines, malformed, reasons = numbers.place(0, 2, [0, 1])
    assert (lines.tolist(), malformed.tolist(), reasons) == ([2, 5], [4], ["bad"])
    lines, malformed, _ = numbers.place(2, 1, [0])
    assert (lines.tolist(), malformed.tolist()) == ([8], [])
