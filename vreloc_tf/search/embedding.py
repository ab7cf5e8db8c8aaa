"""Window embeddings: what the ANN index holds for every library video, and what a query is matched with.

Why windows at several scales: a query clip is as long as the action it shows (4 to 100+ features),
and the library video holds that action somewhere among other content. A mean over a window of about
the query's length is close to the query's own mean only where the window covers the action; a
whole-video mean is dominated by the rest. So every video gets windows of each length in ``scales``
(hop = half the length; a video shorter than a scale gets one window over all of it), and the
query's one vector (its mean over all its steps) meets them all in one inner-product search.

Two per-step representations (``kind``), chosen by measurement (README, "search your library"):

* ``raw``: the features themselves, each step scaled to unit length (no model needed);
* ``encoder``: the trained model's reference encoder (Eq. 7, conv + layer norm) over the video,
  for the query too (the query encoder's output lives in another space), each step unit length.

A window's vector is the mean of its steps, scaled to unit length, so the index scores by cosine.
Everything here is NumPy over prefix sums: O(L) per scale per video.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from vreloc_tf.errors import InputError

KINDS = ("raw", "encoder")
DEFAULT_SCALES = (8, 16, 32, 64, 128)
DEFAULT_KIND = "raw"


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, 1e-6)).astype(np.float32)


def window_spans(length: int, scales: Sequence[int]) -> np.ndarray:
    """int32 [N, 3] rows (start, end, scale) of every window of a video of ``length`` steps.

    Per scale s: starts 0, s/2, s, ... with the last window ending at ``length``; a video shorter
    than s gets the one window [0, length) (once, at the smallest such scale).
    """
    rows = []
    whole_done = False
    for s in sorted(int(v) for v in scales):
        if length <= s:
            if not whole_done and length > 0:
                rows.append((0, length, s))
                whole_done = True
            continue
        hop = max(1, s // 2)
        starts = list(range(0, length - s + 1, hop))
        if starts[-1] + s < length:
            starts.append(length - s)
        rows.extend((b, b + s, s) for b in starts)
        if length == s:
            whole_done = True
    return np.array(rows, np.int32).reshape(-1, 3)


def window_vectors(steps: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """float32 [N, E]: the unit-length mean of ``steps`` [L, E] over each (start, end) of ``spans``."""
    steps = np.asarray(steps, np.float64)
    cs = np.concatenate([np.zeros((1, steps.shape[1])), np.cumsum(steps, axis=0)], axis=0)
    if len(spans) == 0:
        return np.zeros((0, steps.shape[1]), np.float32)
    start, end = spans[:, 0], spans[:, 1]
    means = (cs[end] - cs[start]) / (end - start)[:, None]
    return unit_rows(means)


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
    """How an index's vectors were made (recorded in its manifest, checked at query time)."""

    kind: str = DEFAULT_KIND
    scales: Tuple[int, ...] = DEFAULT_SCALES

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"embedding kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if not self.scales or any(int(s) < 1 for s in self.scales):
            raise InputError(f"embedding scales {list(self.scales)}: expected positive window lengths")

    def to_json(self) -> dict:
        return {"kind": self.kind, "scales": [int(s) for s in self.scales]}

    @classmethod
    def from_json(cls, doc: dict) -> "EmbeddingSpec":
        return cls(str(doc["kind"]), tuple(int(s) for s in doc["scales"]))


class Embedder:
    """Per-step vectors of a feature sequence, then window or query vectors (see the module docstring).

    ``encoder``: the model's ``reference_encoder`` layer, needed for kind ``encoder`` only.
    """

    def __init__(self, spec: EmbeddingSpec, feature_dim: int, encoder=None):
        if spec.kind == "encoder" and encoder is None:
            raise InputError("embedding kind 'encoder' needs a trained model (--model RUN)")
        self.spec, self.feature_dim, self.encoder = spec, int(feature_dim), encoder

    @property
    def dim(self) -> int:
        return self.feature_dim if self.spec.kind == "raw" else int(self.encoder.units)

    def check_features(self, features: np.ndarray, what: str) -> np.ndarray:
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[0] < 1:
            raise InputError(f"{what}: expected features [length >= 1, {self.feature_dim}], got shape "
                             f"{tuple(features.shape)}")
        if features.shape[1] != self.feature_dim:
            raise InputError(f"{what} has {features.shape[1]}-d features but the index was built with "
                             f"{self.feature_dim}-d features; use the PCA and model the index was built with")
        if not np.all(np.isfinite(features)):
            raise InputError(f"{what}: features hold NaN or infinite values")
        return features

    def steps(self, features: np.ndarray) -> np.ndarray:
        """float32 [L, E]: unit-length per-step vectors."""
        if self.spec.kind == "raw":
            return unit_rows(features)
        out = self.encoder(features[None].astype(np.float32), np.array([len(features)], np.int32))
        return unit_rows(np.asarray(out)[0])

    def windows(self, features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(spans int32 [N, 3] (start, end, scale), vectors float32 [N, E]) of one library video."""
        spans = window_spans(len(features), self.spec.scales)
        return spans, window_vectors(self.steps(features), spans)

    def query(self, features: np.ndarray) -> np.ndarray:
        """float32 [E]: the unit-length mean of the query's per-step vectors."""
        features = self.check_features(features, "the query")
        return window_vectors(self.steps(features), np.array([[0, len(features)]]))[0]


def encoder_of(model) -> Optional[object]:
    """The reference encoder layer of a vreloc model (Eq. 7)."""
    return model.get_layer("reference_encoder")
