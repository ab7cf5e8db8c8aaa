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
* ``window-match`` (issue #26 item 4: a training-free matcher next to frame-level; see
  :func:`window_match` for each choice and why): centre every valid reference and query step on
  the reference's mean over its valid steps, normalise each centred row to unit length (zero rows
  stay zero), let q = the mean of the query's unit rows, and for every candidate [s, e) of length
  max(1, floor(Lq/2)) .. min(L, 2 Lq) score cos(q, mean of its unit rows) - cos(q, mean of the unit
  rows outside it) (an empty or cancelling mean: cosine 0); predict the best (ties within 1e-9: the
  earliest start, then the shortest).
"""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import numpy as np

from vreloc_tf.artifacts import Dataset
from vreloc_tf.contract import QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH
from vreloc_tf.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.evaluate import resolve_pairs, score_plan
from vreloc_tf.input_pipeline import evaluation_dataset, evaluation_plan

METHODS = ("random", "prior", "frame-level", "query-free", "window-match")
METHOD_NAMES = {"random": "Random", "prior": "Stat. prior", "frame-level": "FL Baseline", "query-free": "query-free",
                "window-match": "Window matcher"}


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
    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        q, ql = batch[QUERY].numpy(), batch[QUERY_LENGTH].numpy()
        r, rl = batch[REFERENCE].numpy(), batch[REFERENCE_LENGTH].numpy()
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
    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        s, e = query_free_batch(batch[REFERENCE].numpy(), batch[REFERENCE_LENGTH].numpy())
        start.append(s)
        end.append(e)
    if not start:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(start), np.concatenate(end)


# --- window matcher (issue #26 item 4) ----------------------------------------------------------

WINDOW_MATCH_TIE = 1e-9  # scores this close to the best are a tie (float64 rounding is ~1e-13)
WINDOW_MATCH_ZERO = 1e-9  # a mean of unit rows shorter than this is the zero vector (a cancellation)


def window_match_lengths(query_length: int, reference_length: int) -> Tuple[int, int]:
    """(shortest, longest) candidate length: max(1, floor(Lq/2)) .. min(L, 2 Lq); when the reference
    is shorter than floor(Lq/2) the only candidate is the whole reference."""
    lq, lr = int(query_length), int(reference_length)
    if lq < 1 or lr < 1:
        raise ValueError("window-match baseline: empty query or reference")
    longest = min(lr, 2 * lq)
    return min(max(1, lq // 2), longest), longest


def _cosines(dot: np.ndarray, total: np.ndarray, count: np.ndarray, q_norm: float) -> np.ndarray:
    """cos(q, mean) of means given as sums: ``dot`` = q . sum, ``total`` = the sums [N, D] of
    ``count`` unit rows each; 0 where a mean is empty or shorter than WINDOW_MATCH_ZERO."""
    norm = np.sqrt(np.einsum("ij,ij->i", total, total))
    ok = (count > 0) & (norm > WINDOW_MATCH_ZERO * count)
    return np.where(ok, dot / (q_norm * np.where(ok, norm, 1.0)), 0.0)


def window_match_scores(query: np.ndarray, reference: np.ndarray) -> Tuple[int, np.ndarray]:
    """(shortest length K0, scores [K, L]) of the window matcher on one unpadded pair [Lq, D], [L, D]:
    scores[k - K0, s] = cos(q, m_in) - cos(q, m_out) of the candidate [s, s + k); -inf where s + k > L.

    Computed from running sums of the unit rows (a candidate's sum is C[e] - C[s], its complement's
    C[L] - (C[e] - C[s]); their dots with q come the same way from the running sum of r_t . q), one
    vectorized pass per length: O(L * K * D). A mean's direction is its sum's, so the counts only
    decide whether a mean is empty.
    """
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if q.ndim != 2 or r.ndim != 2 or q.shape[0] < 1 or r.shape[0] < 1 or q.shape[1] != r.shape[1]:
        raise ValueError("window-match baseline: needs a non-empty query [Lq, D] and reference [L, D]")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(r))):
        raise ValueError("window-match baseline: non-finite feature in the valid steps")
    centre = r.mean(axis=0)
    r_unit = _normalize_rows(r - centre)
    qd = _normalize_rows(q - centre).mean(axis=0)
    q_norm = float(np.linalg.norm(qd))
    length = r.shape[0]
    shortest, longest = window_match_lengths(q.shape[0], length)
    scores = np.full((longest - shortest + 1, length), -np.inf)
    if q_norm <= WINDOW_MATCH_ZERO:  # no query direction: every candidate scores 0
        for row, k in enumerate(range(shortest, longest + 1)):
            scores[row, :length - k + 1] = 0.0
        return shortest, scores
    run_sum = np.concatenate([np.zeros((1, r.shape[1])), np.cumsum(r_unit, axis=0)])  # [L+1, D]
    run_dot = np.concatenate([[0.0], np.cumsum(r_unit @ qd)])  # [L+1]
    for row, k in enumerate(range(shortest, longest + 1)):
        inside = run_sum[k:] - run_sum[:-k]  # [L-k+1, D]: each candidate's sum of unit rows
        inside_dot = run_dot[k:] - run_dot[:-k]
        n = np.full(length - k + 1, k)
        scores[row, :length - k + 1] = (_cosines(inside_dot, inside, n, q_norm)
                                        - _cosines(run_dot[-1] - inside_dot, run_sum[-1] - inside, length - n, q_norm))
    return shortest, scores


def window_match(query: np.ndarray, reference: np.ndarray) -> Tuple[int, int, float]:
    """(start, end, score) of the window matcher on one unpadded pair [Lq, D], [L, D].

    The rule, each choice with its reason:

    * Centre on the reference's mean c over its valid steps, subtracted from every reference
      *and* query step: what every clip of the video shares (a common component, the scene) is
      removed, so directions say what is specific to a moment of it; one centre for both keeps
      them in one frame, and it needs nothing but the input (the query-free control centres on
      the same mean). Centring the query on its own mean would erase its content. Its weakness:
      the query's own video scene stays in the query (and the reference's is subtracted from
      it), so where a per-video scene outweighs the action (the substates family: norm 2 vs 1)
      it lands in q as a direction unrelated to the action.
    * Normalise each centred row to unit length (rows of zeros stay zero): every step votes with
      its direction alone, so a few large-norm steps cannot dominate a mean.
    * Describe the query by q = the mean of its unit rows, a candidate [s, e) by m_in = the mean
      of its unit rows and the rest of the reference by m_out = the mean of the unit rows outside
      it. Frame-level's window score is q . m_in on uncentred unit rows (a mean of frame-to-frame
      cosines is the dot of the two means): the component every clip shares dominates it, and a
      dot also grows with how much the window's rows agree with each other (a long m_in), not
      only with how close their direction is to q's. A cosine of centred means compares directions only, and in a mean what the
      steps share adds up while their step-to-step noise cancels.
    * Score cos(q, m_in) - cos(q, m_out): the segment should look like the query *and* leave
      nothing that looks like it outside. With cos(q, m_in) alone, the best of the many short
      background candidates (random directions) often beats the true segment; a candidate that
      leaves the action outside is penalised by the second term. The one improvement tried over
      cos(q, m_in) alone, chosen on the val splits only (seed-0 synthetic families, D = 32,
      average mAP@1 alone -> with the complement: demo 42.1 -> 47.0, substates 6.2 -> 4.7,
      periodic 8.3 -> 8.8, shots 11.6 -> 16.5). The whole reference has an empty complement,
      whose cosine is 0.
    * Every length from max(1, floor(Lq/2)) to min(L, 2 Lq): the query is one instance of the
      action and the ground truth another, whose length is free but related; a factor of two
      either way is the parameter-free bracket (the ground truth is never read). When
      L < floor(Lq/2) the whole reference is the one candidate.
    * The maximum; scores within 1e-9 of it are a tie (rounding of the running sums is ~1e-13),
      broken by the earliest start, then the shortest. A zero or cancelling mean (shorter than
      1e-9: e.g. a query equal to the reference's mean, or L = 1, whose one centred step is zero)
      has cosine 0, so an all-zero problem predicts [0, K0).
    """
    shortest, scores = window_match_scores(query, reference)
    best = np.max(scores)
    tied = scores >= best - WINDOW_MATCH_TIE
    start = int(np.argmax(tied.any(axis=0)))
    row = int(np.argmax(tied[:, start]))
    return start, start + shortest + row, float(scores[row, start])


def window_match_segment(query: np.ndarray, reference: np.ndarray) -> Tuple[int, int]:
    """The window-match prediction for one pair of unpadded feature arrays [Lq, D], [L, D]."""
    start, end, _ = window_match(query, reference)
    return start, end


def window_match_batch(query: np.ndarray, query_length: np.ndarray, reference: np.ndarray,
                       reference_length: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Predictions for padded batches [B, Tq, D], [B, T, D] with valid lengths [B] (padding is not read)."""
    pairs = [window_match_segment(query[i, :int(nq)], reference[i, :int(nr)])
             for i, (nq, nr) in enumerate(zip(query_length, reference_length))]
    return np.array([p[0] for p in pairs], np.int64).reshape(-1), np.array([p[1] for p in pairs], np.int64).reshape(-1)


def window_match_segments(index, plan: np.ndarray, feature_dim: int) -> Tuple[np.ndarray, np.ndarray]:
    """The window-match predictions over a pair plan, in plan order."""
    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        s, e = window_match_batch(batch[QUERY].numpy(), batch[QUERY_LENGTH].numpy(),
                                  batch[REFERENCE].numpy(), batch[REFERENCE_LENGTH].numpy())
        start.append(s)
        end.append(e)
    if not start:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(start), np.concatenate(end)


def run_baseline(method: str, data_dir: str, split: str = "test", pairs_file: Optional[str] = None,
                 seed: int = 0, train_split: str = "train", verbose: bool = True) -> dict:
    """Score one baseline on the fixed pair list; returns the result dict (percent)."""
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
    elif method == "window-match":
        start, end = window_match_segments(index, plan, dataset.feature_dim)
    else:
        start, end = query_free_segments(index, plan, dataset.feature_dim)
    return score_plan(plan, start, end, METHOD_NAMES[method], split, **extra)
