"""Parquet files written by hand, byte by byte, so that they can lie about themselves as a hostile client's would.

pyarrow writes only honest files. These are four required DOUBLE feature columns in one
or more row groups, each column chunk a dictionary page and a data page of dictionary
indices (one run-length-encoded run), and every count a test wants to lie about given
separately: the file's row count, each row group's, each column chunk's, each page's, and
the entries of the dictionary. A dictionary page is compressed as a hand-made zstd frame
of run-length blocks, so a page that inflates to gigabytes weighs kilobytes here and costs
the test no memory to make.
"""

import struct
from dataclasses import dataclass

from tests.helpers.iris import FEATURES

# Thrift compact protocol types, Parquet's enums
I32, I64, BINARY, LIST, STRUCT = 5, 6, 8, 9, 12
DOUBLE, REQUIRED = 5, 0
PLAIN, RLE, RLE_DICTIONARY = 0, 3, 8
UNCOMPRESSED, ZSTD = 0, 6
DATA_PAGE, DICTIONARY_PAGE = 0, 2
FILLER = 0x40  # every byte of the dictionary: the double 0x4040404040404040 is 32.5, a valid feature value
VALUE = struct.unpack("<d", bytes([FILLER]) * 8)[0]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zigzag(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


def thrift(fields: dict[int, tuple[int, object]]) -> bytes:
    """A Thrift compact struct from ``{field id: (type, value)}``; a list value is ``(element type, items)``."""
    out, last = bytearray(), 0
    for field_id in sorted(fields):
        kind, value = fields[field_id]
        delta = field_id - last
        out += bytes([(delta << 4) | kind]) if 0 < delta <= 15 else bytes([kind]) + zigzag(field_id)
        out += _value(kind, value)
        last = field_id
    return bytes(out + b"\x00")


def _value(kind: int, value) -> bytes:
    if kind in (I32, I64):
        return zigzag(value)
    if kind == BINARY:
        data = value.encode() if isinstance(value, str) else value
        return varint(len(data)) + data
    if kind == STRUCT:
        return thrift(value)
    if kind == LIST:
        element, items = value
        head = bytes([(len(items) << 4) | element]) if len(items) < 15 else bytes([0xF0 | element]) + varint(len(items))
        return head + b"".join(_value(element, item) for item in items)
    raise ValueError(kind)


def zstd_run(size: int) -> bytes:
    """A zstd frame that decompresses to ``size`` bytes of ``FILLER``: run-length blocks of 128 KiB."""
    frame = bytearray(b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", size))  # single segment, 8-byte content size
    block = 128 * 1024
    while size:
        n = min(size, block)
        size -= n
        frame += struct.pack("<I", (n << 3) | (1 << 1) | (0 if size else 1))[:3] + bytes([FILLER])
    return bytes(frame)


def zstd_raw(data: bytes) -> bytes:
    """A zstd frame holding ``data`` as it is (one raw block)."""
    header = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", len(data))
    return header + struct.pack("<I", (len(data) << 3) | 1)[:3] + data


def page(kind: int, uncompressed: int, data: bytes, values: int) -> bytes:
    header = {1: (I32, kind), 2: (I32, uncompressed), 3: (I32, len(data))}
    if kind == DICTIONARY_PAGE:
        header[7] = (STRUCT, {1: (I32, values), 2: (I32, PLAIN)})
    else:
        header[5] = (STRUCT, {1: (I32, values), 2: (I32, RLE_DICTIONARY), 3: (I32, RLE), 4: (I32, RLE)})
    return thrift(header) + data


@dataclass
class Lies:
    """What the file says about itself; left None, each count tells the truth (``rows``)."""

    rows: int = 2  # rows each row group really holds (one run of dictionary index 0)
    file_rows: int | None = None  # FileMetaData.num_rows
    group_rows: int | None = None  # RowGroup.num_rows
    chunk_values: int | None = None  # ColumnMetaData.num_values
    page_values: int | None = None  # the data page header's num_values
    dictionary: int = 1  # entries in each dictionary page (all equal)
    dictionary_bytes: int | None = None  # what the dictionary page inflates to (8 bytes an entry when None)
    chunk_uncompressed: int | None = None  # ColumnMetaData.total_uncompressed_size
    groups: int = 1


def crafted(lies: Lies | None = None) -> bytes:
    """The Parquet file ``lies`` describes, with the four feature columns."""
    lies = lies or Lies()
    out = bytearray(b"PAR1")
    row_groups = []
    for _ in range(lies.groups):
        chunks = []
        for name in FEATURES:
            start = len(out)
            dictionary_size = lies.dictionary * 8 if lies.dictionary_bytes is None else lies.dictionary_bytes
            out += page(DICTIONARY_PAGE, dictionary_size, zstd_run(dictionary_size), lies.dictionary)
            data_offset = len(out)
            indices = bytes([1]) + varint(lies.rows << 1) + b"\x00"  # bit width 1, one run of index 0
            page_values = lies.rows if lies.page_values is None else lies.page_values
            out += page(DATA_PAGE, len(indices), zstd_raw(indices), page_values)
            size = len(out) - start
            meta = {
                1: (I32, DOUBLE),
                2: (LIST, (I32, [PLAIN, RLE, RLE_DICTIONARY])),
                3: (LIST, (BINARY, [name])),
                4: (I32, ZSTD),
                5: (I64, lies.rows if lies.chunk_values is None else lies.chunk_values),
                6: (I64, size + dictionary_size if lies.chunk_uncompressed is None else lies.chunk_uncompressed),
                7: (I64, size),
                9: (I64, data_offset),
                11: (I64, start),
            }
            chunks.append({2: (I64, start), 3: (STRUCT, meta)})
        group_rows = lies.rows if lies.group_rows is None else lies.group_rows
        row_groups.append({1: (LIST, (STRUCT, chunks)), 2: (I64, 0), 3: (I64, group_rows)})
    schema = [{4: (BINARY, "schema"), 5: (I32, len(FEATURES))}]
    schema += [{1: (I32, DOUBLE), 3: (I32, REQUIRED), 4: (BINARY, name)} for name in FEATURES]
    file_rows = lies.rows * lies.groups if lies.file_rows is None else lies.file_rows
    footer = thrift(
        {
            1: (I32, 1),
            2: (LIST, (STRUCT, schema)),
            3: (I64, file_rows),
            4: (LIST, (STRUCT, row_groups)),
        }
    )
    return bytes(out + footer + struct.pack("<I", len(footer)) + b"PAR1")
