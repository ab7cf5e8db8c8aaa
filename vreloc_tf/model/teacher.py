"""The label-free teacher of weak supervision ("ours"): a pseudo segment for every training pair.

Why a teacher instead of the paper's co-attention loss (docs/QUALITY.md measures both; docs/QUALITY_HISTORY.md has the studies that chose it):
the co-attention loss compares *raw* feature means, which a per-video scene dominates, and
its minimum over segments is a sliver of the action (nothing rewards covering it), so a
model trained on it drifts towards short segments and start/end probabilities that nothing
trains. The teacher instead names one segment per pair, and the model is trained on it
with the same weighted cross-entropy (Eq. 19) as full supervision: all four outputs are
trained, the target cannot shrink as training goes on, and it reads no reference labels.

The teacher sees what training has and inference does not: the query's whole source
window (the query is a trimmed clip of a query-part entry). Per pair:

1. centre the query clip by the mean of its source window and the reference by its own
   mean, so each video's constant component (scene, a component shared by all clips)
   cancels;
2. a_i = tau * log mean_j exp(cos(r_i, q_j) / tau): how well reference step i matches
   *some* frame of the query (a soft maximum over the query frames, tau = 0.2);
3. the segment of at most ``max_length`` steps maximising sum_{i in segment} (a_i - t),
   t = mean(a) + ``threshold_std`` * std(a) (a maximum-sum run: free length, no prior
   from the query's length). Ties go to the earliest start, then the shortest.

:func:`teacher_segment_tf` runs inside the tf.data pipeline; :func:`teacher_segment_np`
is its NumPy twin (tests check they agree).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from vreloc_tf.contract import FULL_DECODE_MAX_LENGTH


def _scores_np(query_window, query_start, query_end, reference, temperature):
    query_window = np.asarray(query_window, np.float64)
    reference = np.asarray(reference, np.float64)
    q = query_window[query_start:query_end] - query_window.mean(axis=0)
    r = reference - reference.mean(axis=0)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    cosine = r @ q.T / temperature  # [L, Lq]
    top = cosine.max(axis=1, keepdims=True)
    return temperature * (top[:, 0] + np.log(np.exp(cosine - top).mean(axis=1)))


def teacher_segment_np(query_window, query_start: int, query_end: int, reference, temperature: float = 0.2,
                       threshold_std: float = 0.5,
                       max_length: Optional[int] = FULL_DECODE_MAX_LENGTH) -> Tuple[int, int]:
    """[start, end) of the teacher's segment in ``reference`` (NumPy; see the module docstring)."""
    a = _scores_np(query_window, query_start, query_end, reference, temperature)
    x = a - (a.mean() + threshold_std * a.std())
    n = x.shape[0]
    width = n if max_length is None else min(int(max_length), n)
    c = np.concatenate([[0.0], np.cumsum(x)])
    starts = np.arange(n)[:, None]
    ends = starts + np.arange(1, width + 1)[None, :]
    score = np.where(ends <= n, c[np.minimum(ends, n)] - c[starts], -np.inf)
    best = int(np.argmax(score.reshape(-1)))
    start = best // width
    return start, start + best % width + 1


def teacher_segment_tf(query_window, query_start, query_end, reference, temperature: float = 0.2,
                       threshold_std: float = 0.5, max_length: Optional[int] = FULL_DECODE_MAX_LENGTH):
    """int32 [2] = [start, end) of the teacher's segment (TF ops, one unbatched pair, for tf.data)."""
    import tensorflow as tf

    q = query_window[query_start:query_end] - tf.reduce_mean(query_window, axis=0, keepdims=True)
    r = reference - tf.reduce_mean(reference, axis=0, keepdims=True)
    q = tf.math.l2_normalize(q, axis=1, epsilon=1e-24)
    r = tf.math.l2_normalize(r, axis=1, epsilon=1e-24)
    cosine = tf.matmul(r, q, transpose_b=True) / temperature  # [L, Lq]
    count = tf.cast(tf.shape(cosine)[1], cosine.dtype)
    a = temperature * (tf.reduce_logsumexp(cosine, axis=1) - tf.math.log(count))
    mean, variance = tf.nn.moments(a, axes=[0])
    x = a - (mean + threshold_std * tf.sqrt(variance))
    n = tf.shape(x)[0]
    width = n if max_length is None else tf.minimum(int(max_length), n)
    c = tf.concat([tf.zeros([1], x.dtype), tf.cumsum(x)], axis=0)
    starts = tf.range(n)[:, None]
    ends = starts + tf.range(1, width + 1)[None, :]
    score = tf.gather(c, tf.minimum(ends, n)) - tf.gather(c, starts)
    score = tf.where(ends <= n, score, tf.constant(-np.inf, x.dtype))
    best = tf.argmax(tf.reshape(score, [-1]), output_type=tf.int32)
    start = best // width
    return tf.stack([start, start + best % width + 1])
