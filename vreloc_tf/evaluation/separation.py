"""How well a model's own confidence tells a true query from a swapped one (issue #26's control).

The swapped-query control scores a model's *answers*; on a family where a query-free cue finds
the only action, a model that reads the query can still answer the same place. The decoder's
score of each answer (``segment_scores`` of ``vreloc evaluate``) says whether its confidence
moved: the ROC AUC of true-query scores against swapped-query scores is 0.5 when the score
ignores the query and 1.0 when every true pair outranks every swapped one.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vreloc_tf.errors import InputError


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (Mann-Whitney's convention): a
    group of c equal values ending at rank e holds ranks e-c+1 .. e, whose mean is e - (c-1)/2."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.reshape(-1)]


def score_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive's score > a negative's) + 0.5 P(tie): the ROC AUC, from ranks (O(n log n))."""
    pos = np.asarray(positive, dtype=np.float64).reshape(-1)
    neg = np.asarray(negative, dtype=np.float64).reshape(-1)
    for name, v in (("positive", pos), ("negative", neg)):
        if v.size == 0:
            raise InputError(f"score_auc: no {name} scores")
        if not np.all(np.isfinite(v)):
            raise InputError(f"score_auc: {name} scores hold a non-finite value")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size))


__all__ = ["score_auc"]
