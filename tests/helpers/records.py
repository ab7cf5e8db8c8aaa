"""Tiny TFRecord data folders for the training/evaluation tests (written with schema.encode_record).

Features are learnable on purpose: every class has a prototype vector, and the rows
inside an entry's ground-truth segment are that prototype plus noise, the rest noise.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from vreloc_tf.data import schema
from vreloc_tf.contract import FRAMES_PER_FEATURE
from vreloc_tf.files import write_json_atomic

TINY_DIM = 8  # feature dim of the tests' tiny data folders (configs/tiny.yaml expects 32: tests --set 8)


def make_records(split: str, classes: List[int], per_class: int, dim: int, rng: np.random.Generator,
                 min_len: int = 12, max_len: int = 40, prototypes: Dict[int, np.ndarray] = None,
                 videos_per_class: int = None) -> List[schema.Record]:
    prototypes = prototypes if prototypes is not None else {}
    records = []
    entry = 0
    for c in classes:
        proto = prototypes.setdefault(c, rng.normal(size=dim).astype(np.float32) * 2.0)
        for k in range(per_class):
            length = int(rng.integers(min_len, max_len + 1))
            glen = int(rng.integers(3, max(4, min(16, length // 2)) + 1))
            g0 = int(rng.integers(0, length - glen + 1))
            feats = rng.normal(size=(length, dim)).astype(np.float32)
            feats[g0:g0 + glen] += proto
            nv = videos_per_class or per_class
            vid = f"{split}_c{c}_v{k % nv}"
            w0 = int(rng.integers(0, 50))
            records.append(schema.Record(video_id=vid, split=split, entry_index=entry, label=c,
                                         window=(w0, w0 + length), groundtruth=(g0, g0 + glen), features=feats))
            entry += 1
    order = rng.permutation(len(records))  # shards are not in entry order
    return [records[i] for i in order]


def write_split(data_dir: str, split: str, records: List[schema.Record], shards: int = 2) -> None:
    import tensorflow as tf

    os.makedirs(data_dir, exist_ok=True)
    for s in range(shards):
        path = os.path.join(data_dir, f"{split}-{s:05d}-of-{shards:05d}.tfrecord")
        with tf.io.TFRecordWriter(path) as w:
            for rec in records[s::shards]:
                w.write(schema.encode_record(rec))


def write_manifest(data_dir: str, dim: int, counts: Dict[str, int], source=None) -> None:
    """A minimal manifest.json; ``source`` (optional) is recorded as every split's source."""
    manifest = {"feature_dim": dim, "frames_per_feature": FRAMES_PER_FEATURE, "counts": counts}
    if source is not None:
        manifest["splits"] = {split: {"source": source} for split in counts}
    write_json_atomic(os.path.join(data_dir, schema.MANIFEST_NAME), manifest)


def make_data_dir(data_dir: str, dim: int = TINY_DIM, seed: int = 0, train_classes: int = 3, per_class: int = 10,
                  eval_classes: int = 2, eval_per_class: int = 6, max_len: int = 40, source=None) -> str:
    """train/val/test splits of learnable records (disjoint classes), 2 shards each, and a manifest."""
    rng = np.random.default_rng(seed)
    protos: Dict[int, np.ndarray] = {}
    splits = {
        "train": make_records("train", list(range(train_classes)), per_class, dim, rng, prototypes=protos,
                              max_len=max_len, videos_per_class=max(2, per_class - 2)),
        "val": make_records("val", list(range(100, 100 + eval_classes)), eval_per_class, dim, rng,
                            prototypes=protos, max_len=max_len),
        "test": make_records("test", list(range(200, 200 + eval_classes)), eval_per_class, dim, rng,
                             prototypes=protos, max_len=max_len),
    }
    for split, records in splits.items():
        write_split(data_dir, split, records)
    write_manifest(data_dir, dim, {k: len(v) for k, v in splits.items()}, source)
    return data_dir
