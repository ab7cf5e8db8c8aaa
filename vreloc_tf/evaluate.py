"""`vreloc evaluate`: score a trained run on a fixed pair list, and print results as tables.

    vreloc evaluate --model RUN_DIR [--data DIR] --split test [--pairs FILE] [--json OUT] [--decode full|weak]
    vreloc evaluate --table A.json B.json ...      # report mode: one table of saved results

The model decodes with the rule of its training mode (Eq. 20 for full supervision with
the 64-step limit, the threshold rule for weak) unless ``--decode`` says otherwise; the
row is printed in the paper's format (mAP@1 at IoU > 0.5 ... 0.9 and the average, in
percent, one decimal) and written as JSON (``vreloc_tf.metrics.result_dict``).
``--pairs FILE`` reads the pair list if the file exists and otherwise writes the one it
makes (seed ``--seed``), so later models and baselines reuse it.
"""
from __future__ import annotations

import json
import os
import sys
import weakref
from typing import List, Optional, Tuple

import numpy as np

from vreloc_tf import metrics


# ---------------------------------------------------------------------------
# Shared by evaluate, baselines and the training-time validation
# ---------------------------------------------------------------------------

def resolve_pairs(data_dir: str, split: str, pairs_file: Optional[str] = None, seed: int = 0):
    """(EntryIndex of ``split``, pair list): read ``pairs_file`` if it exists, else make (and save) it."""
    from vreloc_tf.entry_index import load_index
    from vreloc_tf.pairs import load_pairs, pairs_from_index, save_pairs

    index = load_index(data_dir, split)
    if pairs_file and os.path.exists(pairs_file):
        return index, load_pairs(pairs_file, split)
    doc = pairs_from_index(index, seed)
    if pairs_file:
        save_pairs(doc, pairs_file)
        print(f"wrote pair list {pairs_file} ({doc['count']} pairs, {doc['skipped']} queries skipped)",
              file=sys.stderr)
    return index, doc["pairs"]


_PREDICT_FNS = weakref.WeakKeyDictionary()  # model -> its traced predict function (traced once per model)


def predict_segments(model, index, plan: np.ndarray, feature_dim: int, mode: str,
                     max_length: Optional[int], batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Decoded (start, end) [N] for the pairs of an evaluation plan, in plan order.

    Pairs run in batches of similar reference length (less padding); the NumPy
    decoders of :mod:`vreloc_tf.decoding` read each example's valid steps only.
    """
    import tensorflow as tf

    from vreloc_tf.decoding import decode_full_np, decode_weak_np
    from vreloc_tf.input_pipeline import evaluation_dataset, length_sorted

    if mode not in ("full", "weak"):
        raise ValueError(f"decode mode must be 'full' or 'weak', got {mode!r}")
    decoder = decode_full_np if mode == "full" else decode_weak_np
    ordered, inverse = length_sorted(plan)

    probabilities = _PREDICT_FNS.get(model)
    if probabilities is None:
        probabilities = _PREDICT_FNS[model] = tf.function(
            lambda batch: model(batch, training=False)["probabilities"], reduce_retracing=True)
    starts, ends = [], []
    for batch in evaluation_dataset(index, ordered, feature_dim, batch_size):
        probs = probabilities(batch).numpy()
        s, e, _ = decoder(probs, batch["reference_length"].numpy(), max_length)
        starts.append(s)
        ends.append(e)
    start, end = np.concatenate(starts), np.concatenate(ends)
    return start[inverse], end[inverse]


def score_plan(plan: np.ndarray, start: np.ndarray, end: np.ndarray, method: str, split: str, **extra) -> dict:
    return metrics.score_predictions(start, end, plan[:, 6], plan[:, 7], method, split, **extra)


def emit(result: dict, json_path: Optional[str]) -> None:
    """Print the row (with header) and write the JSON if asked."""
    print(metrics.format_table([result]))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

def evaluate_run(run_dir: str, data_dir: Optional[str] = None, split: str = "test",
                 pairs_file: Optional[str] = None, decode: Optional[str] = None,
                 method: Optional[str] = None, seed: int = 0, batch_size: int = 64) -> dict:
    """Score the best model of a run folder on a fixed pair list; returns the result dict."""
    from vreloc_tf.input_pipeline import evaluation_plan
    from vreloc_tf.run_dir import load_run
    from vreloc_tf.schema import feature_dim_of

    model, cfg, manifest = load_run(run_dir)
    data_dir = data_dir or manifest.data_dir
    dim = feature_dim_of(data_dir)
    if dim != manifest.feature_dim:
        raise ValueError(f"{data_dir} holds {dim}-d features but the run in {run_dir} was trained on "
                         f"{manifest.feature_dim}-d features ({manifest.data_dir})")
    mode = decode or manifest.supervision
    max_length = cfg.decode.full_max_length if mode == "full" else cfg.decode.weak_max_length
    index, pairs = resolve_pairs(data_dir, split, pairs_file, seed)
    plan = evaluation_plan(index, pairs)
    start, end = predict_segments(model, index, plan, dim, mode, max_length, batch_size)
    name = method or f"ours {manifest.supervision}" + ("" if mode == manifest.supervision else f" ({mode} decode)")
    return score_plan(plan, start, end, name, split, decode=mode, run_dir=os.path.abspath(run_dir))


def load_results(paths: List[str]) -> List[dict]:
    """Result dicts from JSON files holding one result or a list of them (`baseline --method all`)."""
    out = []
    for path in paths:
        with open(path) as fh:
            try:
                doc = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not a result JSON ({exc})") from None
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict) or "map_at_1" not in item:
                raise ValueError(f"{path}: not a result JSON (expected objects with 'method' and 'map_at_1')")
            out.append(item)
    return out


def format_table(results: List[dict], title: str = "") -> str:
    """Several results as one table (re-exported from :mod:`vreloc_tf.metrics`)."""
    return metrics.format_table(results, title)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--model", metavar="RUN_DIR", help="training run folder (from `vreloc train`)")
    parser.add_argument("--data", metavar="DIR", help="TFRecord data folder (default: the run's own)")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--pairs", metavar="FILE", help="pair list JSON: read if it exists, else written")
    parser.add_argument("--seed", type=int, default=0, help="seed of a newly made pair list (default 0)")
    parser.add_argument("--json", metavar="OUT", help="write the result JSON here")
    parser.add_argument("--decode", choices=("full", "weak"), help="decoding rule (default: the run's mode)")
    parser.add_argument("--name", help="method name in the table (default: 'ours <supervision>')")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="report mode: print these result JSONs as one table (like Tables 2 and 4)")
    parser.add_argument("--title", default="", help="title line of a --table report")


def main(args) -> int:
    if args.table:
        try:
            results = load_results(args.table)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(format_table(results, args.title))
        return 0
    if not args.model:
        print("error: vreloc evaluate needs --model RUN_DIR (or --table JSON...)", file=sys.stderr)
        return 2
    result = evaluate_run(args.model, args.data, args.split, args.pairs, args.decode, args.name, args.seed,
                          args.batch_size)
    emit(result, args.json)
    return 0
