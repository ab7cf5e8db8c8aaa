"""``vreloc synth``: a synthetic dataset in the exact on-disk format of the real benchmark.

Why: the demo and the tests must go through the same ingest path that the real
ActivityNet C3D file takes, without anyone downloading several GB. So this
module writes ``OUT/sub_activitynet_v1-3.c3d.hdf5`` (group ``v_<id>`` holding
dataset ``c3d_features``, float32 ``[rows, D]``, one row per 8 frames) and
``OUT/train.json``, ``val.json``, ``test.json`` in Feng et al.'s schema, plus
``OUT/length.json`` (``n_frames``, ``n_feat``) with the same meaning as the
benchmark's.

Geometry
--------
* With ``--lengths FILE --splits DIR`` (the files in
  ``../shared/data/activitynet_reloc/``) the split JSONs are copied entry for
  entry and every referenced video gets exactly ``rows = 2 * n_feat`` HDF5 rows
  (``n_feat`` from ``length.json``), so that ``rows[::2]`` has ``n_feat`` rows:
  ``n_feat`` is ``n_frames // 16`` for 98% of videos (the number of
  non-overlapping 16-frame features) and every benchmark window ends at or
  before it (the largest ``location[1]`` equals ``n_feat`` for some videos).
  The odd rows (the features offset by 8 frames that ``[::2]`` drops) are the
  mean of their two even neighbours, as overlapping C3D windows would be.
  At D = 500 this is 781,922 features, about 3.1 GB.
* Without them a small dataset of its own is made (the demo's default),
  distributed like the real splits but skewed shorter so that the demo trains
  in minutes on 2 CPU cores: 40 / 10 / 10 disjoint train / val / test classes,
  5 videos per class, 1-3 action instances per video (all of the video's
  class), video lengths log-normal (median 48 features, at most 400),
  instance lengths log-normal (median 11, 2..32). One entry per instance; its
  window follows Feng's rule, reaching from the last feature of the previous
  instance to the first feature of the next one (the video's ends otherwise),
  then cut to at most 300 features around the instance. With seed 0 that is
  308 / 72 / 70 train / val / test entries, windows of median 35 and at most
  209 features.

Feature model (documented because the difficulty is a design decision)
--------------------------------------------------------------------
A random orthonormal basis splits R^D into an *action* subspace A (D/4 dims)
and a *context* subspace B (the rest); one subsampled feature is

    x_t = U_A (a_t + d_t + n^A_t) + U_B (s_t + n^B_t)

* ``a_t`` action: inside an instance of class c, the class signature moving
  from its start pose to its end pose (two unit vectors per class, fixed by
  the seed and the label, plus a per-video jitter), amplitude ~1, with a
  half-strength feature on each side (soft boundaries);
* ``d_t`` other activity: in the background, episodes of 3-20 features of
  *distractor* classes (labels not in any split), amplitude ~0.9;
* ``s_t`` scene: the video is cut into shots (mean ~15 features, cuts
  independent of the actions); each shot shows one of 6 scene prototypes
  shared by all videos (norm 2.0) plus a per-shot jitter;
* ``n_t`` noise, temporally smooth (a 5-tap exponential filter): norm 1.2 in
  B and 0.35 in A.

All components are smooth in time. Why this is hard for the paper's
frame-level baseline (cosine of L2-normalized query and reference features,
best average segment): the context part carries most of the energy, and a
query often shares a scene prototype with background shots of the reference,
so raw cosine prefers the matching *scene* over the matching *action*. A
trained model can learn to look at A only (the split between A and B is the
same for every class, so it transfers to unseen classes) and compare action
signatures there; the tests check that the same baseline run on features
projected onto A beats the raw baseline by a wide margin (seed 0, D = 32,
test split: mean IoU-threshold accuracy ~0.06 raw vs ~0.37 projected with a
max-subarray decoder; ~0.18 vs ~0.35 when the baseline is told the length).
Measured end to end on the demo data (``--dim 32``, configs/tiny.yaml, full
supervision, 1,500 steps, ~1 min on 2 cores): mAP@1 average 51.7 on test
against 14.6 for ``vreloc baseline --method frame-level`` (300 steps were
not enough: 13.9 on val).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

LOG = logging.getLogger(__name__)

HDF5_NAME = "sub_activitynet_v1-3.c3d.hdf5"
DATASET_NAME = "c3d_features"
SPLIT_NAMES = ("train", "val", "test")
FRAMES_PER_ROW = 8  # the ActivityNet file has one row every 8 frames
MAX_WINDOW = 300
MAX_GROUNDTRUTH = 32

# Norms of the feature model's components (see the module docstring).
ACTION_NORM = 1.0
DISTRACTOR_NORM = 0.9
SCENE_NORM = 2.0
SCENE_JITTER = 0.35
NOISE_NORM_CONTEXT = 1.2
NOISE_NORM_ACTION = 0.35
N_SCENES = 6
N_DISTRACTOR_CLASSES = 30
MEAN_SHOT = 15.0
SMOOTHING = np.array([1.0, 0.7, 0.49, 0.34, 0.24], dtype=np.float32)


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
    next one (the video's ends otherwise), cut to at most 300 features
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
                n_frames[vid] = 16 * n + int(rng.integers(0, 16))
                instances[vid] = [Instance(label, s, e) for s, e in spans]
                for i, (s, e) in enumerate(spans):
                    lo, hi = feng_window(spans, i, n)
                    splits[split].append({"id": vid, "label": label, "location": [lo, hi],
                                          "groundtruth": [s - lo, e - lo]})
    return Geometry(n_feat, instances, splits, n_frames)


def real_geometry(lengths_file: str, splits_dir: str) -> Geometry:
    """The benchmark's geometry: its split entries and, per video, ``n_feat`` from ``length.json``."""
    with open(lengths_file) as fh:
        lengths = json.load(fh)
    splits: Dict[str, List[dict]] = {}
    n_feat: Dict[str, int] = {}
    n_frames: Dict[str, int] = {}
    instances: Dict[str, List[Instance]] = {}
    for split in SPLIT_NAMES:
        path = os.path.join(splits_dir, f"{split}.json")
        with open(path) as fh:
            entries = json.load(fh)
        splits[split] = entries
        for k, entry in enumerate(entries):
            vid = entry["id"]
            if vid not in lengths:
                raise ValueError(f"{path}: entry {k} (video {vid}) is not in {lengths_file}")
            n = int(lengths[vid]["n_feat"])
            lo, hi = (int(v) for v in entry["location"])
            if hi > n:
                raise ValueError(f"{path}: entry {k} (video {vid}) has location {[lo, hi]} past n_feat={n} "
                                 f"in {lengths_file}")
            n_feat[vid] = n
            n_frames[vid] = int(lengths[vid].get("n_frames", 16 * n))
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
            raise ValueError(f"--dim must be at least 2, got {dim}")
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 7919])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.action_dim = max(1, dim // 4)
        self.u_action = basis[:, : self.action_dim].T.astype(np.float32)  # [dA, D]
        self.u_context = basis[:, self.action_dim:].T.astype(np.float32)  # [dB, D]
        self.scenes = _unit_rows(rng.standard_normal((N_SCENES, dim - self.action_dim))) * SCENE_NORM
        self._signatures: Dict[int, np.ndarray] = {}

    def signature(self, label: int) -> np.ndarray:
        """The class's [2, dA] start and end poses (unit vectors), fixed by seed and label."""
        if label not in self._signatures:
            rng = np.random.default_rng([self.seed, 104729, int(label) & 0x7FFFFFFF])
            self._signatures[label] = _unit_rows(rng.standard_normal((2, self.action_dim)))
        return self._signatures[label]

    def video(self, vid_index: int, n: int, instances: List[Instance]) -> np.ndarray:
        """Subsampled features [n, D] float32 of one video."""
        rng = np.random.default_rng([self.seed, 31337, vid_index])
        d_a, d_b = self.action_dim, self.dim - self.action_dim
        action = np.zeros((n, d_a), np.float32)
        occupied = np.zeros(n, bool)
        for inst in instances:
            s, e = max(0, inst.start), min(n, inst.end)
            if e <= s:
                continue
            sig = self.signature(inst.label) + (0.3 / np.sqrt(d_a)) * rng.standard_normal((2, d_a))
            sig = _unit_rows(sig) * ACTION_NORM * rng.uniform(0.85, 1.15)
            w = np.linspace(0.0, 1.0, e - s, dtype=np.float32)[:, None]
            action[s:e] += (1 - w) * sig[0] + w * sig[1]
            if s > 0:
                action[s - 1] += 0.5 * sig[0]
            if e < n:
                action[e] += 0.5 * sig[1]
            occupied[max(0, s - 1):min(n, e + 1)] = True
        # Other activity in the background: distractor classes, never a split's class.
        n_episodes = rng.poisson(n / 40.0)
        for _ in range(n_episodes):
            length = int(rng.integers(3, 21))
            start = int(rng.integers(0, max(1, n - length + 1)))
            span = np.arange(start, min(n, start + length))
            span = span[~occupied[span]]
            if span.size == 0:
                continue
            sig = self.signature(-1 - int(rng.integers(0, N_DISTRACTOR_CLASSES)))
            action[span] += DISTRACTOR_NORM * sig[0]
        # Scene: shots with cuts independent of the actions, prototypes shared by all videos.
        shot_of = np.cumsum(rng.random(n) < 1.0 / MEAN_SHOT)
        n_shots = int(shot_of[-1]) + 1
        protos = self.scenes[rng.integers(0, N_SCENES, n_shots)]
        jitter = rng.standard_normal((n_shots, d_b)) * (SCENE_JITTER * SCENE_NORM / np.sqrt(d_b))
        scene = (protos + jitter)[shot_of].astype(np.float32)
        noise_a = _smooth_noise(rng, n, d_a, NOISE_NORM_ACTION)
        noise_b = _smooth_noise(rng, n, d_b, NOISE_NORM_CONTEXT)
        latent_a = _smooth_time(action) + noise_a
        latent_b = _smooth_time(scene) + noise_b
        return (latent_a @ self.u_action + latent_b @ self.u_context).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _smooth_noise(rng: np.random.Generator, n: int, d: int, norm: float) -> np.ndarray:
    white = rng.standard_normal((n + len(SMOOTHING) - 1, d), dtype=np.float32)
    out = np.zeros((n, d), np.float32)
    for k, w in enumerate(SMOOTHING):
        out += w * white[len(SMOOTHING) - 1 - k: len(SMOOTHING) - 1 - k + n]
    return out * (norm / np.sqrt(d * float(np.sum(SMOOTHING ** 2))))


def _smooth_time(x: np.ndarray) -> np.ndarray:
    """A light [0.25, 0.5, 0.25] filter along time (edges replicated)."""
    if len(x) < 3:
        return x
    padded = np.concatenate([x[:1], x, x[-1:]])
    return 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]


def interleave_rows(subsampled: np.ndarray) -> np.ndarray:
    """HDF5 rows [2n, D] whose ``[::2]`` is ``subsampled``; odd rows average their neighbours."""
    n = subsampled.shape[0]
    rows = np.empty((2 * n, subsampled.shape[1]), np.float32)
    rows[0::2] = subsampled
    nxt = np.concatenate([subsampled[1:], subsampled[-1:]])
    rows[1::2] = 0.5 * (subsampled + nxt)
    return rows


# --------------------------------------------------------------------------- writing


def generate(out_dir: str, seed: int = 0, dim: int = 500, lengths: Optional[str] = None,
             splits_dir: Optional[str] = None) -> Dict[str, object]:
    """Write the HDF5 file, the split JSONs and length.json; return a summary dict."""
    import h5py

    if (lengths is None) != (splits_dir is None):
        raise ValueError("--lengths and --splits go together (the benchmark's length.json and its split folder)")
    t0 = time.time()
    if lengths is not None:
        geometry = real_geometry(lengths, splits_dir)
    else:
        geometry = default_geometry(np.random.default_rng([seed, 1]))
    model = FeatureModel(seed, dim)
    os.makedirs(out_dir, exist_ok=True)
    h5_path = os.path.join(out_dir, HDF5_NAME)
    tmp_path = h5_path + ".tmp"
    n_rows = 0
    with h5py.File(tmp_path, "w") as h5:
        for k, vid in enumerate(sorted(geometry.n_feat)):
            feats = model.video(k, geometry.n_feat[vid], geometry.instances.get(vid, []))
            rows = interleave_rows(feats)
            h5.create_group(f"v_{vid}").create_dataset(DATASET_NAME, data=rows)
            n_rows += rows.shape[0]
            if (k + 1) % 500 == 0:
                LOG.info("synth: %d / %d videos", k + 1, len(geometry.n_feat))
    os.replace(tmp_path, h5_path)
    for split, entries in geometry.splits.items():
        _write_json(os.path.join(out_dir, f"{split}.json"), entries)
    _write_json(os.path.join(out_dir, "length.json"),
                {vid: {"n_frames": geometry.n_frames.get(vid, 16 * n), "n_feat": n}
                 for vid, n in sorted(geometry.n_feat.items())})
    summary = {
        "out": out_dir, "hdf5": h5_path, "dim": dim, "seed": seed, "videos": len(geometry.n_feat),
        "rows": n_rows, "entries": {s: len(e) for s, e in geometry.splits.items()},
        "geometry": "benchmark" if lengths else "default", "seconds": round(time.time() - t0, 1),
    }
    return summary


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (HDF5 + train/val/test.json + length.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=500, help="feature dim D (default 500; the demo uses 32)")
    parser.add_argument("--lengths", default=None,
                        help="the benchmark's length.json: reproduce its split geometry exactly (with --splits)")
    parser.add_argument("--splits", default=None, help="folder with the benchmark's train/val/test.json")


def main(args: argparse.Namespace) -> int:
    summary = generate(args.out, seed=args.seed, dim=args.dim, lengths=args.lengths, splits_dir=args.splits)
    print(f"synth: wrote {summary['videos']} videos ({summary['rows']} rows, D={summary['dim']}) to "
          f"{summary['hdf5']}; entries {summary['entries']} ({summary['geometry']} geometry) "
          f"in {summary['seconds']} s")
    return 0
