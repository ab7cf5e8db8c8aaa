"""``vreloc ingest-activitynet``: the ActivityNet C3D HDF5 file + split JSONs -> sharded TFRecords.

One record per split entry: the entry's window ``features[::2][location[0]:location[1]]``
(the benchmark's subsampled index space, see
``../shared/data/activitynet_reloc/README.md``), its label, source id, window and
ground truth (relative to the window). Entries are grouped by video so each
video's rows are read from the HDF5 file once, by a DoFn that opens the file
once per worker (``setup``), not per element. A video missing from the file, a
window past the end of the video's features, an empty window, a ground truth
outside its window or a malformed entry go to the dead-letter output with the
reason (so does a video whose feature dim differs from the file's first one);
the job continues and reconciles its counts (``pipeline.beam_common``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline import beam_common

LOG = logging.getLogger(__name__)

DATASET_NAME = "c3d_features"
FRAMES_PER_FEATURE = 16  # one subsampled feature per 16 frames, no overlap
SPLIT_NAMES = ("train", "val", "test")
MULTIPROCESS_MIN_VIDEOS = 1000  # below this, worker start-up costs more than parallel encoding saves


# --------------------------------------------------------------------------- inputs


def split_files(splits_dir: str) -> Dict[str, str]:
    """The split JSON files present in ``splits_dir`` (train/val/test), by split name."""
    found = {s: FileSystems.join(splits_dir, f"{s}.json") for s in SPLIT_NAMES}
    found = {s: p for s, p in found.items() if FileSystems.exists(p)}
    if not found:
        raise FileNotFoundError(f"{splits_dir}: none of {[s + '.json' for s in SPLIT_NAMES]} found")
    return found


def load_entries(path: str) -> list:
    """The entry list of one split file (Feng's schema); an error naming the file otherwise."""
    with FileSystems.open(path) as fh:
        try:
            entries = json.loads(fh.read().decode("utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(entries).__name__}")
    return entries


def open_hdf5(path: str):
    """h5py handle on a local path or, through Beam's FileSystems, a remote one (gs://...)."""
    import h5py

    if "://" not in path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--features {path}: no such file")
        return h5py.File(path, "r")
    from apache_beam.io.filesystem import CompressionTypes

    return h5py.File(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), "r")


def feature_dim_of_file(path: str) -> int:
    """D of the first ``c3d_features`` dataset in the file (videos of another D are dead-lettered)."""
    import h5py

    with open_hdf5(path) as h5:
        for name in h5:
            group = h5[name]
            if isinstance(group, h5py.Group) and DATASET_NAME in group and len(group[DATASET_NAME].shape) == 2:
                return int(group[DATASET_NAME].shape[1])
    raise ValueError(f"--features {path}: no group holds a 2-D '{DATASET_NAME}' dataset")


# --------------------------------------------------------------------------- transforms


def check_entry(entry) -> Tuple[str, Tuple[int, int], Tuple[int, int], int]:
    """(video id, window, ground truth, label) of an entry; ValueError naming the field at fault."""
    if not isinstance(entry, dict):
        raise ValueError(f"malformed entry: expected an object, got {type(entry).__name__}")
    for key in ("id", "label", "location", "groundtruth"):
        if key not in entry:
            raise ValueError(f"malformed entry: missing '{key}'")
    try:
        window = tuple(int(v) for v in entry["location"])
        gt = tuple(int(v) for v in entry["groundtruth"])
        label = int(entry["label"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"malformed entry: non-integer location/groundtruth/label ({exc})") from None
    if len(window) != 2 or len(gt) != 2:
        raise ValueError("malformed entry: location and groundtruth must be [start, end)")
    return str(entry["id"]), window, gt, label


class ReadSplitEntriesFn(beam.DoFn):
    """(split, path) -> (video id, (split, entry index, entry)); malformed entries -> dead letters."""

    def process(self, element):
        split, path = element
        for index, entry in enumerate(load_entries(path)):
            try:
                video_id = check_entry(entry)[0]
            except ValueError as exc:
                yield beam_common.dead_letter(split, str(exc), entry, index, path)
                continue
            yield video_id, (split, index, entry)


class ExtractWindowsFn(beam.DoFn):
    """(video id, [(split, index, entry), ...]) -> one Record per entry, or a dead letter with the reason.

    Reads the video's rows once (only up to the furthest window end, as one
    contiguous slice; ``[::2]`` happens in memory, faster than a strided
    HDF5 selection) and cuts every entry's window from them.
    """

    def __init__(self, features_path: str, feature_dim: Optional[int] = None):
        self.features_path = features_path
        self.feature_dim = feature_dim
        self._h5 = None

    def setup(self):
        self._h5 = open_hdf5(self.features_path)

    def teardown(self):
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    def process(self, element):
        from vreloc_tf.schema import Record, SchemaError

        if self._h5 is None:  # runners that skip setup (defensive)
            self.setup()
        video_id, items = element
        items = sorted(items, key=lambda it: (it[0], it[1]))
        group = f"v_{video_id}"
        if group not in self._h5 or DATASET_NAME not in self._h5[group]:
            for split, index, entry in items:
                yield beam_common.dead_letter(split, f"video {group} not in the features file (no {group}/{DATASET_NAME})",
                                              entry, index, self.features_path)
            return
        dataset = self._h5[group][DATASET_NAME]
        if len(dataset.shape) != 2 or (self.feature_dim is not None and dataset.shape[1] != self.feature_dim):
            for split, index, entry in items:
                yield beam_common.dead_letter(split, f"{group}/{DATASET_NAME} has shape {tuple(dataset.shape)}, "
                                              f"expected [rows, {self.feature_dim}]", entry, index, self.features_path)
            return
        n_feat = (int(dataset.shape[0]) + 1) // 2  # rows after [::2]
        parsed = [(split, index, entry) + check_entry(entry)[1:] for split, index, entry in items]
        furthest = max([min(w[1], n_feat) for *_, w, _, _ in parsed] + [0])
        rows = dataset[: max(0, 2 * furthest - 1)][::2] if furthest > 0 else np.zeros((0, dataset.shape[1]), np.float32)
        for split, index, entry, window, gt, label in parsed:
            reason = window_problem(window, gt, n_feat)
            if reason:
                yield beam_common.dead_letter(split, reason, entry, index, self.features_path)
                continue
            record = Record(video_id=video_id, split=split, entry_index=index, label=label, window=window,
                            groundtruth=gt, features=np.ascontiguousarray(rows[window[0]:window[1]], np.float32),
                            frames_per_feature=FRAMES_PER_FEATURE)
            try:
                record.validate()
            except SchemaError as exc:
                yield beam_common.dead_letter(split, f"invalid record: {exc}", entry, index, self.features_path)
                continue
            yield record


def window_problem(window: Tuple[int, int], gt: Tuple[int, int], n_feat: int) -> str:
    """Why an entry's window/ground truth cannot be cut from a video of ``n_feat`` features ('' if fine)."""
    start, end = window
    if start < 0:
        return f"window {list(window)} starts before the video (negative start)"
    if end <= start:
        return f"empty window {list(window)}"
    if end > n_feat:
        return f"window {list(window)} past the end of the video ({n_feat} features after [::2])"
    if not (0 <= gt[0] < gt[1] <= end - start):
        return f"ground truth {list(gt)} outside its window of {end - start} features"
    return ""


class ReadSplitEntries(beam.PTransform):
    """Split JSON files -> entries keyed by video id, plus dead letters for malformed entries."""

    def __init__(self, files: Dict[str, str]):
        super().__init__()
        self.files = files

    def expand(self, pbegin):
        outputs = (pbegin
                   | "SplitFiles" >> beam.Create(sorted(self.files.items()))
                   | "ReadEntries" >> beam.ParDo(ReadSplitEntriesFn()).with_outputs(beam_common.DEAD_LETTER))
        return beam_common.split_dead_letters(outputs, "ReadEntries")


class EntriesToRecords(beam.PTransform):
    """Entries keyed by video id -> Records, plus dead letters (each video's rows read once)."""

    def __init__(self, features_path: str, feature_dim: Optional[int] = None):
        super().__init__()
        self.features_path, self.feature_dim = features_path, feature_dim

    def expand(self, keyed_entries):
        outputs = (keyed_entries
                   | "GroupByVideo" >> beam.GroupByKey()
                   | "ExtractWindows" >> beam.ParDo(ExtractWindowsFn(self.features_path, self.feature_dim)).with_outputs(
                       beam_common.DEAD_LETTER))
        return beam_common.split_dead_letters(outputs, "ExtractWindows")


def build(pipeline: beam.Pipeline, staging_dir: str, features_path: str, files: Dict[str, str],
          feature_dim: Optional[int] = None):
    """The ingest graph; returns the writers' token PCollections."""
    entries, bad_entries = pipeline | "ReadSplitEntries" >> ReadSplitEntries(files)
    records, bad_windows = entries | "EntriesToRecords" >> EntriesToRecords(features_path, feature_dim)
    dead = (bad_entries, bad_windows) | "AllDeadLetters" >> beam.Flatten()
    return [records | "WriteRecords" >> beam_common.WriteRecords(staging_dir),
            dead | "WriteDeadLetters" >> beam_common.WriteDeadLetters(staging_dir)]


def run(features: str, splits_dir: str, out: str, runner: str = "DirectRunner", beam_args=()) -> Dict[str, beam_common.SplitCounts]:
    files = split_files(splits_dir)
    entries = {s: load_entries(p) for s, p in files.items()}
    read_counts = {s: len(e) for s, e in entries.items()}
    n_videos = len({e.get("id") for es in entries.values() for e in es if isinstance(e, dict)})
    dim = feature_dim_of_file(features)
    options = beam_common.pipeline_options(runner, beam_args, multiprocess=n_videos >= MULTIPROCESS_MIN_VIDEOS)
    LOG.info("ingest-activitynet: %d entries of %d videos from %s, D=%d, runner %s",
             sum(read_counts.values()), n_videos, features, dim, runner)
    manifest_fields = {
        "feature_dim": dim,
        "frames_per_feature": FRAMES_PER_FEATURE,
        "fps": None,  # unknown for the ActivityNet file; per record fps = -1
        "source": {"job": "ingest-activitynet", "features": features, "splits": {s: p for s, p in files.items()}},
    }
    return beam_common.run_and_publish(
        "ingest-activitynet", options, out, read_counts,
        lambda p, staging: build(p, staging, features, files, dim), manifest_fields)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, help="the C3D HDF5 file (sub_activitynet_v1-3.c3d.hdf5)")
    parser.add_argument("--splits", required=True, help="folder with train.json, val.json, test.json (Feng's schema)")
    parser.add_argument("--out", required=True, help="data folder for the shards, dead_letter/ and manifest.json")
    beam_common.add_beam_arguments(parser)


def main(args: argparse.Namespace) -> int:
    beam_common.enable_progress_logging()
    counts = run(args.features, args.splits, args.out, args.runner, args.beam_args)
    return 0 if all(c.reconciles() for c in counts.values()) else 1
