"""`vreloc ingest-activitynet`: the ActivityNet C3D HDF5 file + split JSONs -> sharded TFRecords (a Beam job).

The job is :func:`pipeline.ingest_activitynet.run`; this module only turns the
arguments into that call and prints the per-split summary.
"""
from __future__ import annotations

import argparse

from pipeline.options import add_beam_arguments, enable_progress_logging
from vreloc_tf.data.benchmark_files import require_splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, help="the C3D HDF5 file (sub_activitynet_v1-3.c3d.hdf5)")
    parser.add_argument("--splits", default=None,
                        help="folder with train.json, val.json, test.json (Feng's schema; default: the benchmark "
                             "files `vreloc benchmark where` finds)")
    parser.add_argument("--out", required=True, help="data folder for the shards, dead_letter/ and manifest.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset of another source or feature dim in --out (default: refuse)")
    add_beam_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from pipeline import ingest_activitynet  # heavy: Apache Beam, loaded when the job runs, not for --help

    splits = args.splits
    if splits is None:  # resolved now, not at import: `vreloc benchmark fetch` may have run since
        splits = require_splits("--splits")
    enable_progress_logging()
    summary = ingest_activitynet.run(args.features, splits, args.out, runner=args.runner,
                                     beam_args=args.beam_args, overwrite=args.overwrite)
    print(summary.report())
    return 0
