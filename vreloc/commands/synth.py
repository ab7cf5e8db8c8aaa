"""`vreloc synth`: write a synthetic ActivityNet-format dataset (docs/DATA.md describes it)."""
from __future__ import annotations

import argparse

from pipeline import synth  # synth.generate, looked up when called (tests replace it)
from pipeline.families import FAMILIES
from pipeline.synth import DEFAULT_FAMILY, GEOMETRIES, distractor_line
from vreloc_tf.data.benchmark_files import require_splits
from vreloc_tf.contract import FEATURE_DIM

BENCHMARK = "<the benchmark files>"  # --splits/--lengths given without a value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (HDF5 + train/val/test.json + length.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=FEATURE_DIM,
                        help="feature dim D (default %(default)s; the demo uses 32)")
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=list(FAMILIES),
                        help="feature family (docs/DATA.md describes each; default %(default)s)")
    parser.add_argument("--geometry", default="default", choices=list(GEOMETRIES),
                        help="split geometry of its own (default %(default)s: >= 500 test pairs)")
    parser.add_argument("--lengths", nargs="?", const=BENCHMARK, default=None, metavar="FILE",
                        help="the benchmark's length.json: reproduce its split geometry exactly; without FILE the "
                             "benchmark files `vreloc benchmark where` finds; default with --splits: the length.json "
                             "beside the split files")
    parser.add_argument("--splits", nargs="?", const=BENCHMARK, default=None, metavar="DIR",
                        help="folder with the benchmark's train/val/test.json; without DIR the benchmark files "
                             "`vreloc benchmark where` finds; default with --lengths: the folder of length.json")


def benchmark_geometry(lengths, splits):
    """(length.json, split folder) of --lengths/--splits; (None, None) if neither is given (own geometry).

    Resolved when the command runs: a bare flag is the folder `vreloc benchmark where` finds; a missing
    partner is the file or folder beside the one given (both live in one folder, the benchmark's or a synth's)."""
    import os

    if lengths is None and splits is None:
        return None, None
    if splits == BENCHMARK:
        splits = require_splits("--splits")
    if lengths == BENCHMARK:
        lengths = os.path.join(require_splits("--lengths"), "length.json")
    if lengths is None:
        lengths = os.path.join(splits, "length.json")
    if splits is None:
        splits = os.path.dirname(lengths) or "."
    return lengths, splits


def main(args: argparse.Namespace) -> int:
    lengths, splits = benchmark_geometry(args.lengths, args.splits)
    summary = synth.generate(args.out, seed=args.seed, dim=args.dim, lengths=lengths, splits_dir=splits,
                       family=args.family, geometry=args.geometry)
    print(f"synth: wrote {summary['videos']} videos ({summary['rows']} rows, D={summary['dim']}) to "
          f"{summary['hdf5']}; family {summary['family']}, entries {summary['entries']} ({summary['geometry']} geometry) "
          f"in {summary['seconds']} s")
    if "distractors" in summary:
        print(distractor_line(summary["distractors"]))
    return 0
