"""`vreloc visualize`: what the model attends to for one evaluation pair (the paper's Figure 4).

The pair comes from the same fixed pair list as `vreloc evaluate` (``--pairs FILE``,
made with ``--seed`` if the file does not exist), so a figure can be matched with a
row of the results table. Drawing is in vreloc_tf.figures.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

import numpy as np


def visualize_pair(run_dir: str, data_dir: Optional[str], split: str, pair: int, out: str,
                   pairs_file: Optional[str] = None, seed: int = 0) -> dict:
    """Draw pair ``pair`` of ``split`` through the run's model; returns what was drawn."""
    from vreloc_tf.decoding import decode_full_np, decode_weak_np
    from vreloc_tf.evaluate import resolve_pairs
    from vreloc_tf.figures import figure4
    from vreloc_tf.input_pipeline import evaluation_dataset, evaluation_plan
    from vreloc_tf.metrics import temporal_iou
    from vreloc_tf.model import head_groups
    from vreloc_tf.run_dir import load_run
    from vreloc_tf.schema import feature_dim_of

    model, cfg, manifest = load_run(run_dir)
    data_dir = data_dir or manifest.data_dir
    index, pairs = resolve_pairs(data_dir, split, pairs_file, seed)
    if not 0 <= pair < len(pairs):
        raise IndexError(f"--pair {pair}: the {split} pair list has {len(pairs)} pairs (0..{len(pairs) - 1})")
    plan = evaluation_plan(index, [pairs[pair]])
    batch = next(iter(evaluation_dataset(index, plan, feature_dim_of(data_dir), batch_size=1)))
    outputs = model(batch, training=False)
    length = int(batch["reference_length"][0])
    probs = np.asarray(outputs["probabilities"])[:, :length]
    attention = np.asarray(outputs["attention"])[0, :length]
    decoder = decode_full_np if cfg.supervision == "full" else decode_weak_np
    start, end, score = decoder(probs, np.array([length], np.int32), cfg.decode_max_length)
    gt = (int(plan[0, 6]), int(plan[0, 7]))
    pred = (int(start[0]), int(end[0]))
    iou = float(temporal_iou(start, end, np.array([gt[0]]), np.array([gt[1]]))[0])
    heads = head_groups(cfg)  # the model's own head order (ablations and merged groups included)
    title = (f"{split} pair {pair}: query entry {pairs[pair]['query']}, reference entry {pairs[pair]['reference']} "
             f"({cfg.supervision} supervision)\npredicted [{pred[0]}, {pred[1]}), ground truth [{gt[0]}, {gt[1]}), "
             f"IoU {iou:.2f}")
    figure4(attention, probs[0], heads, out, groundtruth=gt, predicted=pred, title=title)
    return {"out": out, "groundtruth": gt, "predicted": pred, "score": float(score[0]), "iou": iou}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="training run folder")
    parser.add_argument("--data", default=None, metavar="DIR", help="TFRecord folder (default: the run's data)")
    parser.add_argument("--split", default="test", help="split of the pair list (default test)")
    parser.add_argument("--pair", type=int, default=0, help="pair number in the pair list (default 0)")
    parser.add_argument("--pairs", default=None, metavar="FILE", help="fixed pair list JSON (made if missing)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a new pair list (default 0)")
    parser.add_argument("--out", required=True, metavar="PNG", help="output image")


def main(args: argparse.Namespace) -> int:
    try:
        res = visualize_pair(args.model, args.data, args.split, args.pair, args.out, args.pairs, args.seed)
    except (IndexError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {os.path.abspath(res['out'])}: predicted {list(res['predicted'])}, ground truth "
          f"{list(res['groundtruth'])}, IoU {res['iou']:.2f}")
    return 0
