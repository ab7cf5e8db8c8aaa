"""`vreloc visualize`: multiscale attention maps and probabilities of one evaluation pair (paper Figure 4)."""
from __future__ import annotations

import argparse
import os

from vreloc_tf.data.artifacts import Dataset, Run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="training run folder")
    parser.add_argument("--data", default=None, metavar="DIR", help="TFRecord folder (default: the run's data)")
    parser.add_argument("--split", default="test", help="split of the pair list (default test)")
    parser.add_argument("--pair", type=int, default=0, help="pair number in the pair list (default 0)")
    parser.add_argument("--pairs", default=None, metavar="FILE", help="fixed pair list JSON (made if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a new pair list (default 0)")
    parser.add_argument("--out", required=True, metavar="PNG", help="output image")


def main(args: argparse.Namespace) -> int:
    from vreloc_tf.evaluation.visualize import visualize_pair  # heavy: TensorFlow, loaded when the figure is drawn, not for --help

    run = Run.open(args.model)
    dataset = Dataset.open(args.data) if args.data else None  # None: the run's own data
    res = visualize_pair(run, dataset, args.split, args.pair, args.out, args.pairs, args.seed)
    print(f"wrote {os.path.abspath(res['out'])}: predicted {list(res['predicted'])}, ground truth "
          f"{list(res['groundtruth'])}, IoU {res['iou']:.2f}")
    return 0
