"""An append-only spool of session batches on local disk, for when PostgreSQL is away.

Batches are appended to segment files named ``<ns since epoch>-<pid>.seg`` in the
spool directory, so that names sort in the order they were begun.  Each record is
``length (4 bytes) | crc32 (4 bytes) | msgpack list of rows``; a record cut short by
a crash fails its length or checksum and ends the segment's replay there.  The
process writing a segment holds an exclusive ``flock`` on it; a replayer takes the
same lock, so segments of a process that died are replayed by whichever gateway
process gets to them first, and a segment is never replayed by two at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec

_HEADER = struct.Struct(">II")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[tuple[Any, ...]])


class Spool:
    """The segments of one spool directory, as seen by one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._current: IO[bytes] | None = None
        self._current_path: Path | None = None

    def append(self, rows: list[tuple[Any, ...]]) -> int:
        """Write one batch durably (fsync); return the bytes written."""
        payload = _encoder.encode(rows)
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        handle = self._open_current()
        handle.write(record)
        handle.flush()
        os.fsync(handle.fileno())
        return len(record)

    def seal(self) -> None:
        """Close the segment being written, so that it can be replayed."""
        if self._current is not None:
            self._current.close()  # closing drops the flock
            self._current = None
            self._current_path = None

    def segments(self) -> list[Path]:
        """Sealed segments of every process, oldest first (the one being written excluded)."""
        try:
            paths = sorted(self.directory.glob("*.seg"))
        except OSError:
            return []
        return [p for p in paths if p != self._current_path]

    def pending(self) -> bool:
        return self._current is not None or bool(self.segments())

    def size(self) -> int:
        total = 0
        for path in self.directory.glob("*.seg") if self.directory.exists() else ():
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[Iterator[list[tuple[Any, ...]]] | None]:
        """Lock a sealed segment for replay; yields its batches, or ``None`` if another holds it."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            yield None
            return
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            # Another replayer may have finished and deleted it before our lock.
            yield _records(handle) if path.exists() else None

    def _open_current(self) -> IO[bytes]:
        if self._current is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns():020d}-{os.getpid()}.seg"
            handle = path.open("ab")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._current, self._current_path = handle, path
        return self._current


def _records(handle: IO[bytes]) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        header = handle.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        length, checksum = _HEADER.unpack(header)
        payload = handle.read(length)
        if len(payload) < length or zlib.crc32(payload) != checksum:
            return  # the tail of a write cut short by a crash
        try:
            yield _decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
