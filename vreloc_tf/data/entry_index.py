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

Records are read, both checksums checked, through :mod:`vreloc_tf.data.tfrecord` (the one reader of
TFRecord framing): a damaged record is its ``CorruptRecordError`` (a ``DataError``: one line naming
the file and byte offset, exit 2), as is a record whose checksums hold but which is not an Example.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import List, Optional

import numpy as np

from vreloc_tf.data import schema
from vreloc_tf.errors import DataError
from vreloc_tf.data.tfrecord import CorruptRecordError, FramedReader, iter_records

QUERY_PART, REFERENCE_PART = 0, 1


def weak_role(video_id: str, query_fraction: float) -> int:
    """``QUERY_PART`` if the first 32 bits of sha1(video_id) / 2**32 < query_fraction, else ``REFERENCE_PART``."""
    if not 0.0 < query_fraction < 1.0:
        raise ValueError(f"data.weak_query_fraction must be in (0, 1), got {query_fraction}")
    h = int(hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:8], 16) / 2.0 ** 32
    return QUERY_PART if h < query_fraction else REFERENCE_PART


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
        for number, (offset, data) in enumerate(iter_records(path)):
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
