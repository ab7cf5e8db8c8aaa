"""``python -m vreloc.model_bench``: the model's size and speed on this machine, one table.

The measuring functions are :mod:`vreloc.bench.model`; this is their command line
(``vreloc bench`` runs the same functions part by part, each in its own process).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from serving.server import set_tensorflow_threads
from vreloc.bench.model import inference_cost_by_batch, run_benchmark
from vreloc_tf.config import load_config
from vreloc_tf.contract import PAPER_SHAPES
from vreloc_tf.errors import InputError, add_debug_option, run_entry_point


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.model_bench", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--config", default="paper_full", help="config name or path (default paper_full)")
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    parser.add_argument("--batch-size", type=int, default=PAPER_SHAPES["batch_size"])
    parser.add_argument("--query-steps", type=int, default=PAPER_SHAPES["query_steps"])
    parser.add_argument("--reference-steps", type=int, default=PAPER_SHAPES["reference_steps"])
    parser.add_argument("--feature-dim", type=int, default=PAPER_SHAPES["feature_dim"])
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--jit-train", action="store_true", help="compile the training step with XLA")
    parser.add_argument("--no-jit-predict", action="store_true", help="run inference without XLA")
    parser.add_argument("--inference-batches", default=None, metavar="B1,B2,...",
                        help="only time the compiled predict function at these batch sizes (wall and CPU ms per pair)")
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="TensorFlow intra-op threads for this process (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if args.intra_op_threads is not None:
        set_tensorflow_threads(args.intra_op_threads)
    if args.inference_batches:
        try:
            sizes = [int(b) for b in args.inference_batches.split(",")]
        except ValueError:
            raise InputError(f"--inference-batches {args.inference_batches!r}: expected comma-separated batch "
                             f"sizes, e.g. 1,8,32") from None
        costs = inference_cost_by_batch(cfg, sizes, args.query_steps, args.reference_steps, args.feature_dim,
                                        jit_compile=not args.no_jit_predict)
        print(f"config {args.config}  Lq={args.query_steps} Lr={args.reference_steps} D={args.feature_dim}  "
              f"intra-op threads {args.intra_op_threads if args.intra_op_threads is not None else 'auto'}")
        for key, value in costs.items():
            print(f"{key:32s} {value:,.2f}")
        return 0
    results = run_benchmark(cfg, args.batch_size, args.query_steps, args.reference_steps, args.feature_dim,
                            args.train_steps, args.latency_runs, args.jit_train, not args.no_jit_predict)
    print(f"config {args.config}  B={args.batch_size} Lq={args.query_steps} Lr={args.reference_steps} "
          f"D={args.feature_dim}")
    for key, value in results.items():
        print(f"{key:32s} {value:,.3f}" if isinstance(value, float) else f"{key:32s} {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, "python -m vreloc.model_bench"))
