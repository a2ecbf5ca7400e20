"""Zero-copy reading of rosbag2's MCAP files, for converting camera bags fast.

A 3-camera raw-image bag is about 80 MB per second of recording. rosbags copies every message
four times on its way out of a chunk (and Python allocates each copy); here the file is
memory-mapped, indexed once (a few ms for 400 MB: only record headers are read) and each
message is a memoryview into the map, so a frame's pixels are read once, by whatever uses them.

Layout, from the MCAP specification (https://mcap.dev/spec): the magic `\\x89MCAP0\\r\\n`, then
records of `opcode: u8, length: u64, body`; strings are `u32 length + UTF-8`. The records used:

    Schema   0x03  id u16, name str, encoding str, data (u32 + bytes)
    Channel  0x04  id u16, schema_id u16, topic str, message_encoding str, metadata
    Message  0x05  channel_id u16, sequence u32, log_time u64, publish_time u64, data (the rest)
    Chunk    0x06  start u64, end u64, uncompressed_size u64, uncompressed_crc u32,
                   compression str ('', 'zstd', 'lz4'), records (u64 + bytes)
    Footer   0x02, DataEnd 0x0F: the data section is over

Chunk CRCs are not checked (rosbags does, at a quarter of a millisecond per frame): a record
whose length runs past the end of its chunk or file is still an error, so a truncated file is
caught, but a flipped bit inside a frame's pixels is not.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b'\x89MCAP0\r\n'
OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = 0x02, 3, 4, 5, 6, 0x0F

_U16 = struct.Struct('<H').unpack_from
_U32 = struct.Struct('<I').unpack_from
_U64 = struct.Struct('<Q').unpack_from
_MESSAGE = struct.Struct('<HIQQ')  # channel_id, sequence, log_time, publish_time
_CHUNK = struct.Struct('<QQQI')  # start, end, uncompressed_size, crc


class McapError(ValueError):
    """Not an MCAP file, or one cut short."""


@dataclass(frozen=True)
class Channel:
    topic: str
    msgtype: str  # the schema's name, e.g. sensor_msgs/msg/Image


class McapFile:
    """One MCAP file: its channels and an index of its messages in file order."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self.path.open('rb') as file:
            try:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError as exc:  # an empty file
                raise McapError(f'{self.path}: empty file') from exc
        self._view = memoryview(self._map)
        self._schemas: dict[int, str] = {}
        self._chunks: list[memoryview] = []  # decompressed chunks
        self.channels: dict[int, Channel] = {}
        channel_ids, log_times, places = [], [], []  # places: (chunk or -1, start, end)
        try:
            if self._view[: len(MAGIC)] != MAGIC:
                raise McapError(f'{self.path}: not an MCAP file (no magic bytes)')
            self._scan(self._view, len(MAGIC), len(self._view), -1, channel_ids, log_times, places)
        except Exception:
            self.close()
            raise
        self.channel_ids = np.array(channel_ids, dtype=np.int64)  # (N,)
        self.log_times = np.array(log_times, dtype=np.int64)  # (N,) receive time, ns
        self._places = places

    def _scan(
        self,
        view: memoryview,
        pos: int,
        end: int,
        chunk: int,
        channel_ids: list[int],
        log_times: list[int],
        places: list[tuple[int, int, int]],
    ) -> None:
        while pos < end:
            if pos + 9 > end:
                raise McapError(f'{self.path}: truncated record at offset {pos}')
            opcode = view[pos]
            (length,) = _U64(view, pos + 1)
            body, pos = pos + 9, pos + 9 + length
            if pos > end:
                raise McapError(
                    f'{self.path}: truncated record at offset {body - 9} (needs {length} '
                    f'bytes, {end - body} left)'
                )
            if opcode == OP_MESSAGE:
                channel_id, _, log_time, _ = _MESSAGE.unpack_from(view, body)
                channel_ids.append(channel_id)
                log_times.append(log_time)
                places.append((chunk, body + _MESSAGE.size, pos))
            elif opcode == OP_CHUNK:
                self._scan_chunk(view, body, pos, channel_ids, log_times, places)
            elif opcode == OP_SCHEMA:
                (schema_id,) = _U16(view, body)
                self._schemas[schema_id] = _string(view, body + 2)[0]
            elif opcode == OP_CHANNEL:
                channel_id, schema_id = struct.unpack_from('<HH', view, body)
                topic, _ = _string(view, body + 4)
                self.channels[channel_id] = Channel(topic, self._schemas.get(schema_id, ''))
            elif opcode in (OP_FOOTER, OP_DATA_END) and chunk < 0:
                return

    def _scan_chunk(
        self,
        view: memoryview,
        body: int,
        end: int,
        channel_ids: list[int],
        log_times: list[int],
        places: list[tuple[int, int, int]],
    ) -> None:
        _, _, size, _ = _CHUNK.unpack_from(view, body)
        compression, after = _string(view, body + _CHUNK.size)
        (records_length,) = _U64(view, after)
        start = after + 8
        if start + records_length > end:
            raise McapError(f'{self.path}: truncated chunk at offset {body - 9}')
        records = view[start : start + records_length]
        if compression:
            records = memoryview(_decompress(compression, records, size, self.path))
            self._chunks.append(records)
            chunk = len(self._chunks) - 1
            self._scan(records, 0, len(records), chunk, channel_ids, log_times, places)
        else:
            self._scan(view, start, start + records_length, -1, channel_ids, log_times, places)

    def __len__(self) -> int:
        return len(self._places)

    def data(self, i: int) -> memoryview:
        """The CDR bytes of message i (valid until `close`)."""
        chunk, start, end = self._places[i]
        return (self._view if chunk < 0 else self._chunks[chunk])[start:end]

    def close(self) -> None:
        self._chunks.clear()
        try:
            self._view.release()
            self._map.close()
        except BufferError:  # a message view still held (an exception's traceback): the map
            pass  # closes when the last view goes

    def __enter__(self) -> McapFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _string(view: memoryview, pos: int) -> tuple[str, int]:
    (length,) = _U32(view, pos)
    return bytes(view[pos + 4 : pos + 4 + length]).decode(), pos + 4 + length


def _decompress(compression: str, data: memoryview, size: int, path: Path) -> bytes:
    if compression == 'zstd':
        try:
            from compression import zstd  # Python 3.14
        except ImportError:
            from backports import zstd  # what rosbags installs before 3.14
        raw = zstd.decompress(data)
    elif compression == 'lz4':
        from lz4.frame import decompress

        raw = decompress(data)
    else:
        raise McapError(f'{path}: chunk compression {compression!r} is not supported')
    if len(raw) != size:
        raise McapError(f'{path}: a chunk decompressed to {len(raw)} bytes, not {size}')
    return raw
