"""`vreloc evaluate`: score a trained run on a fixed pair list, or print saved results as one table.

    vreloc evaluate --model RUN_DIR [--data DIR] --split test [--pairs FILE] [--json OUT] [--decode full|weak|feng]
    vreloc evaluate --model RUN_DIR --control swapped-query [--control-seed N]   # query-reading control
    vreloc evaluate --table A.json B.json ...      # report mode: one table of saved results

``--pairs FILE`` reads the pair list if the file exists (checked against the data) and
otherwise writes the one it makes (seed ``--seed``), so later models and baselines reuse it.
``--control swapped-query`` scores the same pairs with each query replaced by one of another
class (same split, closest length, reference and ground truth unchanged): a model that reads
the query collapses there.
"""
from __future__ import annotations

import argparse

from vreloc_tf.contract import DECODE_RULES
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import evaluate_run, format_table, load_results, save_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="RUN_DIR", help="training run folder (from `vreloc train`)")
    parser.add_argument("--data", metavar="DIR", help="TFRecord data folder (default: the run's own)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--pairs", metavar="FILE", help="pair list JSON: read if it exists, else written")
    parser.add_argument("--seed", type=int, default=0, help="seed of a newly made pair list (default 0)")
    parser.add_argument("--json", metavar="OUT", help="write the result JSON here")
    parser.add_argument("--decode", choices=DECODE_RULES, help="decoding rule (default: the run's own)")
    parser.add_argument("--name", help="method name in the table (default: 'ours <supervision>', or 'CGBM')")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--checkpoint", metavar="STEP|last",
                        help="score checkpoints/step-STEP.keras (or the last one) instead of model.keras")
    parser.add_argument("--control", choices=("swapped-query",),
                        help="score a control instead: swapped-query = each query replaced by one of another class")
    parser.add_argument("--control-seed", type=int, metavar="N",
                        help="seed of the control's choices (default: --seed + 1000)")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="report mode: print these result JSONs as one table (like Tables 2 and 4)")
    parser.add_argument("--title", default="", help="title line of a --table report")


def print_results(results, json_path=None) -> None:
    """Print results as one table (with header), and write them as JSON if asked."""
    rows = results if isinstance(results, list) else [results]
    print(format_table(rows))
    for r in rows:
        if r.get("selection"):
            weights = " (the student's running average)" if r.get("model_weights") == "student_average" else ""
            print(f"{r['method']}: model.keras is the checkpoint of step {r.get('selected_step')}{weights}, "
                  f"chosen by selection rule '{r['selection']}'")
    if json_path:
        save_results(results, json_path)


def main(args: argparse.Namespace) -> int:
    if args.table:
        print(format_table(load_results(args.table), args.title))
        return 0
    if not args.model:
        raise InputError("vreloc evaluate needs --model RUN_DIR (or --table JSON...)")
    run = Run.open(args.model)
    dataset = Dataset.open(args.data) if args.data else None  # None: the run's own data
    result = evaluate_run(run, dataset, args.split, args.pairs, args.decode, args.name, args.seed,
                          args.batch_size, checkpoint=args.checkpoint, control=args.control,
                          control_seed=args.control_seed)
    print_results(result, args.json)
    return 0
