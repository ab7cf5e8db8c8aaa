"""The re-localization step of search: one query against many reference spans at once.

Two re-localizers with one interface (``locate(query, spans) -> (start, end, score)`` arrays,
``max_window``, ``feature_dim``, ``info``):

* :class:`Relocalizer`: a trained run's model and its decoding rule (score: the decoded segment's
  Eq.-20 value, or the weak rule's);
* :class:`FrameLevelRelocalizer`: the training-free frame-level method (vreloc_tf.evaluation.baselines), for an
  index built without a model (score: the segment's mean cosine similarity to the query frames).

Why the model is batched and bucketed: search re-localizes the query in ~10 candidate spans and the exhaustive
reference in every library video; one model call per span would cost a Python round trip and a
trace per new shape. Spans are padded to a multiple of ``LENGTH_BUCKET`` steps (the model masks
padding, so results do not change: vreloc_tf.model.layers) and run ``batch_size`` at a time through one
``tf.function``; the NumPy decoder of the run's own rule (Eq. 20, or the weak rule) picks each
span's segment and score, as ``vreloc evaluate`` does (vreloc_tf.evaluation.scoring.predict_segments).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from vreloc_tf.data.artifacts import Run
from vreloc_tf.evaluation.baselines import frame_level_match
from vreloc_tf.contract import MAX_WINDOW, PROBABILITIES, QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH
from vreloc_tf.files import file_sha256
from vreloc_tf.search.embedding import encoder_of

LENGTH_BUCKET = 32
FRAME_LEVEL = "frame-level"


def _bucket(n: int) -> int:
    return max(LENGTH_BUCKET, -(-int(n) // LENGTH_BUCKET) * LENGTH_BUCKET)


class Relocalizer:
    """A run folder's selected model + its decoding rule (``Relocalizer.from_run``)."""

    def __init__(self, model, decode_mode: str, max_length, max_window: int, feature_dim: int, info: dict,
                 batch_size: int = 64):
        import tensorflow as tf

        # heavy: TensorFlow (keras.ops); an index without a model re-localizes without it
        from vreloc_tf.model.decoding import decoder

        self.model, self.mode, self.max_length = model, decode_mode, max_length
        self.max_window, self.feature_dim, self.info, self.batch_size = int(max_window), int(feature_dim), info, batch_size
        self._decode = decoder(decode_mode, numpy=True)
        self._probabilities = tf.function(lambda batch: model(batch, training=False)[PROBABILITIES],
                                          reduce_retracing=True)

    @classmethod
    def from_run(cls, run: Run, batch_size: int = 64) -> "Relocalizer":
        """The selected model of ``run`` (opened by the caller) and its decoding rule."""
        model, cfg = run.load_model(), run.config
        info = {"method": "model", "run": run.path,
                "model_sha256": file_sha256(run.checkpoint_file()), "feature_dim": int(run.manifest.feature_dim),
                "decode": cfg.decode_rule, "pca_file": run.manifest.pca_file, "features": run.manifest.features}
        return cls(model, cfg.decode_rule, cfg.decode_max_length, cfg.data.max_window,
                   int(run.manifest.feature_dim), info, batch_size)

    def encoder(self):
        return encoder_of(self.model)

    def locate(self, query: np.ndarray, spans: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, score) arrays [N]: the decoded segment (relative to each span) and its score."""
        n = len(spans)
        start, end, score = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32)
        if n == 0:
            return start, end, score
        lq = len(query)
        q = np.zeros((_bucket(lq), self.feature_dim), np.float32)
        q[:lq] = query
        order = np.argsort([len(s) for s in spans], kind="stable")  # similar lengths share a batch
        for b0 in range(0, n, self.batch_size):
            rows = order[b0:b0 + self.batch_size]
            lengths = np.array([len(spans[r]) for r in rows], np.int32)
            refs = np.zeros((len(rows), _bucket(lengths.max()), self.feature_dim), np.float32)
            for i, r in enumerate(rows):
                refs[i, :lengths[i]] = spans[r]
            batch = {QUERY: np.repeat(q[None], len(rows), axis=0),
                     QUERY_LENGTH: np.full(len(rows), lq, np.int32),
                     REFERENCE: refs, REFERENCE_LENGTH: lengths}
            probs = self._probabilities(batch).numpy()
            s, e, sc = self._decode(probs, lengths, self.max_length)
            start[rows], end[rows], score[rows] = s, e, sc
        return start, end, score



class FrameLevelRelocalizer:
    """The training-free frame-level method (Feng et al.'s baseline, vreloc_tf.evaluation.baselines) as a re-localizer.

    Per span: :func:`vreloc_tf.evaluation.baselines.frame_level_match` -- the window of the query's length
    (at most the span's) with the highest mean similarity to the query steps; its score is that mean.
    ``max_window``: the contract's MAX_WINDOW, so search cuts spans as it does for a model.
    """

    def __init__(self, feature_dim: int):
        self.feature_dim, self.max_window = int(feature_dim), int(MAX_WINDOW)
        self.info = {"method": FRAME_LEVEL, "feature_dim": self.feature_dim}

    def locate(self, query: np.ndarray, spans: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, score) arrays [N]: the frame-level segment (relative to each span) and its mean similarity."""
        n = len(spans)
        start, end, score = np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32)
        for i, span in enumerate(spans):
            start[i], end[i], score[i], _ = frame_level_match(query, np.asarray(span))
        return start, end, score
