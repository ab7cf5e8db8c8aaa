"""`vreloc baseline`: score the training-free baselines of the paper on a fixed pair list.

    vreloc baseline --method random|prior|frame-level|query-free|window-match|all --data DIR --split test [--pairs FILE] [--json OUT]
"""
from __future__ import annotations

import argparse

from vreloc.commands.evaluate import print_results
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.evaluation.baselines import METHODS, run_baseline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHODS + ("all",),
                        help="baseline to score ('all' = every baseline, printed as one table)")
    parser.add_argument("--data", required=True, metavar="DIR", help="TFRecord data folder")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--pairs", metavar="FILE", help="pair list JSON: read if it exists, else written")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline and of a new pair list")
    parser.add_argument("--json", metavar="OUT", help="write the result JSON here (with 'all': a list)")


def main(args: argparse.Namespace) -> int:
    methods = METHODS if args.method == "all" else (args.method,)
    dataset = Dataset.open(args.data)
    results = [run_baseline(m, dataset, args.split, args.pairs, args.seed) for m in methods]
    print_results(results if args.method == "all" else results[0], args.json)
    return 0
