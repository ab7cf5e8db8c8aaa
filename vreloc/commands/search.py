"""`vreloc search`: find a clip in a library index (ANN proposes, a re-localizer re-localizes and ranks).

    vreloc search --index INDEX --query CLIP.mp4|Q.npy [--model RUN] [--top-k K] [--json F]

Prints one line per result (one per video); ``--json F`` writes the list of {video_id, start_index,
end_index, start_seconds, end_seconds, score}, best first. A clip is made into features exactly like
the index's (its recorded backbone, weights, frame rate and its own copy of the PCA; vreloc/features.py):
backbone flags are needed only where the index cannot name them. The re-localizer: ``--model
RUN`` if given, else the one the index was built for (its run's model, or the frame-level method
for an index built without ``--model``; its score is then a mean cosine similarity).
"""
from __future__ import annotations

import argparse

from vreloc import backbone_args
from vreloc import library_search  # library_search.query_features, looked up when called (tests replace it)
from vreloc.backbone_args import add_backbone_arguments
from vreloc.features import default_options
from vreloc_tf.data.artifacts import Run
from vreloc_tf.errors import InputError
from vreloc_tf.files import write_json_atomic
from vreloc_tf.search.library import Index
from vreloc_tf.search.search import (DEFAULT_CANDIDATES, DEFAULT_RERANK, DEFAULT_TOP_K, SPAN_FACTOR, open_search,
                                     search)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="index folder (`vreloc index build`)")
    parser.add_argument("--query", required=True, metavar="CLIP.mp4|Q.npy", help="query clip or features [L, D]")
    parser.add_argument("--model", metavar="RUN", help="run folder whose model re-ranks (default: the index's "
                        "re-localizer: the model it was built with, or the frame-level method if none)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                        help="nearest windows fetched from the ANN index (default %(default)s)")
    parser.add_argument("--rerank", type=int, default=DEFAULT_RERANK,
                        help="videos the re-localizer runs in (default %(default)s)")
    parser.add_argument("--span-factor", type=float, default=SPAN_FACTOR,
                        help="re-localize in this many query lengths around each candidate (default %(default)s)")
    parser.add_argument("--json", metavar="F", help="write the results as JSON")
    add_backbone_arguments(parser, default_from="--index")
    parser.add_argument("--pca", metavar="FILE", help="PCA for a video query's features (default: the index's)")


def main(args: argparse.Namespace) -> int:
    import json

    for name in ("top_k", "candidates", "rerank"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    index, relocalizer, embedder = open_search(Index.open(args.index), Run.open(args.model) if args.model else None)
    backbone = backbone_args.options_from_args(args, default_options(index.feature_spec)) \
        if backbone_args.given(args) else None
    query = library_search.query_features(args.query, index, backbone, args.pca)
    hits = [h.to_json() for h in search(index, relocalizer, embedder, query, args.top_k, args.candidates, args.rerank,
                           span_factor=args.span_factor)]
    for rank, h in enumerate(hits, 1):
        print(f"{rank}. {h['video_id']} [{h['start_index']}, {h['end_index']}) score {h['score']:.4f}")
    if args.json:
        write_json_atomic(args.json, hits)
    elif not hits:
        print(json.dumps(hits))
    return 0
