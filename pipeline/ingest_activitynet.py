"""The ingest job: the ActivityNet C3D HDF5 file + split JSONs -> sharded TFRecords (``vreloc ingest-activitynet``).

One record per split entry: the entry's window ``features[::2][location[0]:location[1]]``
(the benchmark's subsampled index space, see
``../shared/data/activitynet_reloc/README.md``), its label, source id, window and
ground truth (relative to the window). Entries are grouped by video so each
video's rows are read from the HDF5 file once, by a DoFn that opens the file
once per worker (``setup``), not per element. A video missing from the file, a
window past the end of the video's features, an empty window, a ground truth
outside its window or a malformed entry go to the dead-letter output with the
reason (so does a video whose feature dim differs from the file's first one);
the job continues and reconciles its counts (``pipeline.staged_sink``).

Every split records its source: the features file's path *and* the SHA-256 of its
bytes (``splits.<split>.source.features_sha256``), hashed once per run before the
job starts. A file regenerated at the same path is another draw: re-ingesting only
some splits from it into a folder whose other splits came from the old bytes is
refused (:func:`check_same_draw`), so a data folder never holds train from one draw
beside val/test from another under one recorded source.

:func:`run` is the launcher (the command line and the orchestrator call it);
bad inputs it can see before the job starts raise ``InputError``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Dict, Optional, Sequence, Tuple

from pipeline import options, staged_sink  # options first: it quiets Beam's import-time warning

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.synth import SYNTHETIC_ATTR
from vreloc_tf.contract import FRAMES_PER_FEATURE, HDF5_ROW_STRIDE
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import PUBLISHED_C3D, SYNTHETIC, FeatureSpec
from vreloc_tf.files import file_sha256
from vreloc_tf.data.schema import Record, SchemaError

LOG = logging.getLogger(__name__)

JOB = "ingest-activitynet"
DATASET_NAME = "c3d_features"
SPLIT_NAMES = ("train", "val", "test")
MULTIPROCESS_MIN_VIDEOS = 1000  # below this, worker start-up costs more than parallel encoding saves


# --------------------------------------------------------------------------- inputs


def split_files(splits_dir: str) -> Dict[str, str]:
    """The split JSON files present in ``splits_dir`` (train/val/test), by split name."""
    found = {s: FileSystems.join(splits_dir, f"{s}.json") for s in SPLIT_NAMES}
    found = {s: p for s, p in found.items() if FileSystems.exists(p)}
    if not found:
        raise InputError(f"--splits {splits_dir}: none of {', '.join(s + '.json' for s in SPLIT_NAMES)} found; "
                         f"give the folder of Feng et al.'s split files (`vreloc benchmark fetch` downloads them, "
                         f"`vreloc benchmark where` prints their folder)")
    return found


def load_entries(path: str) -> list:
    """The entry list of one split file (Feng's schema); InputError naming the file otherwise."""
    with FileSystems.open(path) as fh:
        try:
            entries = json.loads(fh.read().decode("utf-8"))
        except ValueError as exc:
            raise InputError(f"{path}: not a valid split file: not JSON ({exc})") from None
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a valid split file: expected a JSON list of entries, "
                         f"got {type(entries).__name__}")
    return entries


def open_hdf5(path: str):
    """h5py handle on a local path or, through Beam's FileSystems, a remote one (gs://...)."""
    import h5py

    try:
        if "://" not in path:
            if not os.path.isfile(path):
                raise InputError(f"--features {path}: no such file; give the C3D features file "
                                 f"(sub_activitynet_v1-3.c3d.hdf5, or `vreloc synth` output)")
            return h5py.File(path, "r")
        from apache_beam.io.filesystem import CompressionTypes

        return h5py.File(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), "r")
    except OSError as exc:  # h5py: "file signature not found" and friends
        raise InputError(f"--features {path}: not an HDF5 file ({exc}); give the C3D features file "
                         f"(sub_activitynet_v1-3.c3d.hdf5, or `vreloc synth` output)") from None


def feature_dim_of_file(path: str) -> int:
    """D of the first ``c3d_features`` dataset in the file (videos of another D are dead-lettered)."""
    import h5py

    with open_hdf5(path) as h5:
        for name in h5:
            group = h5[name]
            if isinstance(group, h5py.Group) and DATASET_NAME in group and len(group[DATASET_NAME].shape) == 2:
                return int(group[DATASET_NAME].shape[1])
    raise InputError(f"--features {path}: no group holds a 2-D '{DATASET_NAME}' dataset; "
                     f"expected ActivityNet's layout v_<id>/{DATASET_NAME} [rows, D]")


def feature_spec_of_file(path: str, dim: int) -> dict:
    """The FeatureSpec of the file's features: `vreloc synth`'s (marked by a root attribute), or the
    published ActivityNet C3D features, whose weights and PCA files are not known (None: unchecked)."""
    with open_hdf5(path) as h5:
        family = h5.attrs.get(SYNTHETIC_ATTR)
    if family is not None:
        family = family.decode() if isinstance(family, bytes) else str(family)
        return FeatureSpec(backbone=SYNTHETIC, feature_dim=dim, frames_per_feature=FRAMES_PER_FEATURE,
                           description=f"vreloc synth, family {family} ({path})").to_json()
    return FeatureSpec(backbone=PUBLISHED_C3D, feature_dim=dim, raw_dim=4096, frames_per_feature=FRAMES_PER_FEATURE,
                       pca_components=dim,
                       description=f"published C3D features ({os.path.basename(path)}): Sports-1M C3D fc7 of every "
                                   f"16 frames, reduced by ActivityNet's PCA (PCA_activitynet_v1-3.hdf5); for new "
                                   f"videos give --weights (Sports-1M C3D) and --pca PCA_activitynet_v1-3.hdf5").to_json()


def features_fingerprint(path: str) -> str:
    """SHA-256 of the features file's bytes (read once, in 4 MiB chunks; remote paths through FileSystems)."""
    if "://" not in path:
        return file_sha256(path)
    from apache_beam.io.filesystem import CompressionTypes

    h = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_same_draw(out: str, features: str, sha256: str, splits) -> None:
    """Refuse to ingest ``splits`` of ``features`` (content ``sha256``) into ``out`` where it keeps other
    splits ingested from the same path but other bytes (the file was regenerated since), or from the
    same path before fingerprints were recorded (their draw cannot be told): a DatasetMixError naming
    the file, both fingerprints and the splits. Splits of another path are left to
    ``staged_sink.check_no_mixing``; ``--overwrite`` skips both checks (it replaces the folder)."""
    previous = staged_sink.read_existing_manifest(out)
    if not previous:
        return
    kept = sorted(set(previous.splits or {}) - set(splits))
    other = {}  # recorded fingerprint -> the kept splits that carry it
    for split in kept:
        source = staged_sink.split_source(previous, split) or {}
        if source.get("job") == JOB and source.get("features") == features and source.get("features_sha256") != sha256:
            other.setdefault(source.get("features_sha256"), []).append(split)
    if not other:
        return
    recorded = "; ".join(f"splits {names} were ingested from sha256 {old}" if old else
                         f"splits {names} were ingested before fingerprints were recorded (unknown content)"
                         for old, names in other.items())
    raise staged_sink.DatasetMixError(
        f"--features {features}: the file is now sha256 {sha256}, but in {out} {recorded}; ingesting "
        f"{sorted(splits)} from it would mix two draws of the features under one source: re-ingest every "
        f"split ({', '.join(sorted(set(kept) | set(splits)))}) from this file, or use a new --out folder")


# --------------------------------------------------------------------------- transforms


def check_entry(entry) -> Tuple[str, Tuple[int, int], Tuple[int, int], int]:
    """(video id, window, ground truth, label) of an entry; InputError naming the field at fault."""
    if not isinstance(entry, dict):
        raise InputError(f"malformed entry: expected an object, got {type(entry).__name__}")
    for key in ("id", "label", "location", "groundtruth"):
        if key not in entry:
            raise InputError(f"malformed entry: missing '{key}'")
    try:
        window = tuple(int(v) for v in entry["location"])
        gt = tuple(int(v) for v in entry["groundtruth"])
        label = int(entry["label"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"malformed entry: non-integer location/groundtruth/label ({exc})") from None
    if len(window) != 2 or len(gt) != 2:
        raise InputError("malformed entry: location and groundtruth must be [start, end)")
    return str(entry["id"]), window, gt, label


class ReadSplitEntriesFn(beam.DoFn):
    """(split, path) -> (video id, (split, entry index, entry)); malformed entries -> dead letters."""

    def process(self, element):
        split, path = element
        for index, entry in enumerate(load_entries(path)):
            try:
                video_id = check_entry(entry)[0]
            except ValueError as exc:
                yield staged_sink.dead_letter(split, str(exc), entry, index, path)
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
        if self._h5 is None:  # runners that skip setup (defensive)
            self.setup()
        video_id, items = element
        items = sorted(items, key=lambda it: (it[0], it[1]))
        group = f"v_{video_id}"
        if group not in self._h5 or DATASET_NAME not in self._h5[group]:
            for split, index, entry in items:
                yield staged_sink.dead_letter(split, f"video {group} not in the features file (no {group}/{DATASET_NAME})",
                                              entry, index, self.features_path)
            return
        dataset = self._h5[group][DATASET_NAME]
        if len(dataset.shape) != 2 or (self.feature_dim is not None and dataset.shape[1] != self.feature_dim):
            for split, index, entry in items:
                yield staged_sink.dead_letter(split, f"{group}/{DATASET_NAME} has shape {tuple(dataset.shape)}, "
                                              f"expected [rows, {self.feature_dim}]", entry, index, self.features_path)
            return
        n_feat = -(-int(dataset.shape[0]) // HDF5_ROW_STRIDE)  # rows after [::2]
        parsed = [(split, index, entry) + check_entry(entry)[1:] for split, index, entry in items]
        furthest = max([min(w[1], n_feat) for *_, w, _, _ in parsed] + [0])
        rows = (dataset[: HDF5_ROW_STRIDE * (furthest - 1) + 1][::HDF5_ROW_STRIDE] if furthest > 0
                else np.zeros((0, dataset.shape[1]), np.float32))
        for split, index, entry, window, gt, label in parsed:
            reason = window_problem(window, gt, n_feat)
            if reason:
                yield staged_sink.dead_letter(split, reason, entry, index, self.features_path)
                continue
            record = Record(video_id=video_id, split=split, entry_index=index, label=label, window=window,
                            groundtruth=gt, features=np.ascontiguousarray(rows[window[0]:window[1]], np.float32),
                            frames_per_feature=FRAMES_PER_FEATURE)
            try:
                record.validate()
            except SchemaError as exc:
                yield staged_sink.dead_letter(split, f"invalid record: {exc}", entry, index, self.features_path)
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
                   | "ReadEntries" >> beam.ParDo(ReadSplitEntriesFn()).with_outputs(staged_sink.DEAD_LETTER))
        return staged_sink.split_dead_letters(outputs, "ReadEntries")


class EntriesToRecords(beam.PTransform):
    """Entries keyed by video id -> Records, plus dead letters (each video's rows read once)."""

    def __init__(self, features_path: str, feature_dim: Optional[int] = None):
        super().__init__()
        self.features_path, self.feature_dim = features_path, feature_dim

    def expand(self, keyed_entries):
        outputs = (keyed_entries
                   | "GroupByVideo" >> beam.GroupByKey()
                   | "ExtractWindows" >> beam.ParDo(ExtractWindowsFn(self.features_path, self.feature_dim)).with_outputs(
                       staged_sink.DEAD_LETTER))
        return staged_sink.split_dead_letters(outputs, "ExtractWindows")


def build(pipeline: beam.Pipeline, staging_dir: str, features_path: str, files: Dict[str, str],
          feature_dim: Optional[int] = None):
    """The ingest graph; returns the writers' token PCollections."""
    entries, bad_entries = pipeline | "ReadSplitEntries" >> ReadSplitEntries(files)
    records, bad_windows = entries | "EntriesToRecords" >> EntriesToRecords(features_path, feature_dim)
    dead = (bad_entries, bad_windows) | "AllDeadLetters" >> beam.Flatten()
    return [records | "WriteRecords" >> staged_sink.WriteRecords(staging_dir),
            dead | "WriteDeadLetters" >> staged_sink.WriteDeadLetters(staging_dir)]


def run(features: str, splits_dir: str, out: str, runner: str = options.DEFAULT_RUNNER,
        beam_args: Sequence[str] = (), overwrite: bool = False) -> staged_sink.JobSummary:
    """Ingest ``features`` (HDF5) with the split files of ``splits_dir`` into the data folder ``out``.

    ``runner``/``beam_args``: the Beam runner and pass-through pipeline options
    (``pipeline.options``). ``overwrite``: replace a dataset of another source or
    feature dim in ``out`` instead of refusing (``pipeline.staged_sink``).
    Returns the per-split counts and the manifest written.
    """
    files = split_files(splits_dir)
    entries = {s: load_entries(p) for s, p in files.items()}
    read_counts = {s: len(e) for s, e in entries.items()}
    n_videos = len({e.get("id") for es in entries.values() for e in es if isinstance(e, dict)})
    dim = feature_dim_of_file(features)
    pipeline_options = options.pipeline_options(runner, beam_args, multiprocess=n_videos >= MULTIPROCESS_MIN_VIDEOS)
    LOG.info("%s: %d entries of %d videos from %s, D=%d, runner %s",
             JOB, sum(read_counts.values()), n_videos, features, dim, runner)
    manifest_fields = {
        "feature_dim": dim,
        "frames_per_feature": FRAMES_PER_FEATURE,
        "fps": None,  # unknown for the ActivityNet file; per record fps = -1
        "split_files": dict(files),
        "features": feature_spec_of_file(features, dim),
    }
    sha256 = features_fingerprint(features)
    if not overwrite:
        check_same_draw(out, features, sha256, files)
    source = {"job": JOB, "features": features, "features_sha256": sha256}
    return staged_sink.run_and_publish(
        JOB, pipeline_options, out, read_counts,
        lambda p, staging: build(p, staging, features, files, dim), manifest_fields, source, overwrite=overwrite)
