"""Recall and latency of library search on a split (what `vreloc evaluate-search` runs).

Every entry of the split with a ground truth is a query: its ground-truth clip, searched against
the index (built from the split's videos) less the entries of its own source video. A hit@k: one
of the top k results is a library entry of the query's class whose segment has IoU >= 0.5 with
that entry's ground truth. The same queries go through :func:`vreloc_tf.search.search.exhaustive`
(the model on every library video, no ANN): the reference recall and latency.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from vreloc_tf.errors import InputError
from vreloc_tf.metrics import temporal_iou
from vreloc_tf.search.embedding import Embedder
from vreloc_tf.search.library import LibraryIndex
from vreloc_tf.search.relocalize import Relocalizer
from vreloc_tf.search.search import DEFAULT_CANDIDATES, DEFAULT_RERANK, SPAN_FACTOR, Hit, exhaustive, search

LOG = logging.getLogger(__name__)
IOU_THRESHOLD = 0.5


def load_queries(data_dir: str, split: str):
    """(queries [(video_id, label, features)], truth {(split, entry_index): (label, gt_start, gt_end)})."""
    from vreloc_tf.entry_index import RecordReader, load_index
    from vreloc_tf.schema import decode_record

    entries = load_index(data_dir, split)
    queries, truth = [], {}
    with RecordReader(entries) as reader:
        for row in range(len(entries)):
            g0, g1 = (int(v) for v in entries.groundtruth[row])
            if g0 < 0:
                continue
            truth[(split, int(entries.entry_index[row]))] = (int(entries.label[row]), g0, g1)
            rec = decode_record(reader.read(row))
            queries.append((rec.video_id, rec.label, rec.features[g0:g1]))
    if not queries:
        raise InputError(f"split '{split}' of {data_dir} has no entries with a ground truth: nothing to query")
    return queries, truth


def is_hit(index: LibraryIndex, hit: Hit, label: int, truth: Dict[Tuple[str, int], Tuple[int, int, int]]) -> bool:
    video = index.video(hit.video_number)
    known = truth.get((video.split, video.entry_index))
    if known is None or known[0] != label:
        return False
    s, e = hit.start_index - hit.window_start, hit.end_index - hit.window_start
    return float(temporal_iou(np.array([s]), np.array([e]), np.array([known[1]]), np.array([known[2]]))[0]) >= IOU_THRESHOLD


def _recall(hits: List[List[Hit]], labels, index, truth, k: int) -> float:
    found = [any(is_hit(index, h, lab, truth) for h in hs[:k]) for hs, lab in zip(hits, labels)]
    return float(np.mean(found)) if found else 0.0


def _ms(values) -> Tuple[float, float]:
    a = np.asarray(values, np.float64) * 1000.0
    return round(float(np.percentile(a, 50)), 3), round(float(np.percentile(a, 99)), 3)


def evaluate_search(index: LibraryIndex, relocalizer: Relocalizer, embedder: Embedder, data_dir: str,
                    split: str = "test", candidates: int = DEFAULT_CANDIDATES, rerank: int = DEFAULT_RERANK,
                    max_queries: Optional[int] = None, exhaustive_queries: Optional[int] = None,
                    progress: Optional[Callable[[str], None]] = None, span_factor: float = SPAN_FACTOR) -> dict:
    """The issue's JSON keys (and a few more: the settings and the query counts); see the module docstring.

    ``max_queries``/``exhaustive_queries``: evenly spaced subsets of the queries (None = all) for
    search and for the exhaustive reference; the recall of search on the exhaustive subset is
    reported too (``recall_at_1_on_exhaustive_queries``) so the two compare on the same queries.
    """
    say = progress or LOG.info
    queries, truth = load_queries(data_dir, split)
    if index.live_videos == 0:
        raise InputError(f"the index {index.path} holds no videos; build it from split '{split}' first")
    picked = _subset(len(queries), max_queries)
    ex_picked = _subset(len(queries), exhaustive_queries)
    top = 5
    # warm-up (tracing) off the clock
    search(index, relocalizer, embedder, queries[0][2], top, candidates, rerank, [queries[0][0]], span_factor)
    hits, times = {}, []
    t_all = time.time()
    for n, i in enumerate(picked):
        vid, _, feats = queries[i]
        t0 = time.perf_counter()
        hits[i] = search(index, relocalizer, embedder, feats, top, candidates, rerank, [vid], span_factor)
        times.append(time.perf_counter() - t0)
        if (n + 1) % 100 == 0:
            say(f"evaluate-search: search {n + 1}/{len(picked)} queries ({time.time() - t_all:.0f} s)")
    ex_hits, ex_times = {}, []
    t_all = time.time()
    for n, i in enumerate(ex_picked):
        vid, _, feats = queries[i]
        t0 = time.perf_counter()
        ex_hits[i] = exhaustive(index, relocalizer, feats, top, [vid])
        ex_times.append(time.perf_counter() - t0)
        if (n + 1) % 25 == 0:
            say(f"evaluate-search: exhaustive {n + 1}/{len(ex_picked)} queries ({time.time() - t_all:.0f} s)")
    labels = {i: queries[i][1] for i in range(len(queries))}
    p50, p99 = _ms(times)
    ex_p50, _ = _ms(ex_times)
    common = [i for i in ex_picked if i in hits]
    return {
        "queries": len(picked), "library_videos": index.live_videos, "library_windows": index.live_windows,
        "recall_at_1": round(_recall([hits[i] for i in picked], [labels[i] for i in picked], index, truth, 1), 4),
        "recall_at_5": round(_recall([hits[i] for i in picked], [labels[i] for i in picked], index, truth, 5), 4),
        "exhaustive_recall_at_1": round(_recall([ex_hits[i] for i in ex_picked], [labels[i] for i in ex_picked],
                                                index, truth, 1), 4),
        "exhaustive_recall_at_5": round(_recall([ex_hits[i] for i in ex_picked], [labels[i] for i in ex_picked],
                                                index, truth, 5), 4),
        "p50_ms": p50, "p99_ms": p99, "exhaustive_p50_ms": ex_p50, "index_bytes": index.index_bytes(),
        "exhaustive_queries": len(ex_picked),
        "recall_at_1_on_exhaustive_queries": round(_recall([hits[i] for i in common], [labels[i] for i in common],
                                                           index, truth, 1), 4),
        "split": split, "candidates": candidates, "rerank": rerank, "span_factor": span_factor, "embedding": index.manifest["embedding"],
        "faiss": index.manifest["index"].get("built_type"),
    }


def _subset(n: int, count: Optional[int]) -> List[int]:
    if count is None or count >= n:
        return list(range(n))
    if count < 1:
        raise InputError(f"query count {count}: expected a positive number")
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))
