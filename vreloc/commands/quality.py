"""`vreloc quality`: every row of docs/QUALITY.md, per data family, on the reporting draw.

    vreloc quality --out runs/quality --report docs/QUALITY.md
                   [--families demo,substates,periodic,shots,distractor] [--seeds 0,1,2]
                   [--methods full,weak-ours,weak-paper,cgbm,paper-size-full,paper-size-weak]
                   [--learning-rates 0.001,0.003,0.01 | --no-tuning] [--finished-only]
"""
from __future__ import annotations

import argparse
import shlex

from vreloc.quality import BENCHMARK, FAMILIES, LEARNING_RATES, MAIN_METHODS, METHODS, Study, check_methods
from vreloc.quality_report import write_report
from vreloc_tf.data import benchmark_files
from vreloc_tf.errors import InputError


def _list(text: str):
    return [t for t in (s.strip() for s in text.split(",")) if t]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="study folder (draw-*/data, runs, results; tuning/); reruns resume")
    parser.add_argument("--families", type=_list, default=list(FAMILIES),
                        help="feature families (vreloc synth --family), comma-separated (default: all five)")
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in _list(t)], default=[0, 1, 2],
                        help="training seeds (default 0,1,2; the paper-size rows use the first)")
    parser.add_argument("--methods", type=_list, default=list(MAIN_METHODS),
                        help=f"rows to train and score; known: {', '.join(METHODS)}")
    parser.add_argument("--learning-rates", type=lambda t: [float(v) for v in _list(t)], default=list(LEARNING_RATES),
                        help="the tuning grid, the same for every tuned method, on the tuning draw "
                             "(default %(default)s)")
    parser.add_argument("--no-tuning", action="store_true",
                        help="train every method at its config's rate (the page marks the rows untuned)")
    parser.add_argument("--config", default="tiny", help="config of the tuned rows (default tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--dim", type=int, default=32, help="feature dim of the synthetic data (default 32)")
    parser.add_argument("--geometry", default=BENCHMARK,
                        help="split geometry of every family: 'benchmark' (the default: the benchmark's split files, "
                             "`vreloc benchmark where`) or one of vreloc synth's own (default, small-train, smoke)")
    parser.add_argument("--benchmark-splits", default=None,
                        help="folder with the benchmark's length.json and split files (default: the benchmark "
                             "files `vreloc benchmark where` finds)")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: report the seeds and methods earlier runs finished (rows say how many seeds)")
    parser.add_argument("--report", metavar="FILE", help="write the whole page (docs/QUALITY.md) as markdown")


def _command(args: argparse.Namespace) -> str:
    """The command line that remakes the page, spelled the same way however it was typed (the
    page must not change when the same study is asked for in another order; --finished-only
    reads the same study, so it is left out)."""
    parts = ["vreloc quality", "--out", shlex.quote(args.out), "--report", shlex.quote(args.report)]
    if args.families != list(FAMILIES):
        parts += ["--families", ",".join(args.families)]
    if args.seeds != [0, 1, 2]:
        parts += ["--seeds", ",".join(str(s) for s in args.seeds)]
    if args.methods != list(MAIN_METHODS):
        parts += ["--methods", ",".join(args.methods)]
    if args.no_tuning:
        parts.append("--no-tuning")
    elif args.learning_rates != list(LEARNING_RATES):
        parts += ["--learning-rates", ",".join(f"{r:g}" for r in args.learning_rates)]
    if args.config != "tiny":
        parts += ["--config", shlex.quote(args.config)]
    parts += [f"--set {shlex.quote(s)}" for s in args.set]
    if args.dim != 32:
        parts += ["--dim", str(args.dim)]
    if args.geometry != BENCHMARK:
        parts += ["--geometry", args.geometry]
    return " ".join(parts)


def main(args: argparse.Namespace) -> int:
    check_methods(args.methods)  # before anything is looked for or made
    if not args.learning_rates or any(r <= 0 for r in args.learning_rates):
        raise InputError(f"--learning-rates: give positive rates, got {args.learning_rates}")
    if args.dim < 1:
        raise InputError(f"--dim: give a positive feature dim, got {args.dim}")
    splits = args.benchmark_splits
    if splits is None and BENCHMARK in (args.geometry, *args.families):  # resolved now: `vreloc benchmark fetch` may have run since
        splits = benchmark_files.find_splits()
        if splits is None and not args.finished_only:
            raise InputError(
                f"--benchmark-splits: not given, and {benchmark_files.not_found_message()} "
                f"(or give --benchmark-splits DIR, or --geometry default for synth's own)")
    study = Study(args.out, args.families, args.seeds, args.methods, args.config, args.set, args.dim,
                  args.geometry, splits, finished_only=args.finished_only, tune=not args.no_tuning,
                  learning_rates=args.learning_rates)
    summary = study.run()
    if args.report:
        command = _command(args)
        write_report(study, summary, args.report, command)
        print(f"wrote {args.report}")
    missed = [f"{family}: {name}" for family, s in summary.items() for name, c in s["checks"].items() if not c["met"]]
    checked = sum(len(s["checks"]) for s in summary.values())
    verdict = f"{checked} checked, " + ("all met" if not missed else "MISSED " + "; ".join(missed))
    if study.unfinished:  # --finished-only: say that the verdict covers only what finished
        verdict += "; not finished: " + "; ".join(
            f"{f}: {rows[0] if rows == ['every row'] else f'{len(rows)} rows'}" for f, rows in study.unfinished.items())
    print("quality targets: " + verdict)
    return 0
