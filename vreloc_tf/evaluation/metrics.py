"""The benchmark metric: temporal IoU and "mAP@1" (Feng et al. 2018; Huang et al. 2020, Tables 2-4).

Segments are ``[start, end)`` in feature steps, end exclusive, exactly as the split
files store ground truth. IoU = |P ∩ G| / |P ∪ G| with lengths ``end - start`` (as in
Feng et al.'s ``get_iou``). The paper's "mAP@1" is the percentage of query/reference
pairs whose top-1 prediction has IoU strictly above each threshold 0.5 ... 0.9; the
"average" is the mean of those five percentages.

Results travel as plain dicts (the JSON that ``vreloc evaluate`` / ``vreloc baseline``
write) so that :func:`format_table` can put any methods side by side.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence

import numpy as np

from vreloc_tf.errors import InputError

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
THRESHOLD_KEYS = tuple(f"{t:.1f}" for t in THRESHOLDS)


def temporal_iou(pred_start, pred_end, gt_start, gt_end) -> np.ndarray:
    """Element-wise IoU of ``[pred_start, pred_end)`` and ``[gt_start, gt_end)`` (arrays broadcast).

    An empty or inverted prediction (end <= start) has IoU 0.
    """
    ps, pe, gs, ge = (np.asarray(v, dtype=np.float64) for v in (pred_start, pred_end, gt_start, gt_end))
    if np.any(ge <= gs):
        raise ValueError("temporal_iou: ground truth with end <= start (empty segment)")
    pe = np.maximum(pe, ps)  # an inverted prediction is empty
    inter = np.maximum(np.minimum(pe, ge) - np.maximum(ps, gs), 0.0)
    union = (pe - ps) + (ge - gs) - inter
    return inter / union


def map_at_1(ious: Sequence[float]) -> Dict[str, float]:
    """Percentage of pairs with IoU > t for every threshold t, keyed ``"0.5"`` ... ``"0.9"``."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise InputError("map_at_1: no pairs were scored")
    return {k: float(100.0 * np.mean(ious > t)) for k, t in zip(THRESHOLD_KEYS, THRESHOLDS)}


BOOTSTRAP_SAMPLES = 2000  # resamples of the pairs for the 95 % interval


def bootstrap_interval(ious: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       level: float = 0.95) -> Dict[str, List[float]]:
    """95 % percentile-bootstrap interval over pairs of every mAP@1 number and of the average.

    Why: a test split of N pairs moves a number by 100/N points per pair; the interval says
    how much of a difference between two rows the pairs can resolve. Pairs are resampled
    with replacement (``samples`` times, seeded, so the interval is reproducible).
    Returns ``{"0.5": [lo, hi], ..., "average": [lo, hi]}`` in percent.
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise InputError("bootstrap_interval: no pairs were scored")
    rng = np.random.default_rng(seed)
    hits = ious[None, :] > np.asarray(THRESHOLDS)[:, None]  # [T, N]
    picks = rng.integers(0, ious.size, size=(samples, ious.size))
    rates = 100.0 * hits[:, picks].mean(axis=2)  # [T, samples]
    tail = 100.0 * (1.0 - level) / 2.0
    out = {}
    for key, row in zip(THRESHOLD_KEYS, rates):
        out[key] = [float(np.percentile(row, tail)), float(np.percentile(row, 100.0 - tail))]
    average = rates.mean(axis=0)
    out["average"] = [float(np.percentile(average, tail)), float(np.percentile(average, 100.0 - tail))]
    return out


def result_dict(method: str, split: str, ious: Sequence[float], **extra) -> dict:
    """The result JSON: ``{"method", "split", "pairs", "map_at_1": {...}, "average", "ci95": {...},
    "ious": [...]}`` (percent; ``ci95`` from :func:`bootstrap_interval`; ``ious`` per pair, in pair
    order, so results of several seeds can be bootstrapped jointly)."""
    scores = map_at_1(ious)
    out = {
        "method": method,
        "split": split,
        "pairs": int(len(ious)),
        "map_at_1": scores,
        "average": float(np.mean([scores[k] for k in THRESHOLD_KEYS])),
        "ci95": bootstrap_interval(ious),
        "ious": [round(float(v), 5) for v in np.asarray(ious, dtype=np.float64)],
    }
    out.update(extra)
    return out


def score_predictions(pred_start, pred_end, gt_start, gt_end, method: str, split: str, **extra) -> dict:
    """IoU of every pair, then :func:`result_dict`."""
    return result_dict(method, split, temporal_iou(pred_start, pred_end, gt_start, gt_end), **extra)


CELL, CI_CELL = 7, 14  # column widths without and with 95 % intervals


def _header(name_width: int, cell: int = CELL) -> str:
    cols = "".join(f"{t:>{cell}}" for t in THRESHOLD_KEYS)
    return f"{'mAP@1':<{name_width}}{cols}{'Avg.':>{cell}}"


def format_row(result: dict, name_width: int = 0, cell: int = CELL) -> str:
    """One table row in the paper's format: percentages with one decimal.

    With ``cell >= CI_CELL`` and a ``ci95`` in the result, a second line gives the 95 %
    bootstrap interval under every number.
    """
    name = result.get("method", "?")
    width = max(name_width, len(name) + 2)
    keys = THRESHOLD_KEYS + ("average",)
    values = [result["map_at_1"][k] for k in THRESHOLD_KEYS] + [result["average"]]
    line = f"{name:<{width}}" + "".join(f"{v:>{cell}.1f}" for v in values)
    ci = result.get("ci95")
    if cell >= CI_CELL and ci:
        line += "\n" + f"{'  95% CI':<{width}}" + "".join(
            f"{'[%.1f, %.1f]' % tuple(ci[k]):>{cell}}" for k in keys)
    return line


def format_table(results: Iterable[dict], title: str = "") -> str:
    """Several methods as one table, like the paper's Tables 2 and 4.

    Results scored on different splits or pair counts are flagged under the table
    (they are not comparable row by row).
    """
    results = list(results)
    if not results:
        raise ValueError("format_table: no results")
    for r in results:
        missing = [k for k in ("method", "map_at_1", "average") if k not in r]
        if missing:
            raise ValueError(f"format_table: result {r.get('method', r)!r} lacks {missing}")
    width = max(len(r["method"]) for r in results) + 2
    width = max(width, 8)
    lines: List[str] = []
    if title:
        lines.append(title)
    cell = CI_CELL if any(r.get("ci95") for r in results) else CELL
    lines.append(_header(width, cell))
    lines.extend(format_row(r, width, cell) for r in results)
    where = sorted({(r.get("split"), r.get("pairs")) for r in results}, key=str)
    if len(where) == 1:
        split, pairs = where[0]
        lines.append(f"({pairs} pairs, split {split})")
    else:
        lines.append("WARNING: rows scored on different splits/pair counts: "
                     + ", ".join(f"{r['method']}={r.get('split')}/{r.get('pairs')}" for r in results))
    return "\n".join(lines)
