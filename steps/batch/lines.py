"""Where each row of a CSV file is: its line number, the way an editor or ``sed -n 'Np'`` counts.

Arrow's CSV reader skips empty lines and hands over only the records, and it numbers the
lines it could not split (malformed ones) among the non-empty lines only. So the lines are
counted twice over, both cheaply: ``LineScanner`` sees the bytes as Arrow reads them and
notes each empty line, and ``LineNumbers`` turns a record's position among the records
into its line in the file. Lines end with ``\\n``, ``\\r\\n`` or a lone ``\\r``, as for Arrow
and Spark. Everything is asked in input order, so what is kept is bounded by what Arrow
has read ahead, not by the file.
"""

import collections

import numpy as np

LF, CR = 10, 13


class LineScanner:
    """A binary file as Arrow reads it, noting the line number of every empty line it passes.

    ``position`` and ``lines_read`` say how far Arrow has read, for progress. A ``\\r`` at the end of a read is
    held back until the next one says whether it is half of ``\\r\\n``.
    """

    def __init__(self, handle):
        self._handle = handle
        self.position = 0
        self.empty_lines: collections.deque[int] = collections.deque()
        self._lines = 0  # line ends seen
        self._at_line_start = True
        self._held = b""

    @property
    def lines_read(self) -> int:
        """Lines ended in what Arrow has read so far."""
        return self._lines

    # The file-object protocol Arrow reads through.
    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.position += len(data)
        self._scan(data, final=not data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._handle.closed

    def close(self) -> None:
        self._handle.close()

    def _scan(self, data: bytes, final: bool) -> None:
        data, self._held = self._held + data, b""
        if data.endswith(b"\r") and not final:
            data, self._held = data[:-1], b"\r"
        if not data:
            return
        if not (b"\n\n" in data or b"\r\r" in data or b"\n\r" in data or (self._at_line_start and data[0] in (LF, CR))):
            self._lines += data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
            self._at_line_start = data[-1] in (LF, CR)
            return
        empty, ends = empty_lines_in(data, self._at_line_start)
        self.empty_lines.extend((self._lines + empty + 1).tolist())
        self._lines += ends
        self._at_line_start = data[-1] in (LF, CR)


def empty_lines_in(data: bytes, at_line_start: bool) -> tuple[np.ndarray, int]:
    """(0-based indexes, among the line ends in ``data``, of those that end an empty line; the number of line ends).

    ``data`` never ends in the middle of ``\\r\\n``; ``at_line_start`` says whether a line starts at its first byte.
    """
    raw = np.frombuffer(data, dtype=np.uint8)
    is_cr, is_lf = raw == CR, raw == LF
    after_cr = np.zeros(len(raw), dtype=bool)
    after_cr[1:] = is_cr[:-1]
    starts = np.flatnonzero(is_cr | (is_lf & ~after_cr))  # where each line end begins
    lengths = np.where(is_cr[starts] & np.append(is_lf[1:], False)[starts], 2, 1)
    line_starts = np.concatenate([[0] if at_line_start else [], starts + lengths]).astype(np.int64)
    return np.flatnonzero(np.isin(starts, line_starts)), len(starts)


class LineNumbers:
    """Line numbers of a CSV file's rejects, asked batch by batch in input order.

    Arrow numbers the non-empty lines from 1 (the header) and gives that number for each
    malformed line, which ``malformed`` collects as Arrow's handler meets them. A record's
    number among the non-empty lines is its position among the records, plus the header,
    plus the malformed lines before it; its line in the file adds the empty lines before it.
    """

    def __init__(self, empty_lines: collections.deque[int]):
        self.malformed: collections.deque[tuple[int, str]] = collections.deque()  # (non-empty number, reason)
        self._empty_lines = empty_lines
        self._malformed_passed = 0
        self._empty_passed = 0

    def place(self, first: int, count: int, rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """For records ``first`` .. ``first + count - 1``, of which ``rejected`` (positions in the batch) fail:
        (their lines, the lines of the malformed lines before the last of them, those lines' reasons)."""
        if count == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), []
        last = first + count - 1
        passed = self._malformed_passed
        taken = []
        while self.malformed and self.malformed[0][0] - 2 - self._malformed_passed <= last:
            taken.append(self.malformed.popleft())
            self._malformed_passed += 1
        malformed = np.array([number for number, _ in taken], dtype=np.int64)
        records_before = malformed - 2 - np.arange(passed, self._malformed_passed)
        positions = first + np.asarray(rejected, dtype=np.int64)
        non_empty = positions + 2 + passed + np.searchsorted(records_before, positions, side="right")
        lines = self._lines_below(last + 2 + self._malformed_passed)
        return lines(non_empty), lines(malformed), [reason for _, reason in taken]

    def rest(self) -> tuple[np.ndarray, list[str]]:
        """After the last record: the lines of the malformed lines that follow it, and their reasons."""
        taken = list(self.malformed)
        self.malformed.clear()
        malformed = np.array([number for number, _ in taken], dtype=np.int64)
        lines = self._lines_below(int(malformed[-1]) if len(taken) else 0)
        return lines(malformed), [reason for _, reason in taken]

    def _lines_below(self, limit: int):
        """A function from non-empty numbers up to ``limit`` to lines in the file; passes the empty lines before."""
        passed, before = self._empty_passed, []  # before: how many non-empty lines precede each empty one
        while self._empty_lines and self._empty_lines[0] - 1 - self._empty_passed < limit:
            before.append(self._empty_lines.popleft() - 1 - self._empty_passed)
            self._empty_passed += 1
        counts = np.array(before, dtype=np.int64)
        return lambda non_empty: non_empty + passed + np.searchsorted(counts, non_empty, side="left")
