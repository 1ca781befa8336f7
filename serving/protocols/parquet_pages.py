"""What a Parquet body's feature columns say about themselves, checked before pyarrow decodes a byte of them.

pyarrow sizes what it decodes from what the file declares, not from what it weighs: each
row group's row count (the footer's total is another number), and each page header's
value count and uncompressed size. A 600-byte body whose row group declared 30 million rows
decoded to a gigabyte before its 400, and a 30 KB dictionary page that declared 30 million
entries decoded to a gigabyte and was answered 200. So ``check_pages`` runs first:

- the row groups' rows must add up to the file's (which the row limit has checked), and
  each feature column chunk must hold as many values as its row group has rows, in this
  body (no ``file_path`` to another file);
- every page header of a feature column chunk is read (Thrift's compact protocol, a few
  bytes each; ``_Header`` reads no more than the header holds and keeps only numbers): the
  data pages' values must add up to the chunk's, a dictionary may hold at most
  ``max_rows`` entries, and no page may inflate to more than ``BYTES_PER_VALUE`` bytes a
  value plus ``BYTES_PER_PAGE``;
- at most ``MAX_ROW_GROUPS`` row groups and ``MAX_PAGES_PER_COLUMN`` pages a feature
  column, so that the checking is itself cheap (a few milliseconds at the limits).

What pyarrow decodes afterwards is then bounded by the row limit, whatever the file says:
per feature column, at most ``max_rows`` values and ``max_rows`` dictionary entries of at
most ``BYTES_PER_VALUE`` bytes each (about 640 KB a column at 10,000 rows: 2.6 MB for Iris's four).
"""

import pyarrow.parquet as pq

from serving.errors import shorten
from serving.protocols.rows import Limits, ValidationError

BYTES_PER_VALUE = 32  # a float64 is 8 bytes, a decimal at most 32; room for levels and run headers
BYTES_PER_PAGE = 4096
MAX_ROW_GROUPS = 64  # pandas writes one; pyarrow's reading costs ~0.3 ms more per group
MAX_PAGES_PER_COLUMN = 256  # pyarrow writes two per column chunk (a dictionary, a data page): 128 at 64 groups
_FIXED_WIDTH_TYPES = {"DOUBLE", "FLOAT", "INT32", "INT64", "FIXED_LEN_BYTE_ARRAY"}
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_MAX_DEPTH = 6  # PageHeader > DataPageHeader > Statistics: three levels are all Parquet uses


def leaf_columns(metadata: pq.FileMetaData, features: list[str]) -> list[int]:
    """The Parquet column index of each feature (a nested column before one shifts it from the Arrow field index)."""
    schema, paths = metadata.schema, {}
    for index in range(metadata.num_columns):
        try:
            paths.setdefault(schema.column(index).path, index)
        except UnicodeDecodeError:  # a damaged name is no feature's
            continue
    if missing := [name for name in features if name not in paths]:
        raise _malformed(f"the Parquet file has no column {shorten(missing[0], 40)} in its schema")
    return [paths[name] for name in features]


def check_pages(
    body: bytes, metadata: pq.FileMetaData, features: list[str], columns: list[int], limits: Limits
) -> None:
    """Raise the ``ValidationError`` that refuses the body unless its feature columns (``features``, at the Parquet
    column indexes ``columns``) decode within the limits."""
    if metadata.num_row_groups > MAX_ROW_GROUPS:
        raise _too_large(f"the Parquet file has {metadata.num_row_groups} row groups; the limit is {MAX_ROW_GROUPS}")
    features = [shorten(name, 40) for name in features]
    for name, index in zip(features, columns):
        column = metadata.schema.column(index)
        physical = column.physical_type
        if physical not in _FIXED_WIDTH_TYPES or (
            physical == "FIXED_LEN_BYTE_ARRAY" and not 0 < column.length <= BYTES_PER_VALUE
        ):
            raise ValidationError(
                400, "INVALID_VALUE", f"invalid feature columns (column {name}: must be a number of a fixed width)"
            )
    group_rows = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
    if any(rows < 0 for rows in group_rows) or sum(group_rows) != metadata.num_rows:
        raise _malformed("the Parquet file's row groups hold another number of rows than it says")
    pages, max_pages = 0, MAX_PAGES_PER_COLUMN * len(columns)
    for group, rows in enumerate(group_rows):
        row_group = metadata.row_group(group)
        for name, index in zip(features, columns):
            pages += _check_chunk(body, name, row_group.column(index), rows, limits, max_pages - pages)


def _check_chunk(body: bytes, name: str, chunk, rows: int, limits: Limits, pages_left: int) -> int:
    """Read the chunk's page headers as pyarrow will, from where it starts until its values are all seen; pages read."""
    if chunk.file_path or chunk.num_values != rows:
        raise _malformed(f"the Parquet file's column {name} holds another number of values than its rows")
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
        start = chunk.dictionary_page_offset
    end = start + chunk.total_compressed_size
    if not 4 <= start <= end <= len(body):
        raise _malformed(f"the Parquet file's column {name} lies outside the file")
    position, seen, pages = start, 0, 0
    while seen < rows:
        if pages == pages_left:
            raise _too_large(f"the Parquet file has more than {MAX_PAGES_PER_COLUMN} pages a feature column")
        header = _Header(body, position, end)
        fields = header.struct(0)
        kind, size, stored = fields.get(1), fields.get(2), fields.get(3)
        if not (isinstance(kind, int) and isinstance(size, int) and isinstance(stored, int)) or min(size, stored) < 0:
            raise _malformed(f"the Parquet file's column {name} has a damaged page header")
        position = header.position + stored
        if position > end:
            raise _malformed(f"the Parquet file's column {name} has a page that runs past its end")
        values = _values(fields, kind)
        if values is None or values < 0:
            raise _malformed(f"the Parquet file's column {name} has a damaged page header")
        if kind == _DICTIONARY_PAGE:
            if pages:
                raise _malformed(f"the Parquet file's column {name} has a dictionary page after its data")
            if values > limits.max_rows:
                raise _too_large(
                    f"the Parquet file's column {name} has a dictionary of {values} entries; "
                    f"the limit is {limits.max_rows}"
                )
        elif kind in (_DATA_PAGE, _DATA_PAGE_V2):
            seen += values
        if size > values * BYTES_PER_VALUE + BYTES_PER_PAGE:
            raise _too_large(f"the Parquet file's column {name} has a page that decodes to {size} bytes")
        pages += 1
        if seen > rows or (position >= end and seen < rows):
            raise _malformed(f"the Parquet file's column {name} holds another number of values than its rows")
    return pages


def _values(fields: dict, kind: int) -> int | None:
    """The page's value count from its type's own header (0 for pages that hold no values)."""
    own = {_DATA_PAGE: 5, _DICTIONARY_PAGE: 7, _DATA_PAGE_V2: 8}.get(kind)
    if own is None:
        return 0
    header = fields.get(own)
    value = header.get(1) if isinstance(header, dict) else None
    return value if isinstance(value, int) else None


class _Header:
    """A Thrift compact-protocol struct read from ``data[position:end]``: integers and nested structs kept, the rest skipped."""

    def __init__(self, data: bytes, position: int, end: int):
        self.data, self.position, self.end = data, position, end

    def struct(self, depth: int) -> dict:
        if depth > _MAX_DEPTH:
            raise _malformed("the Parquet file has a damaged page header")
        fields, field_id = {}, 0
        while True:
            byte = self._byte()
            if byte == 0:
                return fields
            kind, delta = byte & 0x0F, byte >> 4
            field_id = field_id + delta if delta else self._zigzag()
            fields[field_id] = self._value(kind, depth)

    def _value(self, kind: int, depth: int):
        if kind in (1, 2):  # booleans: the type is the value
            return kind == 1
        if kind in (3, 4, 5, 6):  # i8, i16, i32, i64
            return self._zigzag() if kind != 3 else self._byte()
        if kind == 7:  # double
            self._skip(8)
        elif kind == 8:  # binary
            self._skip(self._varint())
        elif kind in (9, 10):  # list, set
            head = self._byte()
            size = head >> 4 if head >> 4 != 15 else self._varint()
            self._elements(head & 0x0F, size, depth)
        elif kind == 11:  # map
            size = self._varint()
            if size:
                types = self._byte()
                for _ in range(size):
                    self._element(types >> 4, depth)
                    self._element(types & 0x0F, depth)
        elif kind == 12:
            return self.struct(depth + 1)
        else:
            raise _malformed("the Parquet file has a damaged page header")
        return None

    def _elements(self, kind: int, size: int, depth: int) -> None:
        if size > self.end - self.position:  # every element takes a byte at least
            raise _malformed("the Parquet file has a damaged page header")
        for _ in range(size):
            self._element(kind, depth)

    def _element(self, kind: int, depth: int) -> None:
        if kind in (1, 2):  # a boolean in a collection is one byte
            self._byte()
        else:
            self._value(kind, depth + 1)

    def _byte(self) -> int:
        if self.position >= self.end:
            raise _malformed("the Parquet file has a truncated page header")
        self.position += 1
        return self.data[self.position - 1]

    def _varint(self) -> int:
        result = 0
        for shift in range(0, 70, 7):
            byte = self._byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
        raise _malformed("the Parquet file has a damaged page header")

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _skip(self, n: int) -> None:
        if n > self.end - self.position:
            raise _malformed("the Parquet file has a truncated page header")
        self.position += n


def _malformed(message: str) -> ValidationError:
    return ValidationError(400, "MALFORMED_REQUEST", message)


def _too_large(message: str) -> ValidationError:
    return ValidationError(413, "REQUEST_TOO_LARGE", message)
