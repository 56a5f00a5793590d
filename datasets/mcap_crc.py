"""MCAP checksums: fill them in after writing, verify them before reading.

An MCAP file holds a CRC-32 of each chunk's uncompressed records, of the whole data section (in
the Data End record) and of the summary section (in the Footer); a writer may leave any of them 0,
meaning "not computed" - as ``rosbags`` does. :func:`seal` computes the missing ones in place
(:func:`admn_ros.datasets.bags.write_bag` calls it, so every bag this project writes can be
checked), and :func:`verify` recomputes every non-zero one and names the first that does not
match: a flipped byte anywhere in a sealed file is found before a single message is replayed.
Bags recorded by ``ros2 bag record`` (the C++ MCAP writer computes chunk CRCs by default) are
checked alike. Layout per the MCAP specification: records are ``opcode (1 byte) | length
(uint64) | content``, little-endian throughout.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_CHUNK, OP_DATA_END = 0x02, 0x06, 0x0F
_FOOTER_LEN = 1 + 8 + 8 + 8 + 4     # opcode, length, summary_start, summary_offset_start, crc


class McapCrcError(ValueError):
    """A checksum that does not match, or a file that is not a readable MCAP."""


@dataclass
class CrcReport:
    """What :func:`verify` checked: counts of checksums verified and of those left 0."""

    chunks_checked: int = 0
    chunks_without_crc: int = 0
    data_section_checked: bool = False
    summary_checked: bool = False
    problems: List[str] = field(default_factory=list)

    @property
    def sealed(self) -> bool:
        """Every chunk and the data section carried a checksum."""
        return self.data_section_checked and not self.chunks_without_crc


@dataclass
class _Chunk:
    crc_offset: int          # file offset of the uncompressed_crc field
    stored_crc: int
    uncompressed_size: int
    compression: str
    records_offset: int
    records_len: int


def _u32(data, offset: int) -> int:
    return struct.unpack_from('<I', data, offset)[0]


def _u64(data, offset: int) -> int:
    return struct.unpack_from('<Q', data, offset)[0]


def _scan(data: bytes, path) -> tuple:
    """(chunks, data-end content offset or None, footer offset) of an MCAP image."""
    if len(data) < 2 * len(MAGIC) + _FOOTER_LEN or data[:8] != MAGIC or data[-8:] != MAGIC:
        raise McapCrcError(f'{path}: not a complete MCAP file (magic missing at start or end)')
    chunks: List[_Chunk] = []
    offset, end = len(MAGIC), len(data) - len(MAGIC)
    data_end = None
    while offset + 9 <= end:
        op, length = data[offset], _u64(data, offset + 1)
        content = offset + 9
        if content + length > end:
            raise McapCrcError(f'{path}: record at byte {offset} runs past the end of the file')
        if op == OP_CHUNK:
            size, crc = _u64(data, content + 16), _u32(data, content + 24)
            name_len = _u32(data, content + 28)
            compression = data[content + 32:content + 32 + name_len].decode('utf-8', 'replace')
            rec = content + 32 + name_len
            chunks.append(_Chunk(content + 24, crc, size, compression, rec + 8, _u64(data, rec)))
        elif op == OP_DATA_END:
            data_end = offset
            break
        offset = content + length
    footer = len(data) - len(MAGIC) - _FOOTER_LEN
    if data[footer] != OP_FOOTER:
        raise McapCrcError(f'{path}: no footer record before the closing magic')
    return chunks, data_end, footer


def _uncompressed(data: bytes, chunk: _Chunk, path) -> bytes:
    raw = data[chunk.records_offset:chunk.records_offset + chunk.records_len]
    if chunk.compression == '':
        return raw
    # rosbags' own decompressors (lz4, zstd): the same ones its reader uses.
    from rosbags.rosbag2.storage_mcap import DECOMPRESSORS
    if chunk.compression not in DECOMPRESSORS:
        raise McapCrcError(f'{path}: unsupported chunk compression {chunk.compression!r}')
    try:
        return DECOMPRESSORS[chunk.compression](raw, chunk.uncompressed_size)
    except Exception as exc:   # a corrupted compressed stream
        raise McapCrcError(f'{path}: chunk at byte {chunk.crc_offset - 33} does not decompress '
                           f'({type(exc).__name__}: {exc})') from None


def verify(path) -> CrcReport:
    """Recompute every checksum the file carries; McapCrcError (one line) on the first mismatch."""
    path = Path(path)
    data = path.read_bytes()
    chunks, data_end, footer = _scan(data, path)
    report = CrcReport()
    for chunk in chunks:
        if chunk.stored_crc == 0:
            report.chunks_without_crc += 1
            continue
        actual = zlib.crc32(_uncompressed(data, chunk, path))
        if actual != chunk.stored_crc:
            raise McapCrcError(f'{path}: chunk at byte {chunk.crc_offset - 33}: CRC mismatch '
                               f'(stored {chunk.stored_crc:08x}, computed {actual:08x}): the file '
                               'is corrupted')
        report.chunks_checked += 1
    if data_end is not None:
        stored = _u32(data, data_end + 9)
        if stored:
            actual = zlib.crc32(data[:data_end])
            if actual != stored:
                raise McapCrcError(f'{path}: data section CRC mismatch (stored {stored:08x}, '
                                   f'computed {actual:08x}): the file is corrupted')
            report.data_section_checked = True
    summary_start, stored = _u64(data, footer + 9), _u32(data, footer + 25)
    if summary_start and stored:
        actual = zlib.crc32(data[summary_start:footer + 25])
        if actual != stored:
            raise McapCrcError(f'{path}: summary section CRC mismatch (stored {stored:08x}, '
                               f'computed {actual:08x}): the file is corrupted')
        report.summary_checked = True
    return report


def seal(path) -> None:
    """Fill in, in place, every checksum the writer left 0 (chunks, data section, summary)."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    chunks, data_end, footer = _scan(bytes(data), path)
    for chunk in chunks:
        if chunk.stored_crc == 0:
            struct.pack_into('<I', data, chunk.crc_offset,
                             zlib.crc32(_uncompressed(bytes(data), chunk, path)))
    if data_end is not None and _u32(data, data_end + 9) == 0:
        struct.pack_into('<I', data, data_end + 9, zlib.crc32(data[:data_end]))
    summary_start = _u64(data, footer + 9)
    if summary_start and _u32(data, footer + 25) == 0:
        struct.pack_into('<I', data, footer + 25, zlib.crc32(data[summary_start:footer + 25]))
    tmp = path.with_suffix(path.suffix + '.tmp')
    tmp.write_bytes(bytes(data))
    tmp.replace(path)


def storage_files(bag_dir) -> List[Path]:
    """The MCAP files of a rosbag2 directory (none for sqlite3 bags)."""
    bag_dir = Path(bag_dir)
    return sorted(bag_dir.glob('*.mcap')) if bag_dir.is_dir() else (
        [bag_dir] if bag_dir.suffix == '.mcap' else [])


def verify_bag(bag_dir) -> Optional[CrcReport]:
    """:func:`verify` every MCAP file of a bag (None for a bag without any); McapCrcError."""
    reports = [verify(f) for f in storage_files(bag_dir)]
    if not reports:
        return None
    total = CrcReport()
    for r in reports:
        total.chunks_checked += r.chunks_checked
        total.chunks_without_crc += r.chunks_without_crc
    total.data_section_checked = all(r.data_section_checked for r in reports)
    total.summary_checked = all(r.summary_checked for r in reports)
    return total


def seal_bag(bag_dir) -> None:
    for f in storage_files(bag_dir):
        seal(f)
