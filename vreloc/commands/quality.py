"""`vreloc quality`: every model and baseline row of docs/QUALITY.md, per data family, over seeds.

    vreloc quality --out runs/quality [--families demo,substates,periodic,shots,benchmark]
                   [--seeds 0,1,2] [--methods full,weak-ours,weak-paper] [--config tiny] [--finished-only] [--report FILE]
"""
from __future__ import annotations

import argparse
import sys


def _list(text: str):
    return [t for t in (s.strip() for s in text.split(",")) if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vreloc.quality import MAIN_METHODS, METHODS

    parser.add_argument("--out", required=True, help="study folder (data/, runs/, results/); reruns resume")
    parser.add_argument("--families", type=_list, default=["demo", "substates", "periodic", "shots", "benchmark"],
                        help="feature families (vreloc synth --family) and 'benchmark' (demo family at the "
                             "benchmark's split geometry); comma-separated")
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in _list(t)], default=[0, 1, 2],
                        help="training seeds (default 0,1,2)")
    parser.add_argument("--methods", type=_list, default=list(MAIN_METHODS),
                        help=f"rows to train and score; known: {', '.join(METHODS)}")
    parser.add_argument("--config", default="tiny", help="config of every run (default tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--dim", type=int, default=32, help="feature dim of the synthetic data (default 32)")
    parser.add_argument("--geometry", default="default", help="vreloc synth --geometry of the families")
    parser.add_argument("--benchmark-splits", default=None,
                        help="folder with the benchmark's length.json and split files (default: the benchmark "
                             "files `vreloc benchmark where` finds)")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: report the seeds and methods earlier runs finished (rows say how many seeds)")
    parser.add_argument("--report", metavar="FILE", help="write the tables as markdown")


def main(args: argparse.Namespace) -> int:
    from vreloc.quality import BENCHMARK, Study, write_report
    from vreloc_tf import benchmark_files
    from vreloc_tf.errors import InputError

    splits = args.benchmark_splits
    if splits is None and BENCHMARK in args.families:  # resolved now: `vreloc benchmark fetch` may have run since
        splits = benchmark_files.find_splits()
        if splits is None and not args.finished_only:
            raise InputError(
                f"--benchmark-splits: not given, and {benchmark_files.not_found_message()} "
                f"(or give --benchmark-splits DIR, or leave '{BENCHMARK}' out of --families)")
    study = Study(args.out, args.families, args.seeds, args.methods, args.config, args.set, args.dim,
                  args.geometry, splits,
                  finished_only=args.finished_only)
    summary = study.run()
    if args.report:
        write_report(study, summary, args.report, "vreloc quality " + " ".join(sys.argv[2:]))
        print(f"wrote {args.report}")
    missed = [f"{family}: {name}" for family, s in summary.items() for name, c in s["checks"].items() if not c["met"]]
    print("quality targets: " + ("all met" if not missed else "MISSED " + "; ".join(missed)))
    return 0
