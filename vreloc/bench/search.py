"""Search at library sizes of 1k / 10k / 100k generated videos: latency, memory, growth exponent.

Why generated features: the figures are about the index and the re-ranking, not about what the
features show; random 100-300-step videos give the same window counts and FAISS work as real ones.
The model is a freshly built (untrained) one of the given config: its cost does not depend on its
weights. Latency = one whole search (query vector, ANN, re-localization in ``rerank`` spans); the
ANN step is timed on its own too, since it is the only part that grows with the library.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Sequence

import numpy as np

from vreloc_tf.search.embedding import Embedder, EmbeddingSpec
from vreloc_tf.search.library import LibraryIndex, VideoEmbedding
from vreloc_tf.search.search import DEFAULT_CANDIDATES, search

SIZES = (1_000, 10_000, 100_000)
QUICK_SIZES = (300, 1_000, 3_000)
BATCH = 10_000  # videos per appended part


def generate_library(path: str, videos: int, dim: int, spec: EmbeddingSpec, seed: int = 0) -> LibraryIndex:
    """An index of ``videos`` random videos of 100-300 steps, appended in parts of BATCH."""
    rng = np.random.default_rng(seed)
    index = LibraryIndex.create(path, dim, spec, dim, {"run": None, "generated": True}, overwrite=True,
                                relocalizer="model")
    embedder = Embedder(spec, dim)
    for b0 in range(0, videos, BATCH):
        batch = []
        for i in range(b0, min(videos, b0 + BATCH)):
            feats = rng.standard_normal((int(rng.integers(100, 301)), dim), dtype=np.float32)
            spans, vectors = embedder.windows(feats)
            batch.append(VideoEmbedding(f"gen{i:07d}", "test", i, int(i % 200), 0, feats, spans, vectors))
        index.append(batch)
    return index


def _percentiles(seconds) -> Dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def growth_exponent(sizes: Sequence[int], values: Sequence[float]) -> float:
    """Slope of log(value) over log(size): 1 = linear, 0 = constant."""
    return round(float(np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(values, float)), 1)[0]), 3)


def search_at_sizes(root: str, relocalizer, dim: int, sizes: Sequence[int] = SIZES, queries: int = 50,
                    spec: EmbeddingSpec = EmbeddingSpec(), seed: int = 0) -> dict:
    """Per size: build seconds, index bytes, RSS, search and ANN p50/p99; growth exponents."""
    import psutil

    rng = np.random.default_rng(seed + 1)
    qs = [rng.standard_normal((int(rng.integers(8, 64)), dim), dtype=np.float32) for _ in range(queries)]
    embedder = Embedder(spec, dim)
    out = {}
    proc = psutil.Process()
    for n in sizes:
        path = os.path.join(root, f"library-{n}")
        t0 = time.perf_counter()
        generate_library(path, n, dim, spec, seed)
        build_s = time.perf_counter() - t0
        index = LibraryIndex.open(path)
        search(index, relocalizer, embedder, qs[0])  # warm-up (tracing)
        total, ann = [], []
        for q in qs:
            t0 = time.perf_counter()
            search(index, relocalizer, embedder, q)
            total.append(time.perf_counter() - t0)
            v = embedder.query(q)
            t0 = time.perf_counter()
            index.nearest_windows(v, DEFAULT_CANDIDATES)
            ann.append(time.perf_counter() - t0)
        out[str(n)] = {"videos": n, "windows": index.live_windows, "faiss": index.manifest["index"]["built_type"],
                       "build_seconds": round(build_s, 1), "index_bytes": index.index_bytes(),
                       "faiss_bytes": index.manifest["index"]["bytes"],  # held in memory; the parts stay memmapped on disk
                       "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                       "search": _percentiles(total), "ann": _percentiles(ann)}
        del index
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    ns = [out[str(n)]["videos"] for n in sizes]
    return {"sizes": out,
            "latency_growth_exponent": growth_exponent(ns, [out[str(n)]["search"]["p50_ms"] for n in sizes]),
            "ann_growth_exponent": growth_exponent(ns, [out[str(n)]["ann"]["p50_ms"] for n in sizes]),
            "queries": queries, "dim": dim, "embedding": spec.to_json()}
