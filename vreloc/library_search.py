"""A search query from a file: a clip (.mp4 and other videos) made into features exactly like the index's
(its recorded backbone, weights, frame rate and PCA; vreloc/features.py), or a feature array (.npy, [L, D])."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from pipeline.backbones import BackboneOptions
from vreloc import features  # features.extract, looked up when called (tests cache it)
from vreloc.features import recipe_like
from vreloc_tf.errors import InputError


def query_features(path: str, index, backbone: Optional[BackboneOptions] = None,
                   pca_file: Optional[str] = None) -> np.ndarray:
    """float32 [L, D] features of the query file for ``index`` (a LibraryIndex).

    ``backbone``/``pca_file``: the command line's, for what the index cannot name (an index
    built before feature specs were recorded); they must describe the index's features.
    """
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

    spec = index.feature_spec
    if spec is None and pca_file is None:
        pca_file = index.pca_file
    recipe = recipe_like(spec, f"the index {index.path}", backbone, pca_file)
    feats, _ = features.extract(recipe, path, desc="query")
    return feats
