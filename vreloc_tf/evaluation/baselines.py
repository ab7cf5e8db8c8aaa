"""The training-free comparison methods of the paper (Tables 2 and 4), as `vreloc baseline` runs them.

Scored on the same fixed pair list as the models (see :mod:`vreloc_tf.data.pairs`). For a
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
  :func:`window_match` for each choice, why, and the val numbers that chose it): once per run, from
  the *train* split's features alone (no label, no segment), W = the covariance of every train
  entry's steps about that entry's own mean, and V = its eigenvectors whose eigenvalue is at least
  the median eigenvalue (printed: how many of D). Per pair, centre every valid reference and query
  step on the reference's mean c, score each reference step by d_t = V^T (r_t - c) . u with u the unit
  mean of V^T (q_j - c) over the query steps, and predict the contiguous segment maximizing
  sum (d_t - mean(d)) (maximum-sum subarray as in query-free: ties -> the earliest start, then the
  shortest). A query without a direction (|mean| <= 1e-9) scores every step 0: [0, 1).
"""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import numpy as np

from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.contract import QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH
from vreloc_tf.data.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import resolve_pairs, score_plan
from vreloc_tf.data.input_pipeline import evaluation_dataset, evaluation_plan
from vreloc_tf.data.schema import feature_spec, shard_files
from vreloc_tf.data.tfrecord import iter_records

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

WINDOW_MATCH_ZERO = 1e-9  # a query direction shorter than this is no direction (every step scores 0)
WINDOW_MATCH_BATCH = 64  # train records parsed and centred together (at most 64 x 300 steps at once)


def _record_batches(paths, size: int):
    """Lists of ``size`` serialized records (the last one shorter) of the files ``paths`` in order, read
    through ``vreloc_tf.data.tfrecord`` (both checksums checked: a damaged record is a DataError)."""
    batch = []
    for path in paths:
        for _, data in iter_records(path):
            batch.append(data)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def within_reference_covariance(data_dir: str, feature_dim: int, split: str = "train") -> Tuple[np.ndarray, int]:
    """(W [D, D], N): the covariance of the steps of every entry of ``split`` about their own entry's mean,
    W = (1/N) sum_entries sum_t (x_t - m_entry)(x_t - m_entry)^T over all N steps (float64; entries in
    shard order, WINDOW_MATCH_BATCH at a time). An entry is a whole reference window, so this is the
    spread of a reference's steps after the centring the window matcher applies; only the features are
    read (no label, no segment)."""
    import tensorflow as tf

    spec = {key: value for key, value in feature_spec().items() if key in ("length", "feature_dim", "features")}

    def parse(serialized):  # a batch of records -> (their features, concatenated; lengths; dims)
        parsed = tf.io.parse_example(serialized, spec)
        return parsed["features"].values, parsed["length"], parsed["feature_dim"]

    dim = int(feature_dim)
    scatter = np.zeros((dim, dim))
    count = 0
    for serialized in _record_batches(shard_files(data_dir, split), WINDOW_MATCH_BATCH):
        values, lengths, dims = (t.numpy() for t in parse(tf.constant(serialized)))
        if np.any(dims != dim) or values.size != int(np.sum(lengths)) * dim:
            raise InputError(f"window-match baseline: a '{split}' record of {data_dir} does not hold "
                             f"length x {dim} features (the data folder's feature dim)")
        lengths = lengths[lengths > 0].astype(np.int64)
        if lengths.size == 0:
            continue
        x = values.reshape(-1, dim).astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        means = np.add.reduceat(x, starts, axis=0) / lengths[:, None]
        x -= np.repeat(means, lengths, axis=0)
        scatter += x.T @ x
        count += x.shape[0]
    if count < 1:
        raise InputError(f"window-match baseline: split '{split}' of {data_dir} has no features to estimate "
                         f"the within-reference covariance from")
    return scatter / count, count


def window_match_basis_from_covariance(covariance: np.ndarray) -> np.ndarray:
    """[D, k] orthonormal columns: the eigenvectors of ``covariance`` whose eigenvalue is at least the
    median of the D eigenvalues (largest first); the half of the space in which a reference varies most.
    All-equal eigenvalues (no preferred direction) keep every direction."""
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] < 1:
        raise ValueError("window-match baseline: the covariance must be a non-empty square matrix")
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)  # ascending
    keep = values >= np.median(values)
    return vectors[:, keep][:, ::-1].copy()


def window_match_basis(data_dir: str, feature_dim: int, split: str = "train") -> np.ndarray:
    """The window matcher's subspace [D, k], estimated from ``split`` (the train split) of ``data_dir``."""
    cov, _ = within_reference_covariance(data_dir, feature_dim, split)
    return window_match_basis_from_covariance(cov)


def _check_pair(query: np.ndarray, reference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if q.ndim != 2 or r.ndim != 2 or q.shape[0] < 1 or r.shape[0] < 1 or q.shape[1] != r.shape[1]:
        raise ValueError("window-match baseline: needs a non-empty query [Lq, D] and reference [L, D]")
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(r))):
        raise ValueError("window-match baseline: non-finite feature in the valid steps")
    return q, r


def window_match_scores(query: np.ndarray, reference: np.ndarray, basis: Optional[np.ndarray] = None) -> np.ndarray:
    """[L] the per-step scores d_t of the window matcher on one unpadded pair [Lq, D], [L, D]:
    d_t = V^T (r_t - c) . u, c = the reference's mean, u = the unit mean of V^T (q_j - c) over the query
    steps, V = ``basis`` [D, k] (None: every direction); then d - mean(d) (zero up to rounding). All zeros
    where the query has no direction (|mean| <= WINDOW_MATCH_ZERO)."""
    q, r = _check_pair(query, reference)
    centre = r.mean(axis=0)
    direction = q.mean(axis=0) - centre  # the mean of q_j - c (projecting commutes with the mean)
    if basis is not None:
        v = np.asarray(basis, dtype=np.float64)
        if v.ndim != 2 or v.shape[0] != r.shape[1]:
            raise ValueError(f"window-match baseline: basis {v.shape} does not fit features of dim {r.shape[1]}")
        inside = v.T @ direction  # [k]
        norm = float(np.linalg.norm(inside))
        filt = v @ (inside / norm) if norm > WINDOW_MATCH_ZERO else None  # V u: V^T x . u = x . V u
    else:
        norm = float(np.linalg.norm(direction))
        filt = direction / norm if norm > WINDOW_MATCH_ZERO else None
    if filt is None:
        return np.zeros(r.shape[0])
    d = (r - centre) @ filt  # O(L D) per pair: the steps are never projected one by one
    return d - d.mean()


def window_match(query: np.ndarray, reference: np.ndarray, basis: Optional[np.ndarray] = None) -> Tuple[int, int, float]:
    """(start, end, score) of the window matcher on one unpadded pair [Lq, D], [L, D]; ``basis`` [D, k] is
    the subspace that :func:`window_match_basis` estimates from the train split (None: the whole space).

    The rule, each choice with its reason (numbers: average mAP@1 on the *val* pairs of the tuning draw,
    data seed 0, D = 32, default geometry, families demo / substates / periodic / shots / distractor and
    their mean; test numbers were never looked at to choose):

    * Centre on the reference's mean c over its valid steps, subtracted from every reference *and*
      query step: what every clip of the video shares (the common component, the reference's scene)
      is removed, so what is left says what is specific to a moment of it (the query-free control
      centres on the same mean). Centring the query on its own mean would erase its content.
    * Keep only the subspace in which references vary, estimated once from the train split without
      any label: W = the covariance of every train entry's steps about that entry's own mean (the
      same centring), V = its eigenvectors whose eigenvalue is at least the median eigenvalue (half
      the directions, those with the most within-reference variance; parameter-free). Why: the query
      comes from another video, and centring on the reference's mean leaves the query video's own
      scene in it (minus the reference's); a scene is constant within a video, so it adds nothing
      to W, while what happens in a video (actions, other activity) does. Projecting on V drops the
      part of that scene and of the per-step noise that lies outside the directions in which things
      happen. Aimed at substates (scene norm 2 in every direction, action norm 1), where it helps
      little (9.8 -> 10.8: half the scene stays), most on shots (camera set-ups, 21.0 -> 29.6).
      Tried on the same val pairs, all with the matched filter and Kadane below: the whole space
      33.4 (65.2 / 9.8 / 16.8 / 21.0 / 54.2); the eigenvalues above their mean (Kaiser's rule) 35.8
      (64.4 / 10.6 / 17.8 / 32.9 / 53.4); at least the median 36.1 (66.0 / 10.8 / 18.7 / 29.6 /
      55.5), kept; weighting by W^(1/2) 35.1 and by W 35.3 instead of projecting; whitening by W
      30.9; removing the top principal directions of the train entries' means (between-video
      variation, above the median / the mean eigenvalue) 11.3 / 19.1 -- in demo those are the
      action's directions, since each video's mean holds its class's action. With the old score
      (below) instead, the same transforms reached at most 26.3 (weighting by W).
    * Score every reference step by d_t = V^T (r_t - c) . u, u = the unit mean of the query's
      projected centred steps (a matched filter: the projection of the step on the query's mean
      direction). Raw steps, not unit rows: a quiet background step has a small norm and stays
      small (as a unit row it becomes a full-length random direction), and the demo family's
      clip-grid jitter telescopes in a sum of raw steps. With unit query and reference rows: 29.0.
      The best cosine to any single query step (unit rows, minus its mean, same subspace and Kadane
      with Kaiser's rule): 25.1 -- single clips are noisy, demo's are mostly jitter (31.9 there).
    * Predict the contiguous segment [start, end) with the largest sum of d_t - mean(d) (maximum-sum
      subarray, :func:`max_sum_segment`: ties -> the earliest start, then the shortest; if every
      step is <= 0, the single best step). The steps are centred on c, so mean(d) is zero up to
      rounding, and the sum over [s, e) of length k is k (L - k) / L * u . V^T (m_in - m_out), the
      projected difference between the segment's mean and the rest's -- the old rule's contrast of
      "like the query inside, not outside", with no length bracket: the ground truth's length is
      free. The old bracket of lengths floor(Lq/2) .. 2 Lq on the same scores: 32.2.
    * The rule it replaces (cosine of mean unit rows inside minus outside, lengths floor(Lq/2) .. 2 Lq,
      no subspace): 24.6 (47.0 / 4.7 / 8.8 / 16.5 / 45.9); frame-level 11.7 (7.8 / 9.9 / 12.9 / 18.3 /
      9.4); the query-free control 27.3 (34.8 / 30.0 / 41.0 / 7.8 / 23.1). A query with no direction
      (a mean shorter than 1e-9 in V, e.g. a query equal to the reference's mean) scores every step 0,
      so it predicts [0, 1).
    * Cost: the statistic is one pass over the train features per run (O(N D^2): float64 scatter of
      the centred steps), a pair O((L + Lq) D + D k) (the query's mean is projected once; the steps
      only meet V u). At the benchmark's geometry (demo family, 529,489 train steps, 978 test pairs)
      the whole run_baseline took 5.7 s at D = 32 and 25-37 s at D = 500 (frame-level: 5.3 s and
      19-21 s) on a 2-core machine busy with two training jobs.
    """
    d = window_match_scores(query, reference, basis)
    start, end = max_sum_segment(d)
    return start, end, float(np.sum(d[start:end]))


def window_match_segment(query: np.ndarray, reference: np.ndarray,
                         basis: Optional[np.ndarray] = None) -> Tuple[int, int]:
    """The window-match prediction for one pair of unpadded feature arrays [Lq, D], [L, D]."""
    start, end, _ = window_match(query, reference, basis)
    return start, end


def window_match_batch(query: np.ndarray, query_length: np.ndarray, reference: np.ndarray,
                       reference_length: np.ndarray, basis: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Predictions for padded batches [B, Tq, D], [B, T, D] with valid lengths [B] (padding is not read)."""
    pairs = [window_match_segment(query[i, :int(nq)], reference[i, :int(nr)], basis)
             for i, (nq, nr) in enumerate(zip(query_length, reference_length))]
    return np.array([p[0] for p in pairs], np.int64).reshape(-1), np.array([p[1] for p in pairs], np.int64).reshape(-1)


def window_match_segments(index, plan: np.ndarray, feature_dim: int,
                          basis: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The window-match predictions over a pair plan, in plan order."""
    start, end = [], []
    for batch in evaluation_dataset(index, plan, feature_dim, batch_size=64):
        s, e = window_match_batch(batch[QUERY].numpy(), batch[QUERY_LENGTH].numpy(),
                                  batch[REFERENCE].numpy(), batch[REFERENCE_LENGTH].numpy(), basis)
        start.append(s)
        end.append(e)
    if not start:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(start), np.concatenate(end)


def run_baseline(method: str, dataset: Dataset, split: str = "test", pairs_file: Optional[str] = None,
                 seed: int = 0, train_split: str = "train", verbose: bool = True) -> dict:
    """Score one baseline on the fixed pair list of ``dataset`` (opened by the caller); returns the
    result dict (percent)."""
    if method not in METHODS:
        raise InputError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
    data_dir = dataset.path
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
        basis = window_match_basis(data_dir, dataset.feature_dim, train_split)
        if verbose:
            print(f"window matcher: {basis.shape[1]} of {dataset.feature_dim} within-reference directions "
                  f"from {train_split}", file=sys.stderr)
        start, end = window_match_segments(index, plan, dataset.feature_dim, basis)
        extra["subspace_dim"] = int(basis.shape[1])
    else:
        start, end = query_free_segments(index, plan, dataset.feature_dim)
    return score_plan(plan, start, end, METHOD_NAMES[method], split, **extra)
