"""`vreloc locate`: find a query clip inside a long reference video file, in one command.

Both files go through the feature path of ``vreloc extract-video`` (PyAV decode,
128×171 resize, 112×112 centre crop, 16-frame clips, C3D fc7, then the PCA of the
model's training data), so a located segment is in the same index space the model
was trained on: one feature per 16 frames, converted to seconds with the
reference's real frame rate.

Matchers:

* ``--model PATH``: a training run folder (``vreloc train --out``) or an exported
  model folder ``BASE/NAME`` (its highest version). The PCA comes from ``--pca``,
  else from the export's ``assets.extra/pca.npz``, else from the run's manifest.
* ``--method frame-level``: the training-free baseline of Feng et al. (see
  vreloc_tf.baselines); without ``--pca`` it compares fc7 features directly.

Long references are cut into windows of ``--window`` features (default: the
config's ``data.max_window``, 300) overlapping by half; each window is matched and
the answer is the best-scoring segment over all windows.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

log = logging.getLogger("vreloc.locate")

FC7_DIM = 4096  # C3D fc7 features, before any PCA


class LocateError(ValueError):
    """Bad input to locate; the message names the file or the mismatch."""


@dataclass
class Located:
    start_index: int
    end_index: int  # exclusive
    score: float
    start_seconds: float
    end_seconds: float
    method: str
    reference_features: int
    query_features: int
    fps: float
    frames_per_feature: int


# -- matchers: (query [Lq, D], reference window [L, D]) -> (start, end, score, per-step curves [L, C]) --
# C = 4 probabilities for a model, 1 similarity curve for the frame-level method.

def frame_level_matcher() -> Tuple[Callable, Optional[int]]:
    from vreloc_tf.baselines import frame_level_segment, frame_level_similarity

    def match(query, reference):
        start, end = frame_level_segment(query, reference)
        sim = frame_level_similarity(query, reference)  # [L] mean cosine similarity to the query frames
        return start, end, float(sim[start:end].mean()), sim[:, None].astype(np.float32)

    return match, None


def keras_run_matcher(run_dir: str) -> Tuple[Callable, int, Optional[str], str]:
    from vreloc_tf.decoding import decode_full_np, decode_weak_np
    from vreloc_tf.run_dir import load_run

    model, cfg, manifest = load_run(run_dir)
    mode, limit = cfg.supervision, cfg.decode_max_length
    decoder = decode_full_np if mode == "full" else decode_weak_np

    def match(query, reference):
        out = model({"query": query[None].astype(np.float32), "query_length": np.array([len(query)], np.int32),
                     "reference": reference[None].astype(np.float32),
                     "reference_length": np.array([len(reference)], np.int32)}, training=False)
        probs = np.asarray(out["probabilities"])
        start, end, score = decoder(probs, np.array([len(reference)], np.int32), limit)
        return int(start[0]), int(end[0]), float(score[0]), probs[0]

    return match, int(manifest.feature_dim), manifest.pca_file, f"model ({mode} supervision, {run_dir})"


def _read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def saved_model_matcher(base: str) -> Tuple[Callable, int, Optional[str], str]:
    import tensorflow as tf

    from serving.versions import list_versions

    versions = list_versions(base)  # complete SavedModels only, as a server sees them
    if not versions:
        raise LocateError(f"--model {base}: no exported versions (expected {base}/<version>/saved_model.pb)")
    path = os.path.join(base, str(versions[-1]))
    info_path = os.path.join(path, "assets.extra", "vreloc.json")
    info = _read_json(info_path) if os.path.exists(info_path) else {}
    pca = os.path.join(path, "assets.extra", "pca.npz")
    if not os.path.exists(pca):
        pca = None
        run_manifest = os.path.join(info.get("run_dir") or "", "run.json")
        if os.path.exists(run_manifest):
            pca = _read_json(run_manifest).get("pca_file")
    fn = tf.saved_model.load(path).signatures["serving_default"]
    dim = int(info.get("feature_dim") or fn.structured_input_signature[1]["query"].shape[-1])

    def match(query, reference):
        out = fn(query=tf.constant(query[None], tf.float32), query_length=tf.constant([len(query)], tf.int32),
                 reference=tf.constant(reference[None], tf.float32),
                 reference_length=tf.constant([len(reference)], tf.int32))
        return (int(out["start"][0]), int(out["end"][0]), float(out["score"][0]),
                out["probabilities"].numpy()[0])

    return match, dim, pca, f"exported model {base} version {versions[-1]}"


# -- the search ----------------------------------------------------------------

def windows(length: int, window: int) -> List[Tuple[int, int]]:
    """[start, end) windows of at most ``window`` steps, overlapping by half, covering [0, length)."""
    if length <= window:
        return [(0, length)]
    hop = max(1, window // 2)
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return [(s, s + window) for s in starts]


def search(match: Callable, query: np.ndarray, reference: np.ndarray, window: int):
    """Best segment over windows; returns (start, end, score, per-step curves [L, C] averaged over windows)."""
    if len(query) > len(reference):
        raise LocateError(f"the query ({len(query)} features) is longer than the reference "
                          f"({len(reference)} features): nothing to locate it in")
    best = None
    curves = None
    counts = np.zeros(len(reference), np.float64)
    for w0, w1 in windows(len(reference), max(window, len(query))):
        s, e, score, probs = match(query, reference[w0:w1])
        if curves is None:
            curves = np.zeros((len(reference), probs.shape[1]), np.float64)
        curves[w0:w1] += probs[: w1 - w0]
        counts[w0:w1] += 1
        if best is None or score > best[2]:
            best = (w0 + s, w0 + e, score)
    return best[0], best[1], best[2], (curves / counts[:, None]).astype(np.float32)


def extract_features(path: str, extractor, pca) -> Tuple[np.ndarray, "object"]:
    from pipeline.video import VideoError

    try:
        feats, info = extractor.extract_video(path)
    except VideoError as exc:
        raise LocateError(str(exc)) from None
    if pca is not None:
        feats = pca.transform(feats).astype(np.float32)
    return feats, info


_EXTRACTORS: dict = {}


def _extractor(c3d_weights: Optional[str], seed: int):
    """One C3D extractor per weights file (or random seed) per process: building one costs seconds."""
    from pipeline.c3d import C3DExtractor

    key = (os.path.abspath(c3d_weights), os.path.getmtime(c3d_weights)) if c3d_weights else ("random", seed)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = C3DExtractor.from_weights(c3d_weights) if c3d_weights else C3DExtractor.random(seed)
    return _EXTRACTORS[key]


def locate(query_path: str, reference_path: str, model: Optional[str] = None, method: Optional[str] = None,
           c3d_weights: Optional[str] = None, random_c3d: bool = False, c3d_seed: int = 0,
           pca_file: Optional[str] = None, window: int = 300, plot: Optional[str] = None) -> Located:
    from pipeline.pca import PCA

    if (model is None) == (method is None):
        raise LocateError("give exactly one of --model PATH or --method frame-level")
    if c3d_weights is None and not random_c3d:
        raise LocateError("give --c3d-weights FILE (Sports-1M C3D) or, for tests and demos, --random-c3d")
    for path in (query_path, reference_path):
        if not os.path.isfile(path):
            raise LocateError(f"{path}: no such file")
    if model is not None:
        if os.path.exists(os.path.join(model, "run.json")):
            match, dim, pca_default, name = keras_run_matcher(model)
        elif os.path.isdir(model):
            match, dim, pca_default, name = saved_model_matcher(model)
        else:
            raise LocateError(f"--model {model}: neither a run folder (run.json) nor an export folder")
        pca_file = pca_file or pca_default
    else:
        if method != "frame-level":
            raise LocateError(f"--method {method!r}: only 'frame-level' is a training-free method")
        match, dim = frame_level_matcher()
        name = "frame-level baseline"
    pca = PCA.load(pca_file) if pca_file else None
    feature_dim = pca.n_components if pca is not None else FC7_DIM
    if dim is not None and feature_dim != dim:
        hint = "" if pca is not None else " (fc7 features are 4,096-d: pass the PCA of the training data with --pca)"
        raise LocateError(f"features are {feature_dim}-d but the model takes {dim}-d{hint}")
    extractor = _extractor(c3d_weights, c3d_seed)
    q, q_info = extract_features(query_path, extractor, pca)
    r, r_info = extract_features(reference_path, extractor, pca)
    start, end, score, curves = search(match, q, r, window)
    fpf = 16
    sec = fpf / r_info.fps
    result = Located(start, end, score, round(start * sec, 3), round(end * sec, 3), name, len(r), len(q),
                     float(r_info.fps), fpf)
    if plot:
        from vreloc_tf.figures import timeline

        names = ["mean cosine similarity to the query frames"] if model is None else None
        timeline(curves, plot, predicted=(start, end), seconds_per_step=sec, names=names,
                 ylabel="similarity" if model is None else None,
                 title=f"{os.path.basename(query_path)} in {os.path.basename(reference_path)} ({name})")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--query", required=True, metavar="CLIP", help="the short query video file")
    parser.add_argument("--reference", required=True, metavar="LONG", help="the long reference video file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="PATH", help="run folder or exported model folder BASE/NAME")
    who.add_argument("--method", choices=("frame-level",), help="training-free matcher instead of a model")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--c3d-weights", metavar="FILE", help="Sports-1M C3D weights (HDF5, see pipeline/c3d.py)")
    weights.add_argument("--random-c3d", action="store_true", help="random C3D weights (tests and demos only)")
    parser.add_argument("--c3d-seed", type=int, default=0, help="seed of --random-c3d (default 0)")
    parser.add_argument("--pca", metavar="FILE", help="pca.npz to apply to the fc7 features")
    parser.add_argument("--window", type=int, default=300, help="reference window in features (default 300)")
    parser.add_argument("--json", metavar="FILE", help="write the answer as JSON")
    parser.add_argument("--plot", metavar="PNG", help="draw the per-step probabilities over the reference")


def main(args: argparse.Namespace) -> int:
    try:
        res = locate(args.query, args.reference, model=args.model, method=args.method,
                     c3d_weights=args.c3d_weights, random_c3d=args.random_c3d, c3d_seed=args.c3d_seed,
                     pca_file=args.pca, window=args.window, plot=args.plot)
    except LocateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{os.path.basename(args.query)} found in {os.path.basename(args.reference)} at "
          f"{res.start_seconds:.2f} s - {res.end_seconds:.2f} s (features [{res.start_index}, {res.end_index}) of "
          f"{res.reference_features}), score {res.score:.4f} [{res.method}]")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: v for k, v in asdict(res).items()}, fh, indent=2)
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
