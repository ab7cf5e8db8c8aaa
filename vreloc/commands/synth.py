"""`vreloc synth`: write a synthetic ActivityNet-format dataset (docs/DATA.md describes it)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.families import FAMILIES
    from pipeline.synth import DEFAULT_DIM, DEFAULT_FAMILY, GEOMETRIES

    parser.add_argument("--out", required=True, help="output folder (HDF5 + train/val/test.json + length.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM,
                        help="feature dim D (default %(default)s; the demo uses 32)")
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=list(FAMILIES),
                        help="feature family (docs/DATA.md describes each; default %(default)s)")
    parser.add_argument("--geometry", default="default", choices=list(GEOMETRIES),
                        help="split geometry of its own (default %(default)s: >= 500 test pairs)")
    parser.add_argument("--lengths", default=None,
                        help="the benchmark's length.json: reproduce its split geometry exactly (with --splits)")
    parser.add_argument("--splits", default=None, help="folder with the benchmark's train/val/test.json")


def main(args: argparse.Namespace) -> int:
    from pipeline.synth import generate

    summary = generate(args.out, seed=args.seed, dim=args.dim, lengths=args.lengths, splits_dir=args.splits,
                       family=args.family, geometry=args.geometry)
    print(f"synth: wrote {summary['videos']} videos ({summary['rows']} rows, D={summary['dim']}) to "
          f"{summary['hdf5']}; family {summary['family']}, entries {summary['entries']} ({summary['geometry']} geometry) "
          f"in {summary['seconds']} s")
    return 0
