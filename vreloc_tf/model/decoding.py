"""Decoding rules: from per-step probabilities to one segment [start, end) per example.

Three rules (the paper's two, "Inference", and Feng et al.'s), each in ``keras.ops`` (compiles
into an exported graph; no Python loop over data-dependent sizes) and as a NumPy twin with the
same signature:

* **full** (Eq. 20): (s, e) = argmax p1_s * p2_e * (prod_{i=s..e} p3_i)^(1/(e-s+1)) over
  s <= e < length with e - s + 1 <= max_length (None = no limit). Computed in log space
  from a cumulative sum of log p3, over an [Lr, W] grid of (start, offset) pairs:
  O(Lr * W), W = min(max_length, Lr). Ties go to the earliest start, then the earliest end.
  score = the Eq. 20 value of the chosen segment.
* **weak**: threshold = mean of p3 over the valid steps; the longest run of consecutive
  valid steps with p3 strictly above it; ties go to the earliest run. With a
  ``max_length``, a longer run counts as (and is cut to) its first ``max_length`` steps,
  so every run longer than the limit ties and the earliest wins. score = mean p3 inside
  the segment. If no step is strictly above the mean (p3 constant), the whole valid
  reference is returned.
* **feng**: the decoding loop of Feng et al.'s code (video_reloc, match.py ``map_body``, which
  its comment calls their Eq. 11, the same formula as Eq. 20). It differs from Eq. 20 in two
  ways: for e > s the geometric mean of p3 runs over [s, e - 1], the END STEP LEFT OUT (for
  e = s it is p3_s); and ties go to the SHORTEST segment, then the earliest start (the loop
  keeps the first maximum over starts for each length, then the first maximum over lengths).
  The same limit (e - s + 1 <= max_length, 64 in the code). score = exp of the chosen log
  score. (Feng takes log_softmax of the logits, i.e. the log of these probabilities.)

Every function returns (start int32 [B], end int32 [B] EXCLUSIVE, score float32 [B]);
end = e + 1 for Eq. 20's inclusive e. An example of length 0 gives (0, 0, 0.0).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from keras import ops

from vreloc_tf.contract import DECODE_RULES as MODES, FULL_DECODE_MAX_LENGTH

_LOG_FLOOR = 1e-30  # probabilities are clipped here before the log, so a 0 never gives NaN
_NEG = -1e300  # score of an impossible (s, e) in float64


def _check_max_length(max_length: Optional[int], where: str) -> Optional[int]:
    if max_length is None:
        return None
    if isinstance(max_length, bool) or int(max_length) != max_length or int(max_length) < 1:
        raise ValueError(f"{where}: max_length must be a positive int or None, got {max_length!r}")
    return int(max_length)


def _check_probabilities(probabilities, where: str) -> None:
    shape = getattr(probabilities, "shape", None)
    if shape is None or len(shape) != 3 or shape[-1] not in (None, 4):
        raise ValueError(f"{where}: probabilities must be [B, Lr, 4] (start, end, action, background), "
                         f"got shape {shape}")


# ---------------------------------------------------------------------------
# keras.ops versions
# ---------------------------------------------------------------------------

def _log_terms(probabilities, reference_length, max_length, name):
    """What both keras.ops decoders start from: the checked inputs in float64, Lr, the segment-length
    limit W, log p1, p2 and p3 per step, and the prefix sums c[b, i] = sum_{j < i} log p3[b, j], i = 0..Lr."""
    max_length = _check_max_length(max_length, name)
    probabilities = ops.convert_to_tensor(probabilities)
    _check_probabilities(probabilities, name)
    p = ops.cast(probabilities, "float64")
    lengths = ops.cast(reference_length, "int32")
    steps = ops.shape(p)[1]
    static_steps = p.shape[1]
    if max_length is None:
        width = steps
    elif static_steps is not None:
        width = min(max_length, int(static_steps))
    else:
        width = max_length
    logp = ops.log(ops.maximum(p, _LOG_FLOOR))
    log_start, log_end, log_action = logp[:, :, 0], logp[:, :, 1], logp[:, :, 2]
    cum = ops.concatenate([ops.zeros_like(log_action[:, :1]), ops.cumsum(log_action, axis=1)], axis=1)
    return p, lengths, steps, width, log_start, log_end, log_action, cum


def decode_full(probabilities, reference_length, max_length: Optional[int] = FULL_DECODE_MAX_LENGTH):
    """Eq. 20 decoding in keras.ops; see the module docstring."""
    p, lengths, steps, width, log_start, log_end, log_action, cum = _log_terms(
        probabilities, reference_length, max_length, "decode_full")

    start_idx = ops.arange(steps, dtype="int32")[:, None]  # [Lr, 1]
    offset = ops.arange(width, dtype="int32")[None, :]  # [1, W]
    end_idx = start_idx + offset  # inclusive e, [Lr, W]
    end_clipped = ops.minimum(end_idx, steps - 1)
    flat_start = ops.reshape(ops.broadcast_to(start_idx, ops.shape(end_idx)), (-1,))
    flat_end = ops.reshape(end_clipped, (-1,))

    sum_action = ops.take(cum, flat_end + 1, axis=1) - ops.take(cum, flat_start, axis=1)  # [B, Lr*W]
    seg_len = ops.cast(ops.reshape(ops.broadcast_to(offset + 1, ops.shape(end_idx)), (-1,)), "float64")
    score = ops.take(log_start, flat_start, axis=1) + ops.take(log_end, flat_end, axis=1) + sum_action / seg_len
    valid = ops.less(ops.reshape(end_idx, (1, -1)), lengths[:, None])  # e < length (hence s < length)
    score = ops.where(valid, score, _NEG)

    best = ops.cast(ops.argmax(score, axis=1), "int32")  # first maximum: earliest s, then earliest e
    best_score = ops.max(score, axis=1)
    start = best // width
    end = start + best % width + 1
    has_any = ops.greater(lengths, 0)
    start = ops.where(has_any, start, 0)
    end = ops.where(has_any, end, 0)
    out_score = ops.where(has_any, ops.exp(best_score), 0.0)
    return ops.cast(start, "int32"), ops.cast(end, "int32"), ops.cast(out_score, "float32")


def _cumulative_max(values, static_steps):
    """Running maximum along axis 1 of a non-negative int [B, L] tensor (Hillis-Steele doubling).

    Why not ``ops.associative_scan``: it does not compile under XLA (jit_compile training).
    ceil(log2 L) roll-and-max rounds when L is static, else 31 (enough for any int32 L);
    each round is O(B * L).
    """
    steps = ops.shape(values)[1]
    positions = ops.arange(steps, dtype="int32")[None, :]
    rounds = 31 if static_steps is None else max(1, int(static_steps - 1).bit_length())
    for r in range(rounds):
        shift = 1 << r
        shifted = ops.where(positions >= shift, ops.roll(values, shift, axis=1), 0)
        values = ops.maximum(values, shifted)
    return values


def weak_segment(probabilities, reference_length, max_length: Optional[int] = None):
    """(start, end) of the weak rule as int32 tensors — also the action mask of the co-attention loss."""
    max_length = _check_max_length(max_length, "decode_weak")
    probabilities = ops.convert_to_tensor(probabilities)
    _check_probabilities(probabilities, "decode_weak")
    p3 = ops.cast(probabilities[:, :, 2], "float64")
    lengths = ops.cast(reference_length, "int32")
    steps = ops.shape(p3)[1]
    positions = ops.arange(steps, dtype="int32")[None, :]
    valid = ops.less(positions, lengths[:, None])
    count = ops.cast(ops.maximum(lengths, 1), "float64")
    threshold = ops.sum(ops.where(valid, p3, 0.0), axis=1) / count
    above = ops.logical_and(valid, ops.greater(p3, threshold[:, None]))
    # Run length ending at i = i - (index of the last step <= i that is not above).
    ones_based = positions + 1
    last_break = _cumulative_max(ops.where(above, 0, ones_based), p3.shape[1])
    run = ops.where(above, ones_based - last_break, 0)
    if max_length is not None:
        run = ops.minimum(run, max_length)
    last = ops.cast(ops.argmax(run, axis=1), "int32")  # first maximum = earliest run
    best = ops.max(run, axis=1)
    found = ops.greater(best, 0)
    start = ops.where(found, last - best + 1, 0)
    end = ops.where(found, last + 1, lengths)
    return ops.cast(start, "int32"), ops.cast(end, "int32")


def decode_weak(probabilities, reference_length, max_length: Optional[int] = None):
    """Weak decoding (threshold at mean p3, longest run above it) in keras.ops; see the module docstring."""
    start, end = weak_segment(probabilities, reference_length, max_length)
    p3 = ops.cast(probabilities[:, :, 2], "float64")
    positions = ops.arange(ops.shape(p3)[1], dtype="int32")[None, :]
    inside_mask = ops.logical_and(ops.greater_equal(positions, start[:, None]), ops.less(positions, end[:, None]))
    inside = ops.sum(ops.where(inside_mask, p3, 0.0), axis=1)
    size = end - start
    score = ops.where(ops.greater(size, 0), inside / ops.cast(ops.maximum(size, 1), "float64"), 0.0)
    return start, end, ops.cast(score, "float32")


def decode_feng(probabilities, reference_length, max_length: Optional[int] = FULL_DECODE_MAX_LENGTH):
    """Feng et al.'s decoding loop in keras.ops; see the module docstring.

    Scores every (s, offset) pair on an [W, Lr] grid, offset-major, so that the first maximum
    of the flattened grid is the shortest segment and then the earliest start, as in the loop.
    """
    p, lengths, steps, width, log_start, log_end, log_action, cum = _log_terms(
        probabilities, reference_length, max_length, "decode_feng")

    offset = ops.arange(width, dtype="int32")[:, None]  # [W, 1]
    start_idx = ops.arange(steps, dtype="int32")[None, :]  # [1, Lr]
    end_idx = start_idx + offset  # inclusive e, [W, Lr]
    flat_start = ops.reshape(ops.broadcast_to(start_idx, ops.shape(end_idx)), (-1,))
    flat_end = ops.reshape(ops.minimum(end_idx, steps - 1), (-1,))
    flat_offset = ops.reshape(ops.broadcast_to(offset, ops.shape(end_idx)), (-1,))
    # mean of log p3 over [s, e - 1] for e > s (c[e] - c[s] over e - s steps); log p3_s for e = s
    before_end = (ops.take(cum, flat_end, axis=1) - ops.take(cum, flat_start, axis=1)) / ops.cast(
        ops.maximum(flat_offset, 1), "float64")
    inside = ops.where(ops.equal(flat_offset, 0)[None, :], ops.take(log_action, flat_start, axis=1), before_end)
    score = ops.take(log_start, flat_start, axis=1) + ops.take(log_end, flat_end, axis=1) + inside
    valid = ops.less(ops.reshape(end_idx, (1, -1)), lengths[:, None])
    score = ops.where(valid, score, _NEG)

    best = ops.cast(ops.argmax(score, axis=1), "int32")  # first maximum: shortest, then earliest start
    best_score = ops.max(score, axis=1)
    start = best % steps
    end = start + best // steps + 1
    has_any = ops.greater(lengths, 0)
    start = ops.where(has_any, start, 0)
    end = ops.where(has_any, end, 0)
    out_score = ops.where(has_any, ops.exp(best_score), 0.0)
    return ops.cast(start, "int32"), ops.cast(end, "int32"), ops.cast(out_score, "float32")


def decode(probabilities, reference_length, mode: str, max_length: Optional[int]):
    """Decode with a rule ('full' | 'weak' | 'feng'), in keras.ops."""
    return decoder(mode)(probabilities, reference_length, max_length)


# ---------------------------------------------------------------------------
# NumPy twins (same rules, same signatures, plain arrays in and out)
# ---------------------------------------------------------------------------

def _np_inputs(probabilities, reference_length, where):
    p = np.asarray(probabilities, dtype=np.float64)
    lengths = np.asarray(reference_length).astype(np.int64).reshape(-1)
    if p.ndim != 3 or p.shape[-1] != 4:
        raise ValueError(f"{where}: probabilities must be [B, Lr, 4], got shape {p.shape}")
    if lengths.shape[0] != p.shape[0]:
        raise ValueError(f"{where}: reference_length has {lengths.shape[0]} entries for a batch of {p.shape[0]}")
    if np.any(lengths < 0) or np.any(lengths > p.shape[1]):
        raise ValueError(f"{where}: reference_length must lie in [0, {p.shape[1]}], got {lengths.tolist()}")
    return p, lengths


def _np_log_terms(probabilities, reference_length, max_length, name):
    """What both NumPy twins start from (as :func:`_log_terms`): checked inputs, B, Lr, W, log p, prefix sums."""
    max_length = _check_max_length(max_length, name)
    p, lengths = _np_inputs(probabilities, reference_length, name)
    batch, steps = p.shape[:2]
    width = steps if max_length is None else min(max_length, steps)
    logp = np.log(np.maximum(p, _LOG_FLOOR))
    cum = np.concatenate([np.zeros((batch, 1)), np.cumsum(logp[:, :, 2], axis=1)], axis=1)
    return p, lengths, batch, steps, width, logp, cum


def decode_full_np(probabilities, reference_length, max_length: Optional[int] = FULL_DECODE_MAX_LENGTH):
    """NumPy twin of :func:`decode_full`."""
    p, lengths, batch, steps, width, logp, cum = _np_log_terms(probabilities, reference_length, max_length,
                                                               "decode_full_np")
    s = np.arange(steps)[:, None]
    e = s + np.arange(width)[None, :]
    ec = np.minimum(e, steps - 1)
    score = (logp[:, s, 0] + logp[:, ec, 1] + (cum[:, ec + 1] - cum[:, s]) / (e - s + 1)).reshape(batch, -1)
    score = np.where(e.reshape(1, -1) < lengths[:, None], score, _NEG)
    best = score.argmax(axis=1)
    start, end = best // width, best // width + best % width + 1
    out = np.exp(score[np.arange(batch), best])
    empty = lengths == 0
    start[empty], end[empty], out[empty] = 0, 0, 0.0
    return start.astype(np.int32), end.astype(np.int32), out.astype(np.float32)


def decode_weak_np(probabilities, reference_length, max_length: Optional[int] = None):
    """NumPy twin of :func:`decode_weak`."""
    max_length = _check_max_length(max_length, "decode_weak_np")
    p, lengths = _np_inputs(probabilities, reference_length, "decode_weak_np")
    batch, steps = p.shape[:2]
    p3 = p[:, :, 2]
    valid = np.arange(steps)[None, :] < lengths[:, None]
    threshold = np.where(valid, p3, 0.0).sum(axis=1) / np.maximum(lengths, 1)
    above = valid & (p3 > threshold[:, None])
    positions = np.arange(1, steps + 1)[None, :]
    last_break = np.maximum.accumulate(np.where(above, 0, positions), axis=1)
    run = np.where(above, positions - last_break, 0)
    if max_length is not None:
        run = np.minimum(run, max_length)
    last = run.argmax(axis=1)
    best = run.max(axis=1)
    found = best > 0
    start = np.where(found, last - best + 1, 0)
    end = np.where(found, last + 1, lengths)
    cum = np.concatenate([np.zeros((batch, 1)), np.cumsum(p3, axis=1)], axis=1)
    size = end - start
    inside = cum[np.arange(batch), end] - cum[np.arange(batch), start]
    score = np.where(size > 0, inside / np.maximum(size, 1), 0.0)
    return start.astype(np.int32), end.astype(np.int32), score.astype(np.float32)


def decode_feng_np(probabilities, reference_length, max_length: Optional[int] = FULL_DECODE_MAX_LENGTH):
    """NumPy twin of :func:`decode_feng`."""
    p, lengths, batch, steps, width, logp, cum = _np_log_terms(probabilities, reference_length, max_length,
                                                               "decode_feng_np")
    offset = np.arange(width)[:, None]
    s = np.arange(steps)[None, :]
    e = s + offset
    ec = np.minimum(e, steps - 1)
    ss = np.broadcast_to(s, e.shape)
    before_end = (cum[:, ec] - cum[:, ss]) / np.maximum(offset, 1)
    inside = np.where(offset == 0, logp[:, ss, 2], before_end)
    score = (logp[:, ss, 0] + logp[:, ec, 1] + inside).reshape(batch, -1)
    score = np.where(e.reshape(1, -1) < lengths[:, None], score, _NEG)
    best = score.argmax(axis=1)
    start, end = best % steps, best % steps + best // steps + 1
    out = np.exp(score[np.arange(batch), best])
    empty = lengths == 0
    start[empty], end[empty], out[empty] = 0, 0, 0.0
    return start.astype(np.int32), end.astype(np.int32), out.astype(np.float32)


def decoder(mode: str, numpy: bool = False) -> Callable:
    """A decoding rule: full -> Eq. 20, weak -> the threshold rule, feng -> Feng et al.'s loop.

    The one place where a rule name picks its decoder (evaluation, export, locate, figures).
    ``numpy=True`` gives the NumPy twin, for host-side scoring of model outputs.
    """
    rules = {"full": (decode_full, decode_full_np), "weak": (decode_weak, decode_weak_np),
             "feng": (decode_feng, decode_feng_np)}
    if mode not in rules:
        raise ValueError(f"decode: mode must be one of {MODES}, got {mode!r}")
    return rules[mode][1 if numpy else 0]
