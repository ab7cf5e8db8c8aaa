"""Recall and latency of library search on a split (what `vreloc evaluate-search` runs).

Every entry of the split with a ground truth is a query: its ground-truth clip, searched against
the index (built from the split's videos) less its own source video. A hit@k: one of the top k
results is a segment of a video that holds an instance of the query's class (an entry of the
split) with IoU >= 0.5, both in the source video's feature steps (a library video is one item
whatever number of entries it has). The same queries go through
:func:`vreloc_tf.search.search.exhaustive` (the re-localizer on every library piece, no ANN): the
reference recall and latency. The re-localizer is whatever :func:`vreloc_tf.search.search.open_search`
gives: a model, or the frame-level method for an index built without one (``relocalizer`` in the result).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.data.entry_index import RecordReader, load_index
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.metrics import temporal_iou
from vreloc_tf.data.schema import decode_record
from vreloc_tf.search.embedding import Embedder
from vreloc_tf.search.library import LibraryIndex
from vreloc_tf.search.search import DEFAULT_CANDIDATES, DEFAULT_RERANK, SPAN_FACTOR, Hit, exhaustive, search

LOG = logging.getLogger(__name__)
IOU_THRESHOLD = 0.5


def load_queries(dataset: Dataset, split: str):
    """(queries [(video_id, label, features)], truth {video_id: [(label, start, end), ...]}), the truth's
    segments in the source video's feature steps."""
    entries = load_index(dataset.path, split)
    queries, truth = [], {}
    with RecordReader(entries) as reader:
        for row in range(len(entries)):
            g0, g1 = (int(v) for v in entries.groundtruth[row])
            if g0 < 0:
                continue
            rec = decode_record(reader.read(row))
            w0 = int(rec.window[0])
            truth.setdefault(rec.video_id, []).append((int(rec.label), w0 + g0, w0 + g1))
            queries.append((rec.video_id, rec.label, rec.features[g0:g1]))
    if not queries:
        raise InputError(f"split '{split}' of {dataset.path} has no entries with a ground truth: nothing to query")
    return queries, truth


def is_hit(hit: Hit, label: int, truth: Dict[str, List[Tuple[int, int, int]]]) -> bool:
    """Whether ``hit`` covers an instance of class ``label`` in its video with IoU >= IOU_THRESHOLD."""
    known = [(s, e) for lab, s, e in truth.get(hit.video_id, ()) if lab == label]
    if not known:
        return False
    gs, ge = np.array(known, np.int64).T
    iou = temporal_iou(np.full(len(gs), hit.start_index), np.full(len(gs), hit.end_index), gs, ge)
    return float(np.max(iou)) >= IOU_THRESHOLD


def _recall(hits: List[List[Hit]], labels, truth, k: int) -> float:
    found = [any(is_hit(h, lab, truth) for h in hs[:k]) for hs, lab in zip(hits, labels)]
    return float(np.mean(found)) if found else 0.0


def _ms(values) -> Tuple[float, float]:
    a = np.asarray(values, np.float64) * 1000.0
    return round(float(np.percentile(a, 50)), 3), round(float(np.percentile(a, 99)), 3)


def evaluate_search(index: LibraryIndex, relocalizer, embedder: Embedder, dataset: Dataset,
                    split: str = "test", candidates: int = DEFAULT_CANDIDATES, rerank: int = DEFAULT_RERANK,
                    max_queries: Optional[int] = None, exhaustive_queries: Optional[int] = None,
                    progress: Optional[Callable[[str], None]] = None, span_factor: float = SPAN_FACTOR) -> dict:
    """The issue's JSON keys (and a few more: the settings and the query counts); see the module docstring.

    ``max_queries``/``exhaustive_queries``: evenly spaced subsets of the queries (None = all) for
    search and for the exhaustive reference; the recall of search on the exhaustive subset is
    reported too (``recall_at_1_on_exhaustive_queries``) so the two compare on the same queries.
    """
    say = progress or LOG.info
    queries, truth = load_queries(dataset, split)
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
        "queries": len(picked), "library_videos": index.live_videos, "library_pieces": index.live_pieces,
        "library_windows": index.live_windows, "relocalizer": relocalizer.info.get("method", "model"),
        "recall_at_1": round(_recall([hits[i] for i in picked], [labels[i] for i in picked], truth, 1), 4),
        "recall_at_5": round(_recall([hits[i] for i in picked], [labels[i] for i in picked], truth, 5), 4),
        "exhaustive_recall_at_1": round(_recall([ex_hits[i] for i in ex_picked], [labels[i] for i in ex_picked],
                                                truth, 1), 4),
        "exhaustive_recall_at_5": round(_recall([ex_hits[i] for i in ex_picked], [labels[i] for i in ex_picked],
                                                truth, 5), 4),
        "p50_ms": p50, "p99_ms": p99, "exhaustive_p50_ms": ex_p50, "index_bytes": index.index_bytes(),
        "exhaustive_queries": len(ex_picked),
        "recall_at_1_on_exhaustive_queries": round(_recall([hits[i] for i in common], [labels[i] for i in common],
                                                           truth, 1), 4),
        "split": split, "candidates": candidates, "rerank": rerank, "span_factor": span_factor, "embedding": index.manifest["embedding"],
        "faiss": index.manifest["index"].get("built_type"),
    }


def _subset(n: int, count: Optional[int]) -> List[int]:
    if count is None or count >= n:
        return list(range(n))
    if count < 1:
        raise InputError(f"query count {count}: expected a positive number")
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))
