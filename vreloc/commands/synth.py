"""`vreloc synth`: write a synthetic ActivityNet-format dataset (docs/DATA.md describes it)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.synth import DEFAULT_DIM

    parser.add_argument("--out", required=True, help="output folder (HDF5 + train/val/test.json + length.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM,
                        help="feature dim D (default %(default)s; the demo uses 32)")
    parser.add_argument("--lengths", default=None,
                        help="the benchmark's length.json: reproduce its split geometry exactly (with --splits)")
    parser.add_argument("--splits", default=None, help="folder with the benchmark's train/val/test.json")


def main(args: argparse.Namespace) -> int:
    from pipeline.synth import generate

    summary = generate(args.out, seed=args.seed, dim=args.dim, lengths=args.lengths, splits_dir=args.splits)
    print(f"synth: wrote {summary['videos']} videos ({summary['rows']} rows, D={summary['dim']}) to "
          f"{summary['hdf5']}; entries {summary['entries']} ({summary['geometry']} geometry) "
          f"in {summary['seconds']} s")
    return 0
