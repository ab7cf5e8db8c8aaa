"""`vreloc evaluate-search`: recall@1/5 and latency of library search vs the exhaustive reference on a split.

    vreloc evaluate-search --index INDEX [--model RUN] --data DIR --split test --json F

The re-localizer is the one `vreloc search` would use: ``--model RUN``, else the index's (its run's
model, or, for an index built without ``--model``, the training-free frame-level method, for
search and the exhaustive reference alike; ``relocalizer`` in the result says which).
"""
from __future__ import annotations

import argparse

from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.files import write_json_atomic
from vreloc_tf.search.evaluate import evaluate_search
from vreloc_tf.search.library import Index
from vreloc_tf.search.search import DEFAULT_CANDIDATES, DEFAULT_RERANK, SPAN_FACTOR, open_search


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="index of the split's videos (`vreloc index build --split`)")
    parser.add_argument("--model", metavar="RUN", help="run folder (default: the index's re-localizer: the model "
                        "it was built with, or the frame-level method if none)")
    parser.add_argument("--data", required=True, metavar="DIR", help="TFRecord data folder the index was built from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES)
    parser.add_argument("--rerank", type=int, default=DEFAULT_RERANK)
    parser.add_argument("--max-queries", type=int, help="an evenly spaced subset of the queries (default: all)")
    parser.add_argument("--exhaustive-queries", type=int,
                        help="queries for the exhaustive reference, evenly spaced (default: all)")
    parser.add_argument("--span-factor", type=float, default=SPAN_FACTOR,
                        help="re-localize in this many query lengths around each candidate (default %(default)s)")
    parser.add_argument("--json", metavar="F", help="write the result JSON here")


def main(args: argparse.Namespace) -> int:
    import json

    index, relocalizer, embedder = open_search(Index.open(args.index), Run.open(args.model) if args.model else None)
    result = evaluate_search(index, relocalizer, embedder, Dataset.open(args.data), args.split, args.candidates, args.rerank,
                             args.max_queries, args.exhaustive_queries, span_factor=args.span_factor)
    print(json.dumps(result, indent=2))
    if args.json:
        write_json_atomic(args.json, result)
    return 0
