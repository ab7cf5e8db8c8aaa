"""The small per-entry index of a split: everything pairing needs, without the features.

Pairing needs a random partner of the same class from the *whole* split, which a
streaming join could only offer by buffering features per class. Instead one pass
over the shards keeps, per entry, about 100 bytes — the shard number and byte
offset of its record, video id, entry index, label, window length, ground truth —
and the input pipeline later reads the two records of a pair by offset. Memory is
therefore this index (O(entries), ~1 MB for ActivityNet's 7,593 train entries) plus a
few batches; features are never held beyond the batches in flight.

Weak supervision: :func:`load_index` with ``hide_groundtruth_of="reference"`` drops
the ground truth of every reference-part entry the moment its record is read (it is
never stored), so nothing downstream can use it. The query/reference division by
source video is :func:`weak_role` (a hash of the video id, so it is deterministic,
independent of shard order, and the same on every worker).

TFRecord framing (for the offsets): each record is ``uint64 length, uint32 masked
crc32c(length bytes), data[length], uint32 masked crc32c(data)``, little endian. Every
record read here has both checksums checked (the length's before the length is
trusted, so a corrupt header never allocates) and the file must not end mid-record.
Records are read by TensorFlow's C++ random-access reader (hardware CRC-32C: 0.15 ms per
300 KB record, measured, against 1.3 ms for crcmod's; training reads two per pair); where
it refuses one, the framing is re-read here in Python to say what is damaged. A corrupt record is a
:class:`CorruptRecordError` (a ``DataError``: one line naming the file and byte offset,
exit 2), as is a record whose checksums hold but which is not an Example.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
from typing import List, Optional, Tuple

import numpy as np

from vreloc_tf import schema
from vreloc_tf.errors import DataError

QUERY_PART, REFERENCE_PART = 0, 1


def weak_role(video_id: str, query_fraction: float) -> int:
    """``QUERY_PART`` if the first 32 bits of sha1(video_id) / 2**32 < query_fraction, else ``REFERENCE_PART``."""
    if not 0.0 < query_fraction < 1.0:
        raise ValueError(f"data.weak_query_fraction must be in (0, 1), got {query_fraction}")
    h = int(hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:8], 16) / 2.0 ** 32
    return QUERY_PART if h < query_fraction else REFERENCE_PART


class CorruptRecordError(DataError, schema.SchemaError):
    """A TFRecord file is damaged (a checksum differs, it ends mid-record, a record does not parse).

    A :class:`DataError` (exit 2, the message names the file and byte offset) and a
    ``SchemaError``, so callers that dead-letter an unreadable shard
    (``pipeline.build_index.ReadShardFn``) keep doing so.
    """


_HEADER = 12  # uint64 length + uint32 masked crc of the length
_FOOTER = 4  # uint32 masked crc of the data
_MASK_DELTA = 0xA282EAD8
_crc32c = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: google-crc32c's C code where installed, else crcmod's C
    extension (installed with apache-beam[tfrecord]), the fastest of what the environment has."""
    global _crc32c
    if _crc32c is None:
        try:
            import google_crc32c

            _crc32c = google_crc32c.value
        except ImportError:
            import crcmod.predefined

            _crc32c = crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    return _crc32c(data)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` mod 2**32."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _damaged(path: str, offset: int, what: str) -> CorruptRecordError:
    return CorruptRecordError(f"{path}: corrupt TFRecord file at byte {offset}: {what}; the file was damaged "
                              f"after it was written: restore it or re-run the job that wrote it")


def _read_length(fh, path: str, offset: int, size: int) -> Optional[int]:
    """The data length of the record at ``offset`` (``fh`` positioned there; ``size``: the file's bytes),
    its checksum checked before it is trusted; None at the end of the file."""
    header = fh.read(_HEADER)
    if not header:
        return None
    if len(header) < _HEADER:
        raise _damaged(path, offset, f"the file ends inside a record header ({len(header)} of {_HEADER} bytes)")
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc:
        raise _damaged(path, offset, "the length header's checksum differs (corrupt length)")
    if offset + _HEADER + length + _FOOTER > size:
        raise _damaged(path, offset, f"the file ends inside the record ({length} data bytes announced, "
                                     f"{max(size - offset - _HEADER - _FOOTER, 0)} left)")
    return length


def _read_record(fh, path: str, offset: int, size: int) -> Optional[bytes]:
    """The data of the record at ``offset`` (``fh`` positioned there), both checksums checked here in
    Python; None at the end of the file; :class:`CorruptRecordError` saying what is wrong otherwise."""
    length = _read_length(fh, path, offset, size)
    if length is None:
        return None
    data = fh.read(length)
    footer = fh.read(_FOOTER)
    if len(data) != length or len(footer) != _FOOTER:
        raise _damaged(path, offset, "the file ends inside the record")
    if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise _damaged(path, offset, f"the data checksum differs ({length} bytes)")
    return data


class FramedReader:
    """Checked reads of one TFRecord file, sequential (iteration) or by offset (:meth:`read`)."""

    def __init__(self, path: str):
        from tensorflow.python.lib.io import tf_record

        self.path = path
        self.size = os.path.getsize(path)
        self._reader = tf_record.tf_record_random_reader(path)

    def read(self, offset: int) -> Tuple[bytes, int]:
        """(data, offset of the next record) of the record at ``offset``; :class:`CorruptRecordError`
        naming the file, the offset and what is damaged."""
        from tensorflow.python.framework.errors_impl import DataLossError, OutOfRangeError

        if not 0 <= offset < self.size:
            raise _damaged(self.path, offset, f"no record there (the file has {self.size} bytes; it is shorter "
                                              f"than when its entries were indexed)")
        try:
            return self._reader.read(offset)
        except (DataLossError, OutOfRangeError, IndexError) as exc:
            raise self._explain(offset, exc) from None

    def _explain(self, offset: int, exc: Exception) -> CorruptRecordError:
        """TensorFlow refused the record at ``offset``: the Python checker says which part is damaged."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(offset)
                _read_record(fh, self.path, offset, self.size)
        except CorruptRecordError as err:
            return err
        return _damaged(self.path, offset, f"TensorFlow's reader refused it ({str(exc).splitlines()[0]})")

    def __iter__(self):
        """``(offset, data)`` of every record, in file order."""
        offset = 0
        while offset < self.size:
            data, end = self.read(offset)
            yield offset, data
            offset = end


def iter_framed(path: str):
    """Yield ``(offset, serialized)`` for every record of one TFRecord file, every checksum checked
    (:class:`CorruptRecordError` naming the file and offset otherwise)."""
    yield from FramedReader(path)


def count_framed(path: str) -> int:
    """Records in one TFRecord file from the length headers only (no data read): each length's
    checksum is checked before it is trusted, and the file must not end mid-record."""
    n = 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        offset = 0
        while (length := _read_length(fh, path, offset, size)) is not None:
            offset += _HEADER + length + _FOOTER
            fh.seek(offset)
            n += 1
    return n


def parse_example(data: bytes, path: str, number: int, offset: int):
    """``data`` as a ``tf.train.Example``; :class:`CorruptRecordError` naming the file and record if
    it does not parse (its checksums held: it was written wrong, not damaged on disk)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    try:
        return example_pb2.Example.FromString(data)
    except DecodeError as exc:
        raise CorruptRecordError(f"{path}: record {number} (byte {offset}) is not a tf.train.Example ({exc}); "
                                 f"re-run the job that wrote the file") from None


@dataclasses.dataclass
class EntryIndex:
    """Column arrays, one row per entry of a split (sorted by ``entry_index``)."""

    split: str
    shard_paths: List[str]
    shard: np.ndarray  # int32 [N]
    offset: np.ndarray  # int64 [N]
    video_id: np.ndarray  # object (str) [N]
    entry_index: np.ndarray  # int64 [N]
    label: np.ndarray  # int64 [N]
    length: np.ndarray  # int32 [N] window length L
    groundtruth: np.ndarray  # int32 [N, 2]; [-1, -1] unknown or hidden
    role: Optional[np.ndarray] = None  # int8 [N] QUERY_PART / REFERENCE_PART (weak only)

    def __len__(self) -> int:
        return int(self.shard.shape[0])

    @property
    def has_groundtruth(self) -> np.ndarray:
        return self.groundtruth[:, 0] != schema.UNKNOWN

    def position_of(self, entry_indices) -> np.ndarray:
        """Row numbers of the given ``entry_index`` values (error naming a missing one)."""
        entry_indices = np.asarray(entry_indices, dtype=np.int64)
        pos = np.searchsorted(self.entry_index, entry_indices)
        pos = np.minimum(pos, len(self) - 1)
        bad = self.entry_index[pos] != entry_indices
        if np.any(bad):
            raise KeyError(f"entry_index {int(entry_indices[bad][0])} is not in split '{self.split}'")
        return pos


def load_index(data_dir: str, split: str, hide_groundtruth_of: Optional[str] = None,
               query_fraction: float = 0.5) -> EntryIndex:
    """One pass over the shards of ``split``; see the module docstring.

    ``hide_groundtruth_of="reference"`` assigns weak roles and never stores the ground
    truth of reference-part entries.
    """
    if hide_groundtruth_of not in (None, "reference"):
        raise ValueError(f"hide_groundtruth_of must be None or 'reference', got {hide_groundtruth_of!r}")
    paths = schema.shard_files(data_dir, split)
    rows = []
    for shard_no, path in enumerate(paths):
        for number, (offset, data) in enumerate(iter_framed(path)):
            f = parse_example(data, path, number, offset).features.feature
            try:
                video_id = f["video_id"].bytes_list.value[0].decode("utf-8")
                entry = int(f["entry_index"].int64_list.value[0])
                label = int(f["label"].int64_list.value[0])
                length = int(f["length"].int64_list.value[0])
            except (IndexError, KeyError) as exc:
                raise schema.SchemaError(f"{path} @ byte {offset}: record lacks a field ({exc})") from None
            role = None
            if hide_groundtruth_of == "reference":
                role = weak_role(video_id, query_fraction)
            if role == REFERENCE_PART:
                gt = (schema.UNKNOWN, schema.UNKNOWN)  # never read, never stored
            else:
                gt = tuple(int(v) for v in f["groundtruth"].int64_list.value)
                if len(gt) != 2:
                    raise schema.SchemaError(f"{path} @ byte {offset}: groundtruth has {len(gt)} values, expected 2")
            rows.append((shard_no, offset, video_id, entry, label, length, gt, role))
            del f, data
    if not rows:
        raise DataError(f"split '{split}' in {data_dir} has no records")
    rows.sort(key=lambda r: r[3])
    entries = np.array([r[3] for r in rows], dtype=np.int64)
    if np.any(np.diff(entries) == 0):
        dup = int(entries[np.nonzero(np.diff(entries) == 0)[0][0]])
        raise schema.SchemaError(f"split '{split}' in {data_dir}: entry_index {dup} occurs twice")
    return EntryIndex(
        split=split,
        shard_paths=paths,
        shard=np.array([r[0] for r in rows], dtype=np.int32),
        offset=np.array([r[1] for r in rows], dtype=np.int64),
        video_id=np.array([r[2] for r in rows], dtype=object),
        entry_index=entries,
        label=np.array([r[4] for r in rows], dtype=np.int64),
        length=np.array([r[5] for r in rows], dtype=np.int32),
        groundtruth=np.array([r[6] for r in rows], dtype=np.int32).reshape(-1, 2),
        role=None if hide_groundtruth_of is None else np.array([r[7] for r in rows], dtype=np.int8),
    )


class RecordReader:
    """Reads records of an index by row number (keeps a :class:`FramedReader` per shard open)."""

    def __init__(self, index: EntryIndex):
        self.index = index
        self._files = {}

    def read(self, row: int) -> bytes:
        """The serialized record of row ``row``, checksums checked (:class:`CorruptRecordError`)."""
        shard = int(self.index.shard[row])
        reader = self._files.get(shard)
        if reader is None:
            reader = self._files[shard] = FramedReader(self.index.shard_paths[shard])
        return reader.read(int(self.index.offset[row]))[0]

    def close(self) -> None:
        self._files.clear()  # TensorFlow's readers close their files when released

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
