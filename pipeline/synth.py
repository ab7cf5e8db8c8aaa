"""``vreloc synth``: a synthetic dataset in the exact on-disk format of the real benchmark.

Why: the demo and the tests must go through the same ingest path as the real ActivityNet
C3D file (an HDF5 file of C3D rows every 8 frames, and Feng et al.'s split JSONs), without
a multi-GB download. The geometry is either the benchmark's own (``lengths`` and
``splits_dir``) or a small one for the demo; the features follow a model of C3D features
in which only a trained model, not a per-clip cosine, finds the action. docs/DATA.md
documents what each component of that model stands for, why, and what it measures.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from vreloc_tf.contract import FRAMES_PER_FEATURE, MAX_GROUNDTRUTH, MAX_WINDOW
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path, read_json, write_json_atomic

LOG = logging.getLogger(__name__)

HDF5_NAME = "sub_activitynet_v1-3.c3d.hdf5"
DATASET_NAME = "c3d_features"
SPLIT_NAMES = ("train", "val", "test")
DEFAULT_DIM = 500  # the paper's feature dim (C3D fc7 after PCA); the demo writes 32

# The feature model's components (docs/DATA.md: what each stands for and why).
COMMON_NORM = 0.8  # component shared by every clip
SCENE_NORM = 0.3  # per-video appearance
ACTION_NORM = 1.5  # class signature inside an instance
POSE_CORRELATION = 0.9  # cosine between a class's start and end poses
SIGNATURE_JITTER = 0.3  # per-instance deviation from the class's poses
DISTRACTOR_NORM = 1.0  # other activity in the background
N_DISTRACTOR_CLASSES = 30
MEAN_GAP_BETWEEN_EPISODES = 25.0  # one other-activity episode per 25 features on average
JITTER_NORM = 4.0  # per-clip jitter on moving clips (norm of one feature's jitter)
SENSOR_NOISE_NORM = 0.2  # white noise on every clip


@dataclasses.dataclass
class Instance:
    """One action instance in one video, in the subsampled feature index space."""

    label: int
    start: int
    end: int  # exclusive


@dataclasses.dataclass
class Geometry:
    """Everything but the features: videos, their instances, and the split entries."""

    n_feat: Dict[str, int]  # video id -> number of subsampled features
    instances: Dict[str, List[Instance]]
    splits: Dict[str, List[dict]]  # split -> entries in Feng's schema
    n_frames: Dict[str, int] = dataclasses.field(default_factory=dict)


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


def default_geometry(rng: np.random.Generator, n_classes=(40, 10, 10), videos_per_class: int = 5) -> Geometry:
    """A small dataset of its own (see the module docstring for the distributions)."""
    n_feat, instances, n_frames = {}, {}, {}
    splits: Dict[str, List[dict]] = {s: [] for s in SPLIT_NAMES}
    label = 1000
    for split, n_cls in zip(SPLIT_NAMES, n_classes):
        for _ in range(n_cls):
            label += 1
            for _ in range(videos_per_class):
                vid = f"syn{len(n_feat):06d}"
                n_inst = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                lengths = np.clip(np.round(rng.lognormal(np.log(11.0), 0.55, n_inst)), 2, MAX_GROUNDTRUTH).astype(int)
                n = int(np.clip(np.round(rng.lognormal(np.log(48.0), 0.6)), 8, 400))
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


class FeatureModel:
    """The generator's feature model (module docstring); deterministic given (seed, dim)."""

    def __init__(self, seed: int, dim: int):
        if dim < 2:
            raise InputError(f"--dim must be at least 2, got {dim}")
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 7919])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.action_dim = max(1, dim // 2)
        self.u_action = basis[:, : self.action_dim].T.astype(np.float32)  # [dA, D]: where activities live
        self.common = _unit_rows(rng.standard_normal((1, dim)))[0] * COMMON_NORM  # [D], shared by every clip
        self._signatures: Dict[int, np.ndarray] = {}

    def signature(self, label: int) -> np.ndarray:
        """The class's [2, dA] start and end poses (unit vectors, cosine ~POSE_CORRELATION), fixed by seed and label."""
        if label not in self._signatures:
            rng = np.random.default_rng([self.seed, 104729, int(label) & 0x7FFFFFFF])
            poses = _unit_rows(rng.standard_normal((2, self.action_dim)))
            poses[1] = POSE_CORRELATION * poses[0] + np.sqrt(1.0 - POSE_CORRELATION ** 2) * poses[1]
            self._signatures[label] = _unit_rows(poses)
        return self._signatures[label]

    def video(self, vid_index: int, n: int, instances: List[Instance]) -> np.ndarray:
        """Subsampled features [n, D] float32 of one video."""
        rng = np.random.default_rng([self.seed, 31337, vid_index])
        d_a, dim = self.action_dim, self.dim
        activity = np.zeros((n, d_a), np.float32)
        motion = np.zeros(n, np.float32)  # 1 on clips with movement (actions and other activity)
        occupied = np.zeros(n, bool)
        for inst in instances:
            s, e = max(0, inst.start), min(n, inst.end)
            if e <= s:
                continue
            sig = self.signature(inst.label) + (SIGNATURE_JITTER / np.sqrt(d_a)) * rng.standard_normal((2, d_a))
            sig = _unit_rows(sig) * ACTION_NORM * rng.uniform(0.85, 1.15)
            w = np.linspace(0.0, 1.0, e - s, dtype=np.float32)[:, None]
            activity[s:e] += (1 - w) * sig[0] + w * sig[1]
            motion[s:e] = 1.0
            occupied[max(0, s - 1):min(n, e + 1)] = True
        # Other activity in the background: distractor classes, never a split's class.
        for _ in range(rng.poisson(n / MEAN_GAP_BETWEEN_EPISODES)):
            length = int(rng.integers(3, 21))
            start = int(rng.integers(0, max(1, n - length + 1)))
            span = np.arange(start, min(n, start + length))
            span = span[~occupied[span]]
            if span.size == 0:
                continue
            sig = self.signature(-1 - int(rng.integers(0, N_DISTRACTOR_CLASSES)))
            activity[span] += DISTRACTOR_NORM * sig[0]
            motion[span] = 1.0
        scene = _unit_rows(rng.standard_normal((1, dim)))[0] * SCENE_NORM
        # Clip-grid jitter on moving clips: differences of a white process, so it cancels
        # over any contiguous run of moving clips (see the module docstring).
        white = rng.standard_normal((n + 1, dim)).astype(np.float32)
        jitter = (white[1:] - white[:-1]) * (JITTER_NORM / np.sqrt(2 * dim)) * motion[:, None]
        sensor = rng.standard_normal((n, dim)).astype(np.float32) * (SENSOR_NOISE_NORM / np.sqrt(dim))
        return (self.common + scene + activity @ self.u_action + jitter + sensor).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def interleave_rows(subsampled: np.ndarray) -> np.ndarray:
    """HDF5 rows [2n, D] whose ``[::2]`` is ``subsampled``; odd rows average their neighbours."""
    n = subsampled.shape[0]
    rows = np.empty((2 * n, subsampled.shape[1]), np.float32)
    rows[0::2] = subsampled
    nxt = np.concatenate([subsampled[1:], subsampled[-1:]])
    rows[1::2] = 0.5 * (subsampled + nxt)
    return rows


# --------------------------------------------------------------------------- writing


def generate(out_dir: str, seed: int = 0, dim: int = DEFAULT_DIM, lengths: Optional[str] = None,
             splits_dir: Optional[str] = None) -> Dict[str, object]:
    """Write the HDF5 file, the split JSONs and length.json; return a summary dict."""
    import h5py

    if (lengths is None) != (splits_dir is None):
        raise InputError("--lengths and --splits go together (the benchmark's length.json and its split folder)")
    t0 = time.time()
    if lengths is not None:
        geometry = real_geometry(lengths, splits_dir)
    else:
        geometry = default_geometry(np.random.default_rng([seed, 1]))
    model = FeatureModel(seed, dim)
    os.makedirs(out_dir, exist_ok=True)
    h5_path = os.path.join(out_dir, HDF5_NAME)
    n_rows = 0
    with atomic_path(h5_path) as tmp_path, h5py.File(tmp_path, "w") as h5:
        for k, vid in enumerate(sorted(geometry.n_feat)):
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
        "geometry": "benchmark" if lengths else "default", "seconds": round(time.time() - t0, 1),
    }
    return summary
