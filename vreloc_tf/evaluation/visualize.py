"""What the model attends to for one evaluation pair (the paper's Figure 4; `vreloc visualize`).

The pair comes from the same fixed pair list as `vreloc evaluate` (a pair file, made
with ``seed`` if it does not exist), so a figure can be matched with a row of the
results table. Drawing is in vreloc_tf.evaluation.figures.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.contract import ATTENTION, PROBABILITIES, REFERENCE_LENGTH
from vreloc_tf.model.decoding import decoder
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import method_name, resolve_pairs
from vreloc_tf.evaluation.figures import figure4
from vreloc_tf.data.input_pipeline import evaluation_dataset, evaluation_plan
from vreloc_tf.evaluation.metrics import temporal_iou
from vreloc_tf.model.functional import attention_groups, attention_label


def visualize_pair(run: Run, dataset: Optional[Dataset], split: str, pair: int, out: str,
                   pairs_file: Optional[str] = None, seed: int = 0) -> dict:
    """Draw pair ``pair`` of ``split`` through the run's model; returns what was drawn.

    ``dataset`` None: the run's own data (:meth:`Run.dataset` checks either)."""
    cfg = run.config
    dataset = run.dataset(dataset)
    index, pairs = resolve_pairs(dataset.path, split, pairs_file, seed)
    if not 0 <= pair < len(pairs):
        raise InputError(f"--pair {pair}: the {split} pair list has {len(pairs)} pairs (0..{len(pairs) - 1})")
    model = run.load_model()
    plan = evaluation_plan(index, [pairs[pair]])
    batch = next(iter(evaluation_dataset(index, plan, dataset.feature_dim, batch_size=1)))
    outputs = model(batch, training=False)
    length = int(batch[REFERENCE_LENGTH][0])
    probs = np.asarray(outputs[PROBABILITIES])[:, :length]
    attention = np.asarray(outputs[ATTENTION])[0, :length]
    start, end, score = decoder(cfg.decode_rule, numpy=True)(probs, np.array([length], np.int32),
                                                             cfg.decode_max_length)
    gt = (int(plan[0, 6]), int(plan[0, 7]))
    pred = (int(start[0]), int(end[0]))
    iou = float(temporal_iou(start, end, np.array([gt[0]]), np.array([gt[1]]))[0])
    groups = attention_groups(cfg)  # the model's own row order (ablations and merged groups included)
    title = (f"{split} pair {pair}: query entry {pairs[pair]['query']}, reference entry {pairs[pair]['reference']} "
             f"({method_name(cfg)})\npredicted [{pred[0]}, {pred[1]}), ground truth [{gt[0]}, {gt[1]}), "
             f"IoU {iou:.2f}")
    figure4(attention, probs[0], groups, out, groundtruth=gt, predicted=pred, title=title,
            row_label=attention_label(cfg))
    return {"out": out, "groundtruth": gt, "predicted": pred, "score": float(score[0]), "iou": iou}
