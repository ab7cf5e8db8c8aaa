"""Search a library for a query: ANN over window vectors proposes, a re-localizer re-localizes and ranks.

1. The query's vector (vreloc_tf.search.embedding) meets every window of the library in the FAISS
   index; the ``candidates`` nearest windows are grouped by video id (each video keeps its best
   window, whichever of its pieces it lies in).
2. For the best ``rerank`` videos, the re-localizer runs on the candidate window's surrounding span
   of its piece: ``span_factor`` query lengths (at least ``MIN_SPAN``, at most the re-localizer's
   ``max_window``) centred on the window, cut to the piece. Why not always ``max_window``: the
   model's LSTMs run step by step, so a span's cost grows with its length, not with the batch.
3. Results are ranked by the re-localizer's score, best first, one per video.

The re-localizer (vreloc_tf.search.relocalize) is the trained model of a run (score: the decoded
segment's Eq.-20 value) or, for an index built without a model, the training-free frame-level
method (score: the segment's mean cosine similarity to the query); :func:`open_search` picks it.

:func:`exhaustive` is the reference without ANN: the re-localizer on every live piece (cut into
``max_window`` spans overlapping by half), ranked the same way (one result per video).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from vreloc_tf.contract import reference_windows
from vreloc_tf.data.artifacts import Run
from vreloc_tf.data.feature_spec import FeatureSpec
from vreloc_tf.search.embedding import Embedder
from vreloc_tf.search.library import Index, IndexError_, LibraryIndex
from vreloc_tf.search.relocalize import FrameLevelRelocalizer, Relocalizer

DEFAULT_TOP_K = 5
DEFAULT_CANDIDATES = 200  # nearest windows fetched from FAISS
DEFAULT_RERANK = 10  # distinct videos the re-localizer runs in
SPAN_FACTOR = 4  # a candidate's span: this many query lengths around the window ...
MIN_SPAN = 64  # ... but at least this many steps, and at most the re-localizer's max_window


@dataclasses.dataclass(frozen=True)
class Hit:
    """One result: a segment of a library video. Indices are in the source video's feature steps."""

    video_id: str
    start_index: int
    end_index: int  # exclusive
    start_seconds: Optional[float]
    end_seconds: Optional[float]
    score: float  # the re-localizer's: the model's Eq.-20 value, or the frame-level mean cosine similarity
    video_number: int  # the library's own number of the piece the segment lies in
    window_start: int  # where that piece's features start in the source video

    def to_json(self) -> dict:
        """The result object of the issue's JSON output."""
        return {"video_id": self.video_id, "start_index": self.start_index, "end_index": self.end_index,
                "start_seconds": self.start_seconds, "end_seconds": self.end_seconds,
                "score": round(float(self.score), 6)}


def _hits(index: LibraryIndex, numbers: Sequence[int], offsets: Sequence[int], start, end, score) -> List[Hit]:
    out = []
    for number, off, s, e, sc in zip(numbers, offsets, start, end, score):
        v = index.video(int(number))
        a, b = v.window_start + int(off) + int(s), v.window_start + int(off) + int(e)
        out.append(Hit(v.video_id, a, b, v.seconds(a), v.seconds(b), float(sc), v.number, v.window_start))
    return out


def _best_per_video(hits: List[Hit], top_k: int) -> List[Hit]:
    """The best hit of each video id (pieces of one video compete), best first; ties by piece and start."""
    hits = sorted(hits, key=lambda h: (-h.score, h.video_number, h.start_index))
    seen, out = set(), []
    for h in hits:
        if h.video_id not in seen:
            seen.add(h.video_id)
            out.append(h)
    return out[:top_k]


def check_ready(index: LibraryIndex, relocalizer) -> None:
    """Refuse a re-localizer of another feature dim, encoder embeddings without the model that made
    them, and a model trained on features made otherwise than the index's (FeatureSpec)."""
    if relocalizer.feature_dim != index.feature_dim:
        raise IndexError_(f"the model takes {relocalizer.feature_dim}-d features but the index {index.path} "
                          f"holds {index.feature_dim}-d features")
    built = index.manifest.get("model") or {}
    if index.embedding.kind == "encoder" and built.get("model_sha256") != relocalizer.info.get("model_sha256"):
        raise IndexError_(f"the index {index.path} holds encoder embeddings of the model {built.get('run')}; "
                          f"search it with that model (or rebuild the index with this one)")
    trained_on = relocalizer.info.get("features")
    if trained_on is not None:
        FeatureSpec.from_json(trained_on, f"the model {relocalizer.info.get('run')}").check_same(
            index.feature_spec, f"the model {relocalizer.info.get('run')}", f"the index {index.path}",
            "search it with a model trained on features like the index's")


def search(index: LibraryIndex, relocalizer, embedder: Embedder, query: np.ndarray,
           top_k: int = DEFAULT_TOP_K, candidates: int = DEFAULT_CANDIDATES, rerank: int = DEFAULT_RERANK,
           exclude_video_ids: Sequence[str] = (), span_factor: float = SPAN_FACTOR) -> List[Hit]:
    """The ``top_k`` best segments for ``query`` [Lq, D], one per video (see the module docstring)."""
    vector = embedder.query(query)
    exclude = index.piece_numbers_of(exclude_video_ids) if len(exclude_video_ids) else ()
    ids, _ = index.nearest_windows(vector, max(candidates, rerank), exclude)
    rows = index.windows(ids)
    seen, numbers, centres = set(), [], []
    for r in rows:  # nearest first: each video keeps its best window (in whichever piece)
        video_id = index.video_id_of(int(r["video"]))
        if video_id not in seen:
            seen.add(video_id)
            numbers.append(int(r["video"]))
            centres.append((int(r["start"]) + int(r["end"])) // 2)
            if len(numbers) == rerank:
                break
    spans, offsets = [], []
    for number, centre in zip(numbers, centres):
        feats = index.video(number).features
        size = min(len(feats), max(min(relocalizer.max_window, int(span_factor * len(query))), MIN_SPAN, len(query)))
        s0 = int(np.clip(centre - size // 2, 0, len(feats) - size))
        spans.append(np.asarray(feats[s0:s0 + size]))
        offsets.append(s0)
    start, end, score = relocalizer.locate(query, spans)
    return _best_per_video(_hits(index, numbers, offsets, start, end, score), top_k)


def exhaustive(index: LibraryIndex, relocalizer, query: np.ndarray, top_k: int = DEFAULT_TOP_K,
               exclude_video_ids: Sequence[str] = ()) -> List[Hit]:
    """The re-localizer on every live piece (no ANN), ranked by its score; best segment per video."""
    if index.live_pieces == 0:
        raise IndexError_(f"the index {index.path} holds no videos; add some with `vreloc index add`")
    numbers = index.live_piece_numbers()
    if len(exclude_video_ids):
        numbers = numbers[~np.isin(numbers, index.piece_numbers_of(exclude_video_ids))]
    spans, owners, offsets = [], [], []
    for number in numbers:
        feats = index.video(int(number)).features
        for s0, s1 in reference_windows(len(feats), max(relocalizer.max_window, len(query))):
            spans.append(np.asarray(feats[s0:s1]))
            owners.append(int(number))
            offsets.append(s0)
    start, end, score = relocalizer.locate(query, spans)
    return _best_per_video(_hits(index, owners, offsets, start, end, score), top_k)


def open_search(opened: Index, model: Optional[Run] = None, batch_size: int = 64):
    """(index, relocalizer, embedder) ready to search: the :class:`Index` (opened by the caller) loaded
    with every file checked, and its re-localizer: the run ``model`` if given, else the one the index
    was built for (the run it records, or the frame-level method for an index built without a model),
    checked against the index."""
    index = LibraryIndex.load(opened)
    index_dir = opened.path
    if model is None and index.relocalizer == "frame-level":
        relocalizer = FrameLevelRelocalizer(index.feature_dim)
    else:
        if model is None and not index.model_run:
            raise IndexError_(f"the index {index_dir} records no model; pass --model RUN")
        relocalizer = Relocalizer.from_run(model if model is not None else Run.open(index.model_run), batch_size)
    check_ready(index, relocalizer)
    encoder = relocalizer.encoder() if index.embedding.kind == "encoder" else None
    embedder = Embedder(index.embedding, index.feature_dim, encoder)
    if embedder.dim != index.embed_dim:
        raise IndexError_(f"the model's embeddings are {embedder.dim}-d but the index {index_dir} holds "
                          f"{index.embed_dim}-d vectors")
    return index, relocalizer, embedder
