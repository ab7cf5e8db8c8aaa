"""``vreloc synth``: a synthetic dataset in the exact on-disk format of the real benchmark.

Why: the demo and the tests must go through the same ingest path as the real ActivityNet
C3D file (an HDF5 file of C3D rows every 8 frames, and Feng et al.'s split JSONs), without
a multi-GB download. The geometry is either the benchmark's own (``lengths`` and
``splits_dir``) or one of its own (``GEOMETRIES``); the features come from one of several
structurally different feature families (:mod:`pipeline.families`), so that a quality claim
can be checked on data the model was not tuned to. docs/DATA.md documents each family and
each geometry in one place.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from pipeline.families import Instance, make_family
from vreloc_tf.contract import FEATURE_DIM, FRAMES_PER_FEATURE, MAX_GROUNDTRUTH, MAX_WINDOW
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path, read_json, write_json_atomic

LOG = logging.getLogger(__name__)

SYNTHETIC_ATTR = "vreloc_synthetic_family"  # root attribute of the HDF5 files `vreloc synth` writes
HDF5_NAME = "sub_activitynet_v1-3.c3d.hdf5"
DATASET_NAME = "c3d_features"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_FAMILY = "demo"
DISTRACTORS_NAME = "distractors.json"  # the distractor family's second actions and counts (in no split file)

@dataclasses.dataclass
class Geometry:
    """Everything but the features: videos, their instances, and the split entries."""

    n_feat: Dict[str, int]  # video id -> number of subsampled features
    instances: Dict[str, List[Instance]]
    splits: Dict[str, List[dict]]  # split -> entries in Feng's schema
    n_frames: Dict[str, int] = dataclasses.field(default_factory=dict)

    def video_ids(self) -> List[str]:
        """The videos in the order of the HDF5 file: a video's position is its family video index."""
        return sorted(self.n_feat)


# --------------------------------------------------------------------------- geometry


def feng_window(instances: List[Tuple[int, int]], i: int, n_feat: int) -> Tuple[int, int]:
    """Feng's window of instance ``i`` among a video's sorted instances.

    From the last feature of the previous instance to the first feature of the
    next one (the video's ends otherwise), cut to at most MAX_WINDOW features
    around the instance (centered, shifted back inside the window's bounds).
    """
    s, e = instances[i]
    lo = max(0, instances[i - 1][1] - 1) if i > 0 else 0
    hi = min(n_feat, instances[i + 1][0] + 1) if i + 1 < len(instances) else n_feat
    lo, hi = min(lo, s), max(hi, e)
    if hi - lo > MAX_WINDOW:
        extra = MAX_WINDOW - (e - s)
        start = max(lo, s - extra // 2)
        start = min(start, hi - MAX_WINDOW)
        lo, hi = start, start + MAX_WINDOW
    return lo, hi


# Geometry of `vreloc synth` without --lengths (docs/DATA.md): classes and videos per class of
# train / val / test, so that the test split gives >= 500 pairs (one pair moves a number by
# 100/N points) and the train split over a thousand entries.
GEOMETRIES = {
    "default": {"classes": (80, 20, 20), "videos": (10, 10, 18)},
    # a train split as small as the first demo's (40 classes x 5 videos): the hard regime
    "small-train": {"classes": (40, 20, 20), "videos": (5, 10, 18)},
    # a few dozen videos: the whole chain in about two minutes, to try a set-up or test the plumbing (no quality claim)
    "smoke": {"classes": (8, 4, 4), "videos": (4, 3, 3)},
}
VIDEO_LENGTHS = (40, 200)  # features per video, log-uniform
ACTION_LENGTHS = (4, MAX_GROUNDTRUTH)  # features per action instance, log-uniform


def synthetic_geometry(rng: np.random.Generator, classes=(80, 20, 20), videos=(10, 10, 18),
                       video_lengths=VIDEO_LENGTHS, action_lengths=ACTION_LENGTHS) -> Geometry:
    """A geometry of its own: disjoint classes per split, 1-3 action instances per video.

    Videos of ``video_lengths`` features and instances of ``action_lengths`` features (both
    log-uniform), placed at random without overlap; one entry per instance, whose window
    follows Feng's rule (:func:`feng_window`). Labels of different splits never coincide.
    """
    n_feat, instances, n_frames = {}, {}, {}
    splits: Dict[str, List[dict]] = {s: [] for s in SPLIT_NAMES}
    label = 1000
    log_video, log_action = np.log(video_lengths), np.log([action_lengths[0], action_lengths[1] + 0.99])
    for split, n_cls, n_vid in zip(SPLIT_NAMES, classes, videos):
        for _ in range(n_cls):
            label += 1
            for _ in range(n_vid):
                vid = f"syn{len(n_feat):06d}"
                n_inst = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                lengths = np.clip(np.exp(rng.uniform(*log_action, n_inst)).astype(int), *action_lengths)
                n = int(np.round(np.exp(rng.uniform(*log_video))))
                n = max(n, int(lengths.sum()) + 2 * n_inst + 4)
                # Random non-overlapping placement: the free space goes to n_inst + 1 gaps
                # (at least one feature between two instances).
                free = n - int(lengths.sum()) - (n_inst - 1)
                gaps = rng.multinomial(free, rng.dirichlet(np.ones(n_inst + 1)))
                spans, pos = [], int(gaps[0])
                for k in range(n_inst):
                    spans.append((pos, pos + int(lengths[k])))
                    pos += int(lengths[k]) + 1 + int(gaps[k + 1])
                n_feat[vid] = n
                n_frames[vid] = FRAMES_PER_FEATURE * n + int(rng.integers(0, FRAMES_PER_FEATURE))
                instances[vid] = [Instance(label, s, e) for s, e in spans]
                for i, (s, e) in enumerate(spans):
                    lo, hi = feng_window(spans, i, n)
                    splits[split].append({"id": vid, "label": label, "location": [lo, hi],
                                          "groundtruth": [s - lo, e - lo]})
    return Geometry(n_feat, instances, splits, n_frames)


def real_geometry(lengths_file: str, splits_dir: str) -> Geometry:
    """The benchmark's geometry: its split entries and, per video, ``n_feat`` from ``length.json``."""
    lengths = read_json(lengths_file, "length.json")
    splits: Dict[str, List[dict]] = {}
    n_feat: Dict[str, int] = {}
    n_frames: Dict[str, int] = {}
    instances: Dict[str, List[Instance]] = {}
    for split in SPLIT_NAMES:
        path = os.path.join(splits_dir, f"{split}.json")
        entries = read_json(path, "split file")
        splits[split] = entries
        for k, entry in enumerate(entries):
            vid = entry["id"]
            if vid not in lengths:
                raise InputError(f"{path}: entry {k} (video {vid}) is not in {lengths_file}")
            n = int(lengths[vid]["n_feat"])
            lo, hi = (int(v) for v in entry["location"])
            if hi > n:
                raise InputError(f"{path}: entry {k} (video {vid}) has location {[lo, hi]} past n_feat={n} "
                                 f"in {lengths_file}")
            n_feat[vid] = n
            n_frames[vid] = int(lengths[vid].get("n_frames", FRAMES_PER_FEATURE * n))
            g0, g1 = (int(v) for v in entry["groundtruth"])
            inst = Instance(int(entry["label"]), lo + g0, lo + g1)
            if inst not in instances.setdefault(vid, []):
                instances[vid].append(inst)
    return Geometry(n_feat, instances, splits, n_frames)


# --------------------------------------------------------------------------- features


def interleave_rows(subsampled: np.ndarray) -> np.ndarray:
    """HDF5 rows [2n, D] whose ``[::2]`` is ``subsampled``; odd rows average their neighbours."""
    n = subsampled.shape[0]
    rows = np.empty((2 * n, subsampled.shape[1]), np.float32)
    rows[0::2] = subsampled
    nxt = np.concatenate([subsampled[1:], subsampled[-1:]])
    rows[1::2] = 0.5 * (subsampled + nxt)
    return rows


# --------------------------------------------------------------------------- writing


def generate(out_dir: str, seed: int = 0, dim: int = FEATURE_DIM, lengths: Optional[str] = None,
             splits_dir: Optional[str] = None, family: str = DEFAULT_FAMILY,
             geometry: str = "default") -> Dict[str, object]:
    """Write the HDF5 file, the split JSONs and length.json; return a summary dict.

    ``family``: the feature model (pipeline.families); ``geometry``: a key of GEOMETRIES,
    unless ``lengths`` and ``splits_dir`` give the benchmark's own geometry.
    """
    import h5py

    if (lengths is None) != (splits_dir is None):
        raise InputError("--lengths and --splits go together (the benchmark's length.json and its split folder)")
    t0 = time.time()
    model = make_family(family, seed, dim)
    geometry_name = "benchmark" if lengths is not None else geometry
    if lengths is not None:
        geometry = real_geometry(lengths, splits_dir)
    elif geometry in GEOMETRIES:
        geometry = synthetic_geometry(np.random.default_rng([seed, 1]), **GEOMETRIES[geometry])
    else:
        raise InputError(f"--geometry {geometry!r}: unknown; choose one of {', '.join(GEOMETRIES)} "
                         f"(or --lengths/--splits for the benchmark's)")
    # a family that places something by the split geometry (distractor: its second actions) plans first
    planned = model.plan(geometry) if getattr(model, "needs_geometry", False) else None
    os.makedirs(out_dir, exist_ok=True)
    h5_path = os.path.join(out_dir, HDF5_NAME)
    n_rows = 0
    with atomic_path(h5_path) as tmp_path, h5py.File(tmp_path, "w") as h5:
        h5.attrs[SYNTHETIC_ATTR] = family  # tells ingest these are not C3D features of real videos
        for k, vid in enumerate(geometry.video_ids()):
            feats = model.video(k, geometry.n_feat[vid], geometry.instances.get(vid, []))
            rows = interleave_rows(feats)
            h5.create_group(f"v_{vid}").create_dataset(DATASET_NAME, data=rows)
            n_rows += rows.shape[0]
            if (k + 1) % 500 == 0:
                LOG.info("synth: %d / %d videos", k + 1, len(geometry.n_feat))
    for split, entries in geometry.splits.items():
        write_json_atomic(os.path.join(out_dir, f"{split}.json"), entries, indent=None)
    write_json_atomic(os.path.join(out_dir, "length.json"),
                      {vid: {"n_frames": geometry.n_frames.get(vid, FRAMES_PER_FEATURE * n), "n_feat": n}
                       for vid, n in sorted(geometry.n_feat.items())}, indent=None)
    summary = {
        "out": out_dir, "hdf5": h5_path, "dim": dim, "seed": seed, "videos": len(geometry.n_feat),
        "rows": n_rows, "entries": {s: len(e) for s, e in geometry.splits.items()},
        "family": family, "geometry": geometry_name, "seconds": round(time.time() - t0, 1),
    }
    if planned is not None:
        # The second actions are in no split file: this manifest is where they and their counts are.
        write_json_atomic(os.path.join(out_dir, DISTRACTORS_NAME), {
            "family": family, "seed": seed, "geometry": geometry_name, "counts": planned,
            "videos": {p.video_id: {"label": p.label, "actions": [[a.start, a.end] for a in p.actions]}
                       for p in model.plans.values() if p.actions}}, indent=None)
        summary["distractors"] = planned
    return summary


def distractor_line(counts: Dict[str, object]) -> str:
    """One line of the ``distractor`` family's counts (``summary["distractors"]`` of :func:`generate`)."""
    windows = counts["windows"]
    per_split = ", ".join(f"{s} {w['holding']}/{w['entries']}" for s, w in windows.items())
    return (f"synth: distractor: {counts['with']} of {counts['videos']} videos hold a second action, "
            f"{counts['without']} could not ({counts['without_no_room']} no room, "
            f"{counts['without_no_other_class']} no other class in the split); {counts['second_actions']} second "
            f"actions, {counts['shortened']} cut to fit; entry windows holding one: {per_split}")
