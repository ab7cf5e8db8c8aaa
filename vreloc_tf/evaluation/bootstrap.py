"""Honest intervals for mAP@1: a class-level (cluster) bootstrap with the seed-to-seed spread
included, and paired intervals for the difference between two methods (issue #26 item 5).

Why two levels. A pair bootstrap treats the N test pairs as independent, but they are not:
the pairs of one class share the class signature (the same kind of action, often the same
look and length), so a method that has learnt a class gets most of its pairs right and one
that has not gets most of them wrong. A new test set would bring new *classes*, so the
classes are the sampling unit: every draw takes C classes with replacement from the C
observed ones, and all pairs of a drawn class come along. That level captures the variance
of which classes the benchmark happens to contain. Training is random too: a user who
retrains gets another seed, not the mean of ours, so every draw also takes S seeds with
replacement from the S runs. That level captures the seed-to-seed spread, which a fixed-model
bootstrap leaves out.

Why paired. Two methods are scored on the same pairs, so most of the class-level variance is
common to both (a hard class is hard for everyone). The difference is bootstrapped with the
same drawn classes for both methods in every draw, so that common part cancels; the seeds
are drawn independently per method (seed 0 of ours has nothing to do with seed 0 of CGBM).

How it is fast. The average over the five thresholds equals 100/T times the mean over pairs
of k = the number of thresholds the pair's IoU exceeds. So a draw needs only, per seed and
per class, the sum of k and the pair count; the drawn classes enter as integer weights
(how often each was drawn), and a draw is two small weighted sums.

Random numbers, in this order, from ``rng = np.random.default_rng(seed)``:

* :func:`cluster_bootstrap`: ``seed_picks = rng.integers(0, S, size=(samples, S))``, then
  ``class_picks = rng.integers(0, C, size=(samples, C))``;
* :func:`paired_difference`: ``picks_a = rng.integers(0, Sa, size=(samples, Sa))``, then
  ``picks_b = rng.integers(0, Sb, size=(samples, Sb))``, then
  ``class_picks = rng.integers(0, C, size=(samples, C))``.

Row ``d`` of each is draw ``d``; a class index ``k`` means the ``k``-th entry of
``np.unique(classes)``. Intervals are percentile intervals (``np.percentile``, linear).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from vreloc_tf.finite import first_non_finite
from vreloc_tf.evaluation.metrics import THRESHOLDS

_THRESHOLDS = np.asarray(THRESHOLDS, dtype=np.float64)


def thresholds_cleared(ious: np.ndarray) -> np.ndarray:
    """Per pair, how many of the five thresholds its IoU exceeds (strictly): ints 0..5, shape of ious."""
    ious = np.asarray(ious, dtype=np.float64)
    return (ious[..., None] > _THRESHOLDS).sum(axis=-1)


def average_map(ious: np.ndarray) -> np.ndarray:
    """ious [..., N] -> mAP@1 averaged over the five thresholds, percent, shape [...] (IoU > t is a hit)."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim == 0 or ious.shape[-1] == 0:
        raise ValueError(f"average_map: ious needs a last axis of pairs, got shape {ious.shape}")
    return 100.0 * thresholds_cleared(ious).mean(axis=-1) / len(_THRESHOLDS)


# -- checks ---------------------------------------------------------------------------------

def _check_ious(ious, name: str) -> np.ndarray:
    """A finite [S, N] float array with S >= 1 and N >= 1."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.ndim != 2 or ious.shape[0] < 1 or ious.shape[1] < 1:
        raise ValueError(f"{name} must be [seeds, pairs] with at least one of each (one run: "
                         f"{name}[None]), got shape {ious.shape}")
    where = first_non_finite(ious)
    if where is not None:
        raise ValueError(f"{name} has a non-finite IoU ({ious[where]}) at [seed, pair] = {list(where)}")
    return ious


def _check_classes(classes, pairs: int) -> Tuple[np.ndarray, np.ndarray]:
    """Class index (into the sorted distinct classes) of every pair, and the pair count per class."""
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.shape[0] != pairs:
        raise ValueError(f"classes must be one label per pair, shape ({pairs},), got shape {classes.shape}")
    if classes.dtype.kind not in "iuUS":
        raise ValueError(f"classes must be integer (or string) labels, got dtype {classes.dtype}")
    _, index, sizes = np.unique(classes, return_inverse=True, return_counts=True)
    if len(sizes) < 2:
        raise ValueError(f"classes must hold at least 2 distinct classes to resample, got {len(sizes)}")
    return index.reshape(-1), sizes


def _check_draws(samples: int, level: float) -> None:
    """samples a positive int, level strictly between 0 and 1."""
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")


# -- the draws ------------------------------------------------------------------------------

def class_sums(ious: np.ndarray, index: np.ndarray, classes: int) -> np.ndarray:
    """[S, C]: per seed and class, the sum over the class's pairs of the thresholds cleared."""
    cleared = thresholds_cleared(ious)  # [S, N]
    seeds = cleared.shape[0]
    flat = (np.arange(seeds)[:, None] * classes + index[None, :]).ravel()
    return np.bincount(flat, weights=cleared.ravel(), minlength=seeds * classes).reshape(seeds, classes)


def class_weights(class_picks: np.ndarray, classes: int) -> np.ndarray:
    """[draws, C]: how often each class was drawn in each draw (a class drawn twice counts twice)."""
    draws = class_picks.shape[0]
    flat = (np.arange(draws)[:, None] * classes + class_picks).ravel()
    return np.bincount(flat, minlength=draws * classes).reshape(draws, classes).astype(np.float64)


def draw_statistics(sums: np.ndarray, sizes: np.ndarray, weights: np.ndarray,
                    seed_picks: np.ndarray) -> np.ndarray:
    """[draws]: per draw, the mean over the drawn seeds of each seed's average mAP@1 on the drawn pairs.

    sums [S, C] from :func:`class_sums`, sizes [C] pairs per class, weights [draws, C] from
    :func:`class_weights`, seed_picks [draws, S] seed indices.
    """
    pairs = weights @ sizes.astype(np.float64)  # [draws]: pairs in each draw
    per_seed = 100.0 * (weights @ sums.T) / (len(_THRESHOLDS) * pairs[:, None])  # [draws, S]
    drawn = np.take_along_axis(per_seed, seed_picks, axis=1)  # [draws, S] in draw order
    return drawn.mean(axis=1)


def _interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    """Percentile interval holding ``level`` of the values."""
    tail = 100.0 * (1.0 - float(level)) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


# -- the API --------------------------------------------------------------------------------

def cluster_bootstrap(ious: np.ndarray, classes: np.ndarray, samples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Interval of one method's average mAP@1, resampling seeds and classes (see the module docstring).

    ious [S, N] (S training seeds, N test pairs in a fixed order; S = 1 for a seedless method),
    classes [N] (the class of each pair's reference). Per draw: S seeds with replacement (rng
    first), then C classes with replacement (rng second); the statistic is the mean over the
    drawn seeds of average_map on the drawn classes' pairs.
    Returns ``{"mean", "lo", "hi", "samples", "classes", "seeds"}`` (percent).
    """
    ious = _check_ious(ious, "ious")
    index, sizes = _check_classes(classes, ious.shape[1])
    _check_draws(samples, level)
    seeds, count = ious.shape[0], len(sizes)
    rng = np.random.default_rng(seed)
    seed_picks = rng.integers(0, seeds, size=(samples, seeds))
    class_picks = rng.integers(0, count, size=(samples, count))
    values = draw_statistics(class_sums(ious, index, count), sizes,
                             class_weights(class_picks, count), seed_picks)
    lo, hi = _interval(values, level)
    return {"mean": float(average_map(ious).mean()), "lo": lo, "hi": hi,
            "samples": int(samples), "classes": int(count), "seeds": int(seeds)}


def paired_difference(ious_a: np.ndarray, ious_b: np.ndarray, classes: np.ndarray, samples: int = 2000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Interval of average_map(a) - average_map(b) on the same test pairs, classes resampled once per draw.

    ious_a [Sa, N], ious_b [Sb, N] in the same pair order; classes [N]. Per draw: Sa seeds of a
    (rng first), Sb seeds of b (rng second), independently, then C classes (rng third) whose
    pairs serve both methods. Returns ``{"difference", "lo", "hi", "above_zero", "samples",
    "classes"}`` (percentage points; ``above_zero`` is ``lo > 0``).
    """
    ious_a = _check_ious(ious_a, "ious_a")
    ious_b = _check_ious(ious_b, "ious_b")
    if ious_a.shape[1] != ious_b.shape[1]:
        raise ValueError(f"ious_a and ious_b must score the same pairs: ious_a has {ious_a.shape[1]} "
                         f"pairs, ious_b has {ious_b.shape[1]}")
    index, sizes = _check_classes(classes, ious_a.shape[1])
    _check_draws(samples, level)
    count = len(sizes)
    rng = np.random.default_rng(seed)
    picks_a = rng.integers(0, ious_a.shape[0], size=(samples, ious_a.shape[0]))
    picks_b = rng.integers(0, ious_b.shape[0], size=(samples, ious_b.shape[0]))
    weights = class_weights(rng.integers(0, count, size=(samples, count)), count)
    values = (draw_statistics(class_sums(ious_a, index, count), sizes, weights, picks_a)
              - draw_statistics(class_sums(ious_b, index, count), sizes, weights, picks_b))
    lo, hi = _interval(values, level)
    return {"difference": float(average_map(ious_a).mean() - average_map(ious_b).mean()),
            "lo": lo, "hi": hi, "above_zero": bool(lo > 0.0),
            "samples": int(samples), "classes": int(count)}
