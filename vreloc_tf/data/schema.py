"""The TFRecord contract between the Beam jobs and training — defined once, here.

Every Beam job (``pipeline/``) writes records with :func:`encode_record`; every
reader (tf.data in ``vreloc_tf/data/input_pipeline.py``, tests, tools) parses them
with :func:`parse_record_tf` or :func:`decode_record`. ARCHITECTURE.md refers
to this module rather than restating it.

One record = one split entry (one action instance in one source video):

===================  =======  ===========  ==============================================
field                dtype    shape        meaning
===================  =======  ===========  ==============================================
``video_id``         bytes    []           source video id (YouTube id, no ``v_`` prefix)
``split``            bytes    []           ``train`` | ``val`` | ``test`` (or a user name)
``entry_index``      int64    []           position of the entry in its split file
``label``            int64    []           class id (ActivityNet taxonomy nodeId); -1 = unknown
``window``           int64    [2]          [start, end) of the window in the source video's
                                           feature index space (one feature per 16 frames)
``groundtruth``      int64    [2]          [start, end) of the action, relative to
                                           ``window[0]``; [-1, -1] = no ground truth known
``length``           int64    []           number of feature rows L = window[1] - window[0]
``feature_dim``      int64    []           D (500 for C3D + PCA; any D is accepted)
``features``         float32  [L * D]      the window's features, row-major [L, D]
``fps``              float32  []           source frame rate; -1 = unknown
``frames_per_feature`` int64  []           frames covered by one feature (16 for C3D)
===================  =======  ===========  ==============================================

Shards of a split are named ``<split>-SSSSS-of-NNNNN.tfrecord`` in the data
folder, next to ``manifest.json`` (written by the Beam job).
"""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, List

import numpy as np

from vreloc_tf import contract
from vreloc_tf.errors import InputError
from vreloc_tf.data.tfrecord import iter_records

UNKNOWN = -1  # the value of an unknown label, ground truth, or fps
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
SHARD_SUFFIX = ".tfrecord"


class SchemaError(InputError):
    """A record violates the contract; the message names the field."""


@dataclasses.dataclass
class Record:
    """One entry, in NumPy form (what Beam DoFns build and tests compare)."""

    video_id: str
    split: str
    entry_index: int
    label: int
    window: tuple
    groundtruth: tuple
    features: np.ndarray  # float32 [L, D]
    fps: float = float(UNKNOWN)
    frames_per_feature: int = contract.FRAMES_PER_FEATURE

    @property
    def length(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def has_groundtruth(self) -> bool:
        return int(self.groundtruth[0]) != UNKNOWN

    def validate(self) -> None:
        """Raise SchemaError naming the first field that breaks the contract."""
        f = self.features
        if not isinstance(f, np.ndarray) or f.ndim != 2:
            raise SchemaError(f"features: expected a 2-D array [L, D], got {getattr(f, 'shape', type(f))}")
        if f.shape[0] == 0:
            raise SchemaError("features: empty window (L = 0)")
        if f.shape[1] == 0:
            raise SchemaError("features: feature_dim is 0")
        if not np.all(np.isfinite(f)):
            raise SchemaError("features: contains NaN or Inf")
        w0, w1 = (int(v) for v in self.window)
        if w1 - w0 != f.shape[0]:
            raise SchemaError(f"window: {list(self.window)} spans {w1 - w0} rows but features has {f.shape[0]}")
        g0, g1 = (int(v) for v in self.groundtruth)
        if (g0, g1) != (UNKNOWN, UNKNOWN) and not (0 <= g0 < g1 <= f.shape[0]):
            raise SchemaError(f"groundtruth: {[g0, g1]} is not inside the window [0, {f.shape[0]})")


def encode_record(rec: Record) -> bytes:
    """Serialize a Record to a ``tf.train.Example`` (validated first)."""
    from tensorflow.core.example import example_pb2, feature_pb2

    rec.validate()

    def ints(values):
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(v) for v in values]))

    def floats(values):
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))

    def packed_floats(array: np.ndarray):
        # The wire form of a packed FloatList (field 1, length-delimited, little-endian float32),
        # built from the array's bytes: ~150x faster than FloatList(value=...) for a 300x500
        # window, and byte-identical.
        from google.protobuf.internal.encoder import _VarintBytes

        raw = array.astype("<f4", copy=False).tobytes()
        return feature_pb2.Feature(float_list=feature_pb2.FloatList.FromString(b"\x0a" + _VarintBytes(len(raw)) + raw))

    def bytes_(value: str):
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value.encode("utf-8")]))

    feats = np.ascontiguousarray(rec.features, dtype=np.float32)
    example = example_pb2.Example(features=feature_pb2.Features(feature={
        "video_id": bytes_(rec.video_id),
        "split": bytes_(rec.split),
        "entry_index": ints([rec.entry_index]),
        "label": ints([rec.label]),
        "window": ints(rec.window),
        "groundtruth": ints(rec.groundtruth),
        "length": ints([feats.shape[0]]),
        "feature_dim": ints([feats.shape[1]]),
        "features": packed_floats(feats.reshape(-1)),
        "fps": floats([float(rec.fps)]),
        "frames_per_feature": ints([rec.frames_per_feature]),
    }))
    return example.SerializeToString()


def decode_record(serialized: bytes) -> Record:
    """Parse one serialized example into a Record without TensorFlow ops (protobuf only)."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    f = ex.features.feature

    def one_int(name):
        if name not in f:
            raise SchemaError(f"{name}: missing from the record")
        return int(f[name].int64_list.value[0])

    length, dim = one_int("length"), one_int("feature_dim")
    values = np.asarray(f["features"].float_list.value, dtype=np.float32)
    if values.size != length * dim:
        raise SchemaError(f"features: {values.size} values, expected length*feature_dim = {length}*{dim}")
    return Record(
        video_id=f["video_id"].bytes_list.value[0].decode("utf-8"),
        split=f["split"].bytes_list.value[0].decode("utf-8"),
        entry_index=one_int("entry_index"),
        label=one_int("label"),
        window=tuple(int(v) for v in f["window"].int64_list.value),
        groundtruth=tuple(int(v) for v in f["groundtruth"].int64_list.value),
        features=values.reshape(length, dim),
        fps=float(f["fps"].float_list.value[0]),
        frames_per_feature=one_int("frames_per_feature"),
    )


def feature_spec() -> Dict[str, object]:
    """The ``tf.io.parse_single_example`` spec of the contract."""
    import tensorflow as tf

    return {
        "video_id": tf.io.FixedLenFeature([], tf.string),
        "split": tf.io.FixedLenFeature([], tf.string),
        "entry_index": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "window": tf.io.FixedLenFeature([2], tf.int64),
        "groundtruth": tf.io.FixedLenFeature([2], tf.int64),
        "length": tf.io.FixedLenFeature([], tf.int64),
        "feature_dim": tf.io.FixedLenFeature([], tf.int64),
        "features": tf.io.VarLenFeature(tf.float32),
        "fps": tf.io.FixedLenFeature([], tf.float32),
        "frames_per_feature": tf.io.FixedLenFeature([], tf.int64),
    }


def parse_record_tf(serialized):
    """Parse a serialized example inside a tf.data graph; ``features`` comes back [L, D] float32."""
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    length = tf.cast(parsed["length"], tf.int32)
    dim = tf.cast(parsed["feature_dim"], tf.int32)
    parsed["features"] = tf.reshape(tf.sparse.to_dense(parsed["features"]), tf.stack([length, dim]))
    return parsed


def shard_files(data_dir: str, split: str) -> List[str]:
    """The shards of ``split`` in ``data_dir``, sorted; an error naming the folder if there are none."""
    files = sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*{SHARD_SUFFIX}")))
    if not files:
        raise FileNotFoundError(f"no TFRecord shards for split '{split}' in {data_dir} "
                                f"(expected {split}-SSSSS-of-NNNNN{SHARD_SUFFIX})")
    return files


def read_records(data_dir: str, split: str) -> List[Record]:
    """All records of a split, in shard order (small data, tests and tools only), checksums checked."""
    return [decode_record(data) for path in shard_files(data_dir, split) for _, data in iter_records(path)]
