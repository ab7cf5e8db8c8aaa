"""The training-free comparison methods of the paper (Tables 2 and 4), as `vreloc baseline` runs them.

Scored on the same fixed pair list as the models (see :mod:`vreloc_tf.pairs`). For a
reference of L steps (segments [start, end), end exclusive):

* ``random`` — two boundaries drawn independently and uniformly from {0, ..., L} with a
  seeded ``numpy.random.default_rng(seed)`` (pairs in list order), sorted; a draw with
  both equal is repeated. "A starting and an ending time within the reference".
* ``prior`` — the statistical prior: m_s = mean of gt_start / L and m_e = mean of
  gt_end / L over every train entry of the same data folder (printed; 0.3267 / 0.6510
  on the benchmark's train.json, 0.3265 / 0.6509 in the paper), predicted as
  start = floor(m_s * L + 0.5), end = max(floor(m_e * L + 0.5), start + 1), clipped to L.
* ``frame-level`` (Feng et al.'s training-free baseline): every query and reference
  feature row is L2-normalised; S[i, j] = cos(r_i, q_j) for reference step i and query
  step j; a reference step scores a_i = mean_j S[i, j]; the prediction is the window of
  the query's length, W = min(Lq, L), with the highest mean a_i, i.e. the segment whose
  frames are on average most similar to all query frames: [s*, s* + W) with
  s* = argmax_s mean_{i=s}^{s+W-1} a_i (earliest on a tie). Rows of zeros stay zero.
* ``query-free`` (a control: what is reachable without reading the query at all): for a
  reference x_0 .. x_{L-1} (its L valid steps only; padding is never read), centre the steps
  on the reference's own mean m = (1/L) sum_t x_t, take s_t = ||x_t - m||_2 and
  d_t = s_t - mean(s), and predict the contiguous segment [start, end) maximizing
  sum_{t=start}^{end-1} d_t (maximum-sum subarray; ties -> the earliest start, then the
  shortest; if every d_t <= 0 this is the single best step). All-equal s gives d = 0
  exactly, hence [0, 1). The query is never read, and there is no learned or tuned number.
"""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import numpy as np

from vreloc_tf.errors import InputError

METHODS = ("random", "prior", "frame-level", "query-free")
METHOD_NAMES = {"random": "Random", "prior": "Stat. prior", "frame-level": "FL Baseline", "query-free": "query-free"}


def random_segments(lengths: np.ndarray, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = np.zeros(len(lengths), np.int64)
    end = np.zeros(len(lengths), np.int64)
    for i, length in enumerate(np.asarray(lengths, dtype=np.int64)):
        if length < 1:
            raise ValueError(f"random baseline: reference {i} is empty")
        while True:
            a, b = rng.integers(0, length + 1, size=2)
            if a != b:
                break
        start[i], end[i] = min(a, b), max(a, b)
    return start, end


def train_prior(data_dir: str, split: str = "train") -> Tuple[float, float]:
    """(mean normalized start, mean normalized end) over the entries of ``split`` with ground truth."""
    from vreloc_tf.entry_index import load_index

    index = load_index(data_dir, split)
    ok = index.has_groundtruth
    if not np.any(ok):
        raise InputError(f"prior baseline: split '{split}' of {data_dir} has no ground truth to average")
    length = index.length[ok].astype(np.float64)
    gt = index.groundtruth[ok].astype(np.float64)
    return float(np.mean(gt[:, 0] / length)), float(np.mean(gt[:, 1] / length))


def prior_segments(lengths: np.ndarray, mean_start: float, mean_end: float) -> Tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(lengths, dtype=np.int64)
    start = np.floor(mean_start * lengths + 0.5).astype(np.int64)
    start = np.minimum(start, lengths - 1)
    end = np.maximum(np.floor(mean_end * lengths + 0.5).astype(np.int64), start + 1)
    return start, np.minimum(end, lengths)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def frame_level_similarity(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[L]: each reference frame's mean cosine similarity to the query frames."""
    q = _normalize_rows(np.asarray(query, dtype=np.float64))
    r = _normalize_rows(np.asarray(reference, dtype=np.float64))
    if q.shape[0] < 1 or r.shape[0] < 1:
        raise ValueError("frame-level baseline: empty query or reference")
    return (r @ q.T).mean(axis=1)


def frame_level_match(query: np.ndarray, reference: np.ndarray) -> Tuple[int, int, float, np.ndarray]:
    """(start, end, score, similarity [L]) of the frame-level method on one unpadded pair [Lq, D], [L, D].

    The segment is the window of the query's length (at most the reference's) with the highest
    mean similarity (earliest on a tie); the score is that mean, in [-1, 1]. What the baseline
    predicts, and what `vreloc locate --method frame-level` and search without a model report.
    """
    a = frame_level_similarity(query, reference)  # [L]
    width = min(len(query), len(reference))
    cum = np.concatenate([[0.0], np.cumsum(a)])
    window_mean = (cum[width:] - cum[:-width]) / width  # [L - W + 1]
    s = int(np.argmax(window_mean))
    return s, s + width, float(window_mean[s]), a


def frame_level_segment(query: np.ndarray, reference: np.ndarray) -> Tuple[int, int]:
    """The frame-level prediction for one pair of unpadded feature arrays [Lq, D], [L, D]."""
    start, end, _, _ = frame_level_match(query, reference)
    return start, end


def frame_level_segments(index, plan: np.ndarray, feature_dim: int) -> Tuple[np.ndarray, np.ndarray]:
    from vreloc_tf.input_pipeline import evaluation_dataset

    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        q, ql = batch["query"].numpy(), batch["query_length"].numpy()
        r, rl = batch["reference"].numpy(), batch["reference_length"].numpy()
        for i in range(q.shape[0]):
            s, e = frame_level_segment(q[i, :ql[i]], r[i, :rl[i]])
            start.append(s)
            end.append(e)
    return np.array(start, np.int64), np.array(end, np.int64)


def max_sum_segment(d: np.ndarray) -> Tuple[int, int]:
    """[start, end) maximizing sum(d[start:end]) over non-empty segments (Kadane, in its prefix-sum
    form: sum = P[end] - P[start] with P the running sum from 0); ties -> earliest start, then shortest."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or d.size < 1:
        raise ValueError("query-free baseline: empty reference")
    prefix = np.concatenate([[0.0], np.cumsum(d)])
    best, best_start, best_end = -np.inf, 0, 1
    low, low_at = prefix[0], 0  # the smallest prefix before `end`, at its earliest position
    for end in range(1, prefix.size):
        value = prefix[end] - low
        # a later end never has an earlier best start (low_at only moves right), so a tie keeps the
        # segment already found: the earliest start, then the shortest
        if value > best:
            best, best_start, best_end = value, low_at, end
        if prefix[end] < low:
            low, low_at = prefix[end], end
    return best_start, best_end


def query_free_scores(reference: np.ndarray) -> np.ndarray:
    """[L] d_t = s_t - mean(s), s_t = ||x_t - mean_t x_t||_2, on an unpadded reference [L, D]."""
    x = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError("query-free baseline: empty reference")
    s = np.linalg.norm(x - x.mean(axis=0), axis=-1)
    if np.all(s == s[0]):  # all-equal norms: d is exactly zero (not rounding noise)
        return np.zeros_like(s)
    return s - s.mean()


def query_free_segment(reference: np.ndarray) -> Tuple[int, int]:
    """The query-free prediction (see the module docstring) for one unpadded reference [L, D]."""
    return max_sum_segment(query_free_scores(reference))


def query_free_batch(reference: np.ndarray, reference_length: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Predictions for a padded batch [B, T, D] with valid lengths [B] (steps past a length are not read)."""
    pairs = [query_free_segment(reference[i, :int(n)]) for i, n in enumerate(reference_length)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def query_free_segments(index, plan: np.ndarray, feature_dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """The query-free predictions over a pair plan, in plan order (only the references are used)."""
    from vreloc_tf.input_pipeline import evaluation_dataset

    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        s, e = query_free_batch(batch["reference"].numpy(), batch["reference_length"].numpy())
        start.append(s)
        end.append(e)
    if not start:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(start), np.concatenate(end)


def run_baseline(method: str, data_dir: str, split: str = "test", pairs_file: Optional[str] = None,
                 seed: int = 0, train_split: str = "train", verbose: bool = True) -> dict:
    """Score one baseline on the fixed pair list; returns the result dict (percent)."""
    from vreloc_tf.artifacts import Dataset
    from vreloc_tf.evaluate import resolve_pairs, score_plan
    from vreloc_tf.input_pipeline import evaluation_plan

    if method not in METHODS:
        raise InputError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    dataset = Dataset.open(data_dir)
    index, pairs = resolve_pairs(data_dir, split, pairs_file, seed)
    plan = evaluation_plan(index, pairs)
    lengths = plan[:, 5] - plan[:, 4]
    extra = {}
    if method == "random":
        start, end = random_segments(lengths, seed)
        extra["seed"] = seed
    elif method == "prior":
        ms, me = train_prior(data_dir, train_split)
        if verbose:
            print(f"statistical prior from {train_split}: mean start {ms:.4f}, mean end {me:.4f}", file=sys.stderr)
        start, end = prior_segments(lengths, ms, me)
        extra["train_means"] = [ms, me]
    elif method == "frame-level":
        start, end = frame_level_segments(index, plan, dataset.feature_dim)
    else:
        start, end = query_free_segments(index, plan, dataset.feature_dim)
    return score_plan(plan, start, end, METHOD_NAMES[method], split, **extra)
