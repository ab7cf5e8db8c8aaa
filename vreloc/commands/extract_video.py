"""`vreloc extract-video`: raw annotated videos -> C3D fc7 -> PCA -> sharded TFRecords (a Beam job).

The job is :func:`pipeline.extract_video.run`; this module only turns the
arguments into that call and prints the per-split summary.
"""
from __future__ import annotations

import argparse

from pipeline.options import add_beam_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, help="glob of video files (local or gs://...), e.g. 'videos/*.mp4'")
    parser.add_argument("--annotations", required=True, help="ActivityNet-style annotation JSON")
    parser.add_argument("--out", required=True, help="data folder for the shards, dead_letter/, pca.npz, manifest.json")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--c3d-weights", default=None, help="Sports-1M C3D weights (HDF5, see pipeline.c3d)")
    weights.add_argument("--random-c3d", action="store_true",
                         help="RANDOM C3D weights: meaningless features, for tests and demos only (logged)")
    parser.add_argument("--c3d-seed", type=int, default=0, help="seed of --random-c3d")
    parser.add_argument("--pca", default=None, help="reuse a fitted pca.npz instead of fitting on the training split")
    parser.add_argument("--pca-components", type=int, default=500, help="PCA output dims when fitting (default 500)")
    parser.add_argument("--c3d-batch", type=int, default=8, help="clips per C3D forward pass")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset of another source or feature dim in --out (default: refuse)")
    add_beam_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from pipeline import extract_video
    from pipeline.options import enable_progress_logging

    enable_progress_logging()
    summary = extract_video.run(args.videos, args.annotations, args.out, c3d_weights=args.c3d_weights,
                                random_c3d=args.random_c3d, pca=args.pca, n_components=args.pca_components,
                                c3d_seed=args.c3d_seed, c3d_batch=args.c3d_batch, runner=args.runner,
                                beam_args=args.beam_args, overwrite=args.overwrite)
    print(summary.report())
    return 0
