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
A random orthonormal basis fixes an *activity* subspace A (D/2 dims, the same
for every class). One subsampled feature (one 16-frame clip) is

    x_t = g + s_v + U_A a_t + j_t + e_t

* ``g`` (norm 0.8), a component shared by every clip of every video: fc7
  activations are non-negative ReLU outputs, so real C3D features share a
  mean direction that a cosine sees in every pair of clips;
* ``s_v`` (norm 0.3), the video's scene/appearance: one random direction per
  video, constant over the video, so it says nothing about *which* clips are
  the action (and, not being shared across videos, it cannot make a query
  look like the background of another video);
* ``a_t`` the activity, in A. Inside an instance of class c: the class
  signature moving from its start pose to its end pose (two unit vectors per
  class with cosine 0.9, fixed by the seed and the label, plus a
  per-instance jitter), amplitude 1.5 (x U(0.85, 1.15)); sharp edges. In the
  background: "other activity" episodes of 3-20 features (one per 25
  features on average, never over an instance or its edge features) of 30
  *distractor* classes (labels in no split), amplitude 1.0. Quiet
  background clips have no activity;
* ``j_t`` clip-grid jitter, on moving clips only (instances and episodes),
  norm 4.0 per clip (far above the signal): the difference of a white
  process, j_t = (w_{t+1} - w_t) * 4 / sqrt(2D). Why: a movement's motion
  energy falls partly into one 16-frame clip and partly into the next,
  depending on where the clip grid cuts it, so what one clip over-reports
  its neighbour under-reports; over a contiguous run of moving clips the
  jitter telescopes to (w_end - w_start) / length, i.e. a *segment's mean*
  is almost clean while every *single clip* is dominated by jitter;
* ``e_t`` white sensor noise on every clip, norm 0.2.

Why this makes the benchmark behave like the paper's (Table 2: weak 20.7,
frame-level 9.9, random 7.3 on real C3D):

* Segment means carry the weak signal. The co-attention loss (Eqs. 13-18)
  compares means of raw features: the mean query feature is
  ~ g + s_A + class signature, the mean of the reference's action ~ g + s_B
  + the same signature (jitter cancelled), the mean of its background ~
  g + s_B + a little other activity. With one-hot ground-truth
  probabilities the loss is clearly lower than with the inverted mask
  (seed 0, D = 32, the evaluation's pairs: 0.39 vs 0.54 on val, 0.41 vs 0.54 on
  test; 0.40-0.41 vs 0.54 with seeds 1 and 2 and the tests' pairs; the
  ground truth is lower on every pair; the previous model of shared scene prototypes gave 0.5645 vs
  0.5674, no signal).
* The frame-level baseline (per-clip cosine of L2-normalised features, a
  window of the query's length) is fooled clip by clip: a moving clip is
  dominated by its jitter, so its cosine to the query is low, while a quiet
  background clip (~ g + s_B) has a steady cosine through the shared ``g``;
  normalising each clip before averaging is exactly what keeps the jitter
  from cancelling. On top, query and reference lengths are independent
  within a class (log-normal, median 11), so even a well-placed window of
  the query's length has a poor IoU.
* A trained model can do what the baseline cannot: average moving clips
  over runs (the jitter cancels), discount the shared ``g``, and compare
  activities in A with the query's. Nothing class-specific is needed: the
  layout is the same for unseen classes. The segment that minimizes the
  one-hot co-attention loss over all segments of the raw features already
  scores mAP@1 ~0.5-0.59 where the frame-level baseline scores 0.11-0.16
  (seeds 0-2, val and test, the tests' pairs).
* Temporal smoothness: the clean part is smooth (constant scene, poses
  moving slowly, episodes of several clips); only the jitter is not. The
  odd HDF5 rows (dropped by ``[::2]``) average their neighbours.

Measured end to end (``--dim 32``, configs/tiny.yaml, 1000 steps, about
40 s of training per model on 2 shared cores; the pair lists of
``vreloc evaluate``), mAP@1 average:

    data seed  split  full  weak  prior  frame-level  random
    0          test   58.6  30.6  14.6    9.4         10.6
    0          val    59.4  35.3  13.6   19.2          7.8
    1          test   64.1  26.8  13.2   12.6         10.4
    1          val    71.5  44.8   9.6    9.1          7.7

The weak model peaks early (its best validation checkpoint is at step 100
for both seeds) and then shrinks its predicted segments (p3 sharpens, so
the run above the mean p3 gets shorter): a property of the loss and the
decoding rule rather than of this data (it happened just as much in a
variant of this model with almost no clip noise, norm 0.3).
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

# The feature model's components (see the module docstring for what each stands for and why).
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
