"""Find a query clip inside a long reference video file (what `vreloc locate` runs).

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

Long references are cut into windows of ``window`` features (default: the model's
config's ``data.max_window``; the splits' window length, contract.MAX_WINDOW, for the
frame-level method) overlapping by half; each window is matched and the answer is the
best-scoring segment over all windows.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from vreloc_tf.contract import FC7_DIM, FRAMES_PER_FEATURE, MAX_WINDOW
from vreloc_tf.contract import reference_windows as windows
from vreloc_tf.errors import InputError

log = logging.getLogger("vreloc.locate")


class LocateError(InputError):
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

@dataclass(frozen=True)
class Matcher:
    match: Callable
    feature_dim: Optional[int]  # None: any (the frame-level method)
    pca_file: Optional[str]  # the PCA of the model's training features, if it has one
    name: str
    window: int  # reference window in features


def frame_level_matcher() -> Matcher:
    from vreloc_tf.baselines import frame_level_segment, frame_level_similarity

    def match(query, reference):
        start, end = frame_level_segment(query, reference)
        sim = frame_level_similarity(query, reference)  # [L] mean cosine similarity to the query frames
        return start, end, float(sim[start:end].mean()), sim[:, None].astype(np.float32)

    return Matcher(match, None, None, "frame-level baseline", MAX_WINDOW)


def keras_run_matcher(run_dir: str) -> Matcher:
    from vreloc_tf.artifacts import Run
    from vreloc_tf.decoding import decoder

    run = Run.open(run_dir)
    model, cfg = run.load_model(), run.config
    decode, limit = decoder(cfg.decode_rule, numpy=True), cfg.decode_max_length

    def match(query, reference):
        out = model({"query": query[None].astype(np.float32), "query_length": np.array([len(query)], np.int32),
                     "reference": reference[None].astype(np.float32),
                     "reference_length": np.array([len(reference)], np.int32)}, training=False)
        probs = np.asarray(out["probabilities"])
        start, end, score = decode(probs, np.array([len(reference)], np.int32), limit)
        return int(start[0]), int(end[0]), float(score[0]), probs[0]

    return Matcher(match, int(run.manifest.feature_dim), run.manifest.pca_file,
                   f"model ({cfg.supervision} supervision, {run_dir})", cfg.data.max_window)


def saved_model_matcher(base: str) -> Matcher:
    import tensorflow as tf

    from serving import signature as sig
    from serving.export import PCA_ASSET
    from serving.versions import list_versions
    from vreloc_tf.artifacts import MANIFEST_FILE, RunManifest
    from vreloc_tf.files import read_json

    versions = list_versions(base)  # complete SavedModels only, as a server sees them
    if not versions:
        raise LocateError(f"--model {base}: no exported versions (expected {base}/<version>/saved_model.pb)")
    path = os.path.join(base, str(versions[-1]))
    info_path = os.path.join(path, sig.ASSETS_EXTRA_DIR, sig.METADATA_FILE)
    info = read_json(info_path, "export metadata") if os.path.exists(info_path) else {}
    pca = os.path.join(path, sig.ASSETS_EXTRA_DIR, PCA_ASSET)
    if not os.path.exists(pca):
        run_dir = info.get("run_dir") or ""
        pca = RunManifest.read(run_dir).pca_file if os.path.exists(os.path.join(run_dir, MANIFEST_FILE)) else None
    fn = tf.saved_model.load(path).signatures[sig.SIGNATURE_NAME]
    dim = int(info.get("feature_dim") or fn.structured_input_signature[1][sig.QUERY].shape[-1])

    def match(query, reference):
        out = fn(query=tf.constant(query[None], tf.float32), query_length=tf.constant([len(query)], tf.int32),
                 reference=tf.constant(reference[None], tf.float32),
                 reference_length=tf.constant([len(reference)], tf.int32))
        return (int(out["start"][0]), int(out["end"][0]), float(out["score"][0]),
                out["probabilities"].numpy()[0])

    return Matcher(match, dim, pca, f"exported model {base} version {versions[-1]}",
                   int(info.get("max_window") or MAX_WINDOW))


# -- the search ----------------------------------------------------------------

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
           pca_file: Optional[str] = None, window: Optional[int] = None, plot: Optional[str] = None) -> Located:
    """Locate the query video in the reference video with a model (run or export folder) or a method.

    ``window`` (features) defaults to the matcher's: the model config's ``data.max_window``.
    """
    from pipeline.pca import PCA

    if (model is None) == (method is None):
        raise LocateError("give exactly one of --model PATH or --method frame-level")
    if c3d_weights is None and not random_c3d:
        raise LocateError("give --c3d-weights FILE (Sports-1M C3D) or, for tests and demos, --random-c3d")
    if window is not None and window < 1:
        raise LocateError(f"--window must be a positive number of features, got {window}")
    for path in (query_path, reference_path):
        if not os.path.isfile(path):
            raise LocateError(f"{path}: no such file")
    if model is not None:
        from vreloc_tf.artifacts import MANIFEST_FILE

        if os.path.exists(os.path.join(model, MANIFEST_FILE)):
            matcher = keras_run_matcher(model)
        elif os.path.isdir(model):
            matcher = saved_model_matcher(model)
        else:
            raise LocateError(f"--model {model}: neither a run folder (run.json) nor an export folder")
        pca_file = pca_file or matcher.pca_file
    else:
        if method != "frame-level":
            raise LocateError(f"--method {method!r}: only 'frame-level' is a training-free method")
        matcher = frame_level_matcher()
    pca = PCA.load(pca_file) if pca_file else None
    feature_dim = pca.n_components if pca is not None else FC7_DIM
    if matcher.feature_dim is not None and feature_dim != matcher.feature_dim:
        hint = "" if pca is not None else f" (fc7 features are {FC7_DIM}-d: pass the PCA of the training data with --pca)"
        raise LocateError(f"features are {feature_dim}-d but the model takes {matcher.feature_dim}-d{hint}")
    extractor = _extractor(c3d_weights, c3d_seed)
    q, q_info = extract_features(query_path, extractor, pca)
    r, r_info = extract_features(reference_path, extractor, pca)
    start, end, score, curves = search(matcher.match, q, r, window or matcher.window)
    sec = FRAMES_PER_FEATURE / r_info.fps
    result = Located(start, end, score, round(start * sec, 3), round(end * sec, 3), matcher.name, len(r), len(q),
                     float(r_info.fps), FRAMES_PER_FEATURE)
    if plot:
        from vreloc_tf.figures import timeline

        names = ["mean cosine similarity to the query frames"] if model is None else None
        timeline(curves, plot, predicted=(start, end), seconds_per_step=sec, names=names,
                 ylabel="similarity" if model is None else None,
                 title=f"{os.path.basename(query_path)} in {os.path.basename(reference_path)} ({matcher.name})")
    return result
