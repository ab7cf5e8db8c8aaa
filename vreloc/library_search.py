"""A search query from a file: a clip (.mp4 and other videos) through the same feature path as
`vreloc locate` (PyAV, C3D fc7, the index's PCA), or a feature array (.npy, [L, D])."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from vreloc_tf.errors import InputError


def query_features(path: str, pca_file: Optional[str] = None, c3d_weights: Optional[str] = None,
                   random_c3d: bool = False, c3d_seed: int = 0) -> np.ndarray:
    """float32 [L, D] features of the query file."""
    if not os.path.isfile(path):
        raise InputError(f"--query {path}: no such file")
    if path.endswith(".npy"):
        try:
            feats = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--query {path}: not a NumPy array file ({exc})") from None
        if feats.ndim != 2:
            raise InputError(f"--query {path}: expected features [length, dim], got shape {feats.shape}")
        return feats.astype(np.float32)
    from pipeline.pca import PCA
    from vreloc.locate import _extractor, extract_features

    if c3d_weights is None and not random_c3d:
        raise InputError("a video query needs --c3d-weights FILE (Sports-1M C3D) or, for tests, --random-c3d")
    feats, _ = extract_features(path, _extractor(c3d_weights, c3d_seed), PCA.load(pca_file) if pca_file else None)
    return feats
