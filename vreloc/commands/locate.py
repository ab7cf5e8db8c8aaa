"""`vreloc locate`: find a query clip in a long reference video file (see vreloc/locate.py)."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--query", required=True, metavar="CLIP", help="the short query video file")
    parser.add_argument("--reference", required=True, metavar="LONG", help="the long reference video file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="PATH", help="run folder or exported model folder BASE/NAME")
    who.add_argument("--method", choices=("frame-level",), help="training-free matcher instead of a model")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--c3d-weights", metavar="FILE", help="Sports-1M C3D weights (HDF5, see pipeline/c3d.py)")
    weights.add_argument("--random-c3d", action="store_true", help="random C3D weights (tests and demos only)")
    parser.add_argument("--c3d-seed", type=int, default=0, help="seed of --random-c3d (default 0)")
    parser.add_argument("--pca", metavar="FILE", help="pca.npz to apply to the fc7 features")
    parser.add_argument("--window", type=int, default=None,
                        help="reference window in features (default: the model config's data.max_window)")
    parser.add_argument("--json", metavar="FILE", help="write the answer as JSON")
    parser.add_argument("--plot", metavar="PNG", help="draw the per-step probabilities over the reference")


def main(args: argparse.Namespace) -> int:
    import dataclasses

    from vreloc.locate import locate
    from vreloc_tf.files import write_json_atomic

    res = locate(args.query, args.reference, model=args.model, method=args.method,
                 c3d_weights=args.c3d_weights, random_c3d=args.random_c3d, c3d_seed=args.c3d_seed,
                 pca_file=args.pca, window=args.window, plot=args.plot)
    print(f"{os.path.basename(args.query)} found in {os.path.basename(args.reference)} at "
          f"{res.start_seconds:.2f} s - {res.end_seconds:.2f} s (features [{res.start_index}, {res.end_index}) of "
          f"{res.reference_features}), score {res.score:.4f} [{res.method}]")
    if args.json:
        write_json_atomic(args.json, dataclasses.asdict(res))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
