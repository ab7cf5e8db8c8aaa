"""`vreloc extract-video`: raw videos -> a backbone -> PCA -> sharded TFRecords (a Beam job).

    vreloc extract-video --videos 'DIR/*.mp4' --out DATA [--annotations A.json] [--backbone c3d|clip]
                         (--weights PATH|HANDLE | --random-weights) [--fps F] [--pca FILE | --pca-components K]

Without ``--annotations`` every video becomes one entry of split ``library`` (a searchable
library: `vreloc index build --data DATA --split library`). The job is
:func:`pipeline.extract_video.run`; this module turns the arguments into that call and
prints the per-split summary.
"""
from __future__ import annotations

import argparse

from pipeline.options import add_beam_arguments, enable_progress_logging
from vreloc.backbone_args import add_backbone_arguments, options_from_args
from vreloc_tf.contract import FEATURE_DIM


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, help="glob of video files (local or gs://...), e.g. 'videos/*.mp4'")
    parser.add_argument("--annotations", default=None,
                        help="ActivityNet-style annotation JSON (default: none; every video goes to split 'library')")
    parser.add_argument("--out", required=True, help="data folder for the shards, dead_letter/, pca.npz, manifest.json")
    add_backbone_arguments(parser)
    parser.add_argument("--pca", default=None,
                        help="reuse a fitted PCA (an earlier DATA/pca.npz, or ActivityNet's PCA_activitynet_v1-3.hdf5) "
                             "instead of fitting one")
    parser.add_argument("--pca-components", type=int, default=FEATURE_DIM,
                        help="PCA output dims when fitting (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset of another source or feature dim in --out (default: refuse)")
    add_beam_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from pipeline import extract_video  # heavy: Apache Beam, loaded when the job runs, not for --help

    enable_progress_logging()
    summary = extract_video.run(args.videos, args.out, annotations=args.annotations,
                                backbone=options_from_args(args), pca=args.pca, n_components=args.pca_components,
                                runner=args.runner, beam_args=args.beam_args, overwrite=args.overwrite)
    print(summary.report())
    return 0
