"""Find a query clip inside a long reference video file (what `vreloc locate` runs).

Both files go through the feature path of ``vreloc extract-video`` (PyAV decode, the
backbone, then the PCA of the model's training data; vreloc/features.py), with exactly the
backbone, weights, frame rate and PCA the model was trained on (its recorded
:class:`FeatureSpec`; a backbone given on the command line must describe the same
features), so a located segment is in the model's index space, converted to seconds with
the reference's own rate (one feature per 16 frames for C3D, per sampled frame for CLIP).

Matchers:

* ``--model PATH``: a training run folder (``vreloc train --out``) or an exported
  model folder ``BASE/NAME`` (its highest version). The PCA comes from ``--pca``,
  else from the export's ``assets.extra/``, else from the run's manifest.
* ``--method frame-level``: the training-free baseline of Feng et al. (see
  vreloc_tf.evaluation.baselines) on the backbone given by the flags; without ``--pca`` it
  compares the raw backbone features directly.

Long references are cut into windows of ``window`` features (default: the model's
config's ``data.max_window``; the splits' window length, contract.MAX_WINDOW, for the
frame-level method) overlapping by half; each window is matched and the answer is the
best-scoring segment over all windows.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from pipeline.backbones import BackboneOptions
from pipeline.video import VideoError
from serving import signature as sig
from vreloc import features  # features.extract, looked up when called (tests cache it)
from vreloc.features import recipe_like
from vreloc_tf import progress
from vreloc_tf.data.artifacts import MANIFEST_FILE, Export, Run, RunManifest
from vreloc_tf.evaluation.baselines import frame_level_match
from vreloc_tf.contract import MAX_WINDOW, reference_windows as windows
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureSpec
from vreloc_tf.evaluation.figures import timeline

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
    spec: Optional[FeatureSpec] = None  # what made the model's training features (None: not recorded)


def frame_level_matcher() -> Matcher:
    def match(query, reference):
        start, end, score, sim = frame_level_match(query, reference)  # sim: [L] mean cosine similarity to the query
        return start, end, score, sim[:, None].astype(np.float32)

    return Matcher(match, None, None, "frame-level baseline", MAX_WINDOW)


def keras_run_matcher(run: Run) -> Matcher:
    # heavy: TensorFlow (keras.ops), only for a model (the frame-level method needs none)
    from vreloc_tf.model.decoding import decoder

    model, cfg = run.load_model(), run.config
    decode, limit = decoder(cfg.decode_rule, numpy=True), cfg.decode_max_length

    def match(query, reference):
        out = model({sig.QUERY: query[None].astype(np.float32), sig.QUERY_LENGTH: np.array([len(query)], np.int32),
                     sig.REFERENCE: reference[None].astype(np.float32),
                     sig.REFERENCE_LENGTH: np.array([len(reference)], np.int32)}, training=False)
        probs = np.asarray(out[sig.PROBABILITIES])
        start, end, score = decode(probs, np.array([len(reference)], np.int32), limit)
        return int(start[0]), int(end[0]), float(score[0]), probs[0]

    return Matcher(match, int(run.manifest.feature_dim), run.manifest.pca_file,
                   f"model ({cfg.supervision} supervision, {run.path})", cfg.data.max_window, run.feature_spec)


def saved_model_matcher(export: Export) -> Matcher:
    """The export's serving signature; its PCA from assets.extra/, else (older exports) from the run it
    records, if that run is still there."""
    import tensorflow as tf

    path, info = export.path, export.info
    pca = export.pca_file
    if pca is None:
        run_dir = (info.run_dir if info is not None else None) or ""
        pca = RunManifest.read(run_dir).pca_file if os.path.exists(os.path.join(run_dir, MANIFEST_FILE)) else None
    fn = tf.saved_model.load(path).signatures[sig.SIGNATURE_NAME]
    dim = int((info.feature_dim if info is not None else None)
              or fn.structured_input_signature[1][sig.QUERY].shape[-1])

    def match(query, reference):
        out = fn(**{sig.QUERY: tf.constant(query[None], tf.float32),
                    sig.QUERY_LENGTH: tf.constant([len(query)], tf.int32),
                    sig.REFERENCE: tf.constant(reference[None], tf.float32),
                    sig.REFERENCE_LENGTH: tf.constant([len(reference)], tf.int32)})
        return (int(out[sig.START][0]), int(out[sig.END][0]), float(out[sig.SCORE][0]),
                out[sig.PROBABILITIES].numpy()[0])

    return Matcher(match, dim, pca, f"exported model {os.path.dirname(path)} version {os.path.basename(path)}",
                   int((info.max_window if info is not None else None) or MAX_WINDOW), export.feature_spec)


def open_model(path: str) -> Union[Run, Export]:
    """``--model PATH``, opened once at the door: a run folder (run.json) or an export (a version
    folder, or BASE/NAME: its highest complete version, as a server sees it)."""
    if os.path.exists(os.path.join(path, MANIFEST_FILE)):
        return Run.open(path)
    if not os.path.isdir(path):
        raise LocateError(f"--model {path}: neither a run folder (run.json) nor an export folder")
    try:
        return Export.open(path)
    except InputError as exc:
        raise LocateError(f"--model {exc}") from None


# -- the search ----------------------------------------------------------------

def search(match: Callable, query: np.ndarray, reference: np.ndarray, window: int):
    """Best segment over windows; returns (start, end, score, per-step curves [L, C] averaged over windows)."""
    if len(query) > len(reference):
        raise LocateError(f"the query ({len(query)} features) is longer than the reference "
                          f"({len(reference)} features): nothing to locate it in")
    best = None
    curves = None
    counts = np.zeros(len(reference), np.float64)
    spans = windows(len(reference), max(window, len(query)))
    with progress.bar(total=len(spans), desc="matching", unit="window") as bar:
        for w0, w1 in spans:
            s, e, score, probs = match(query, reference[w0:w1])
            bar.update(1)
            if curves is None:
                curves = np.zeros((len(reference), probs.shape[1]), np.float64)
            curves[w0:w1] += probs[: w1 - w0]
            counts[w0:w1] += 1
            if best is None or score > best[2]:
                best = (w0 + s, w0 + e, score)
    return best[0], best[1], best[2], (curves / counts[:, None]).astype(np.float32)


def locate(query_path: str, reference_path: str, model: Union[Run, Export, str, None] = None,
           method: Optional[str] = None,
           backbone: Optional[BackboneOptions] = None, pca_file: Optional[str] = None, window: Optional[int] = None,
           plot: Optional[str] = None) -> Located:
    """Locate the query video in the reference video with a model (a run or an export, or the path of
    one: opened here with :func:`open_model`) or a method.

    ``backbone``: the command line's backbone options (None: the model's own, from its
    recorded feature spec; required for the frame-level method). ``window`` (features)
    defaults to the matcher's: the model config's ``data.max_window``.
    """
    if (model is None) == (method is None):
        raise LocateError("give exactly one of --model PATH or --method frame-level")
    if window is not None and window < 1:
        raise LocateError(f"--window must be a positive number of features, got {window}")
    for path in (query_path, reference_path):
        if not os.path.isfile(path):
            raise LocateError(f"{path}: no such file")
    if model is not None:
        where = model if isinstance(model, str) else model.path if isinstance(model, Run) else model.base_path
        model = open_model(model) if isinstance(model, str) else model
        matcher = keras_run_matcher(model) if isinstance(model, Run) else saved_model_matcher(model)
        spec = matcher.spec
        if spec is not None and spec.pca_file is None and matcher.pca_file:
            spec = spec.with_pca_path(matcher.pca_file)
        recipe = recipe_like(spec, f"the model {where}", backbone, pca_file or matcher.pca_file)
    else:
        if method != "frame-level":
            raise LocateError(f"--method {method!r}: only 'frame-level' is a training-free method")
        if backbone is None:
            raise LocateError("--method frame-level needs a backbone: give --weights FILE|HANDLE (or, for tests "
                              "and demos, --random-weights), and --backbone clip for CLIP")
        matcher = frame_level_matcher()
        recipe = recipe_like(None, "the command line", backbone, pca_file)
    if matcher.feature_dim is not None and recipe.spec.feature_dim != matcher.feature_dim:
        hint = "" if recipe.pca_file else " (pass the PCA of the model's training data with --pca)"
        raise LocateError(f"features are {recipe.spec.feature_dim}-d but the model takes {matcher.feature_dim}-d{hint}")
    pca = recipe.pca()
    try:
        t0 = time.time()
        q, _ = features.extract(recipe, query_path, desc="query", pca=pca)
        log.info("locate: query %s: %d features in %.1f s", os.path.basename(query_path), len(q), time.time() - t0)
        t0 = time.time()
        r, got = features.extract(recipe, reference_path, desc="reference", pca=pca)
        log.info("locate: reference %s: %d features (%.1f s of video) in %.1f s", os.path.basename(reference_path),
                 len(r), len(r) * got.seconds_per_feature, time.time() - t0)
    except VideoError as exc:
        raise LocateError(str(exc)) from None
    t0 = time.time()
    start, end, score, curves = search(matcher.match, q, r, window or matcher.window)
    log.info("locate: matched with %s in %.1f s", matcher.name, time.time() - t0)
    sec = got.seconds_per_feature
    result = Located(start, end, score, round(start * sec, 3), round(end * sec, 3), matcher.name, len(r), len(q),
                     float(got.fps), int(got.frames_per_feature))
    if plot:
        names = ["mean cosine similarity to the query frames"] if model is None else None
        timeline(curves, plot, predicted=(start, end), seconds_per_step=sec, names=names,
                 ylabel="similarity" if model is None else None,
                 title=f"{os.path.basename(query_path)} in {os.path.basename(reference_path)} ({matcher.name})")
    return result
