"""Scoring a trained run on a fixed pair list (what `vreloc evaluate` runs), and result files.

The model decodes with the rule of its run (``Config.decode_rule``: Eq. 20 with the 64-step
limit wherever p1/p2 are trained -- full supervision and weak "ours" -- and the threshold rule
for the paper's weak objective) unless ``decode`` says otherwise; the result records which
checkpoint-selection rule picked the model (``selection``); the
result is the paper's row (mAP@1 at IoU > 0.5 ... 0.9 and the average, in percent) as a
dict (``vreloc_tf.evaluation.metrics.result_dict``). A pair file is read if it exists -- and checked
against the data, so a list made for another (or relabelled) split is refused -- and
otherwise written with the list made here, so later models and baselines reuse it.

``control="swapped-query"`` scores the same pairs with each query replaced by one of another
class (:func:`vreloc_tf.data.pairs.swap_queries`; reference and ground truth unchanged): a model that
reads the query should collapse there. The result names the control and records its seed.
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import List, Optional, Tuple

import numpy as np

from vreloc_tf.evaluation import metrics
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.contract import INPUT_NAMES, PROBABILITIES, REFERENCE_LENGTH
from vreloc_tf.data.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.files import read_json, write_json_atomic
from vreloc_tf.data.input_pipeline import evaluation_dataset, evaluation_plan, length_sorted
from vreloc_tf.data.pairs import SWAP_SEED_OFFSET, check_pairs, load_pairs, pairs_from_index, save_pairs, swap_queries


# ---------------------------------------------------------------------------
# Shared by evaluate, baselines and the training-time validation
# ---------------------------------------------------------------------------

def resolve_pairs(data_dir: str, split: str, pairs_file: Optional[str] = None, seed: int = 0):
    """(EntryIndex of ``split``, pair list): read ``pairs_file`` if it exists, else make (and save) it."""
    index = load_index(data_dir, split)
    if pairs_file and os.path.exists(pairs_file):
        return index, check_pairs(load_pairs(pairs_file, split), index, pairs_file)
    doc = pairs_from_index(index, seed)
    if pairs_file:
        save_pairs(doc, pairs_file)
        print(f"wrote pair list {pairs_file} ({doc['count']} pairs, {doc['skipped']} queries skipped)",
              file=sys.stderr)
    return index, doc["pairs"]


_PREDICT_FNS = weakref.WeakKeyDictionary()  # model -> its traced predict function (traced once per model)


def inference_probabilities(model):
    """The model's inference-mode probabilities [B, Lr, 4] of a dict of its inputs, as a tf.function
    made once per model (a new one per call would retrace on every validation)."""
    import tensorflow as tf

    probabilities = _PREDICT_FNS.get(model)
    if probabilities is None:
        probabilities = _PREDICT_FNS[model] = tf.function(
            lambda inputs: model(inputs, training=False)[PROBABILITIES], reduce_retracing=True)
    return probabilities


def predict_segments(model, index, plan: np.ndarray, feature_dim: int, mode: str,
                     max_length: Optional[int], batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoded (start, end, score) [N] for the pairs of an evaluation plan, in plan order (score: the
    rule's own, e.g. Eq. 20's value of the chosen segment -- what `vreloc locate` reports).

    Pairs run in batches of similar reference length (less padding); the NumPy
    decoders of :mod:`vreloc_tf.model.decoding` read each example's valid steps only.
    """
    # heavy: TensorFlow (keras.ops); the rest of this module (pair lists, scores) needs none
    from vreloc_tf.model.decoding import decoder

    decode = decoder(mode, numpy=True)
    ordered, inverse = length_sorted(plan)

    probabilities = inference_probabilities(model)
    starts, ends, scores = [], [], []
    for batch in evaluation_dataset(index, ordered, feature_dim, batch_size):
        probs = probabilities({k: batch[k] for k in INPUT_NAMES}).numpy()
        s, e, score = decode(probs, batch[REFERENCE_LENGTH].numpy(), max_length)
        starts.append(s)
        ends.append(e)
        scores.append(score)
    start, end, score = np.concatenate(starts), np.concatenate(ends), np.concatenate(scores)
    return start[inverse], end[inverse], score[inverse]


def score_plan(plan: np.ndarray, start: np.ndarray, end: np.ndarray, method: str, split: str, **extra) -> dict:
    return metrics.score_predictions(start, end, plan[:, 6], plan[:, 7], method, split, **extra)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

CONTROLS = ("swapped-query",)  # `vreloc evaluate --control`

def evaluate_run(run: Run, dataset: Optional[Dataset] = None, split: str = "test",
                 pairs_file: Optional[str] = None, decode: Optional[str] = None,
                 method: Optional[str] = None, seed: int = 0, batch_size: int = 64,
                 checkpoint: Optional[str] = None, control: Optional[str] = None,
                 control_seed: Optional[int] = None) -> dict:
    """Score the selected model of a run (or ``checkpoint``: a step or "last") on a fixed
    pair list; returns the result dict.

    ``dataset`` (opened by the caller) defaults to the run's own data; it must hold the run's
    feature dim and feature spec (:meth:`Run.dataset`).
    ``control="swapped-query"`` scores the pairs with swapped queries (seed ``control_seed``,
    default ``seed + pairs.SWAP_SEED_OFFSET``); the method name then ends in "(swapped query)".
    """
    dataset = run.dataset(dataset)
    model = run.load_model(checkpoint=checkpoint)
    cfg = run.config
    own_rule = cfg.decode_rule
    mode = decode or own_rule
    if control is not None and control not in CONTROLS:
        raise InputError(f"unknown control {control!r}; choose one of {', '.join(CONTROLS)}")
    index, pairs = resolve_pairs(dataset.path, split, pairs_file, seed)
    control_fields = {}
    if control == "swapped-query":
        cseed = seed + SWAP_SEED_OFFSET if control_seed is None else int(control_seed)
        swapped = swap_queries(pairs, index, cseed)
        pairs = swapped["pairs"]
        control_fields = {"control": control, "control_seed": cseed, "control_swapped": swapped["swapped"]}
    plan = evaluation_plan(index, pairs)
    start, end, score = predict_segments(model, index, plan, dataset.feature_dim, mode,
                                         cfg.decode.max_length(mode), batch_size)
    name = method or method_name(cfg) + ("" if mode == own_rule else f" ({mode} decode)")
    if control:
        name += f" ({control.replace('-', ' ')})"
    if checkpoint is None:
        selection = run.manifest.selection or "val_map"  # runs from before the rule was recorded picked by val mAP
        step = run.manifest.best_step
    else:
        selection, step = f"checkpoint {checkpoint}", int(os.path.basename(run.checkpoint_file(checkpoint))[5:-6])
    # what the saved weights are: the student's, or (weak "ours", loss.self_target_as_model) its running average
    weights = run.manifest.extra.get("model_weights", "student")  # runs from before it was recorded saved the student
    # the decoder's score of every answer, in pair order: how sure the model is (a swapped query
    # should get lower ones, docs/QUALITY_HISTORY.md "negative pairs")
    segment_scores = [round(float(v), 6) for v in score]
    return score_plan(plan, start, end, name, split, decode=mode, run_dir=run.path,
                      selection=selection, selected_step=step, model_weights=weights,
                      segment_scores=segment_scores, **control_fields)


def method_name(cfg) -> str:
    """The table name of a run's method: ours full, ours weak, or ours weak (paper) for the paper's objective;
    CGBM (Feng et al.'s model, loss and decoding: the paper's Table 4 name) for model.architecture = cgbm,
    with the loss and decoding named when they are not Feng's (so the "CGBM" row is only ever Feng's method)."""
    if cfg.model.architecture == "cgbm":
        if cfg.supervision != "full":
            return f"CGBM {cfg.supervision}"
        if (cfg.loss.full_losses, cfg.decode_rule) == ("feng", "feng"):
            return "CGBM"
        return f"CGBM ({cfg.loss.full_losses} loss, {cfg.decode_rule} decoding)"
    if cfg.supervision == "weak" and cfg.loss.weak_variant == "paper":
        return "ours weak (paper)"
    return f"ours {cfg.supervision}"


def load_results(paths: List[str]) -> List[dict]:
    """Result dicts from JSON files holding one result or a list of them (`baseline --method all`)."""
    out = []
    for path in paths:
        doc = read_json(path, "result JSON")
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict) or not all(k in item for k in ("method", "map_at_1", "average")):
                raise InputError(f"{path}: not a result JSON (expected objects with 'method', 'map_at_1' and "
                                 f"'average')")
            out.append(item)
    return out


def format_table(results: List[dict], title: str = "") -> str:
    """Several results as one table (re-exported from :mod:`vreloc_tf.evaluation.metrics`)."""
    return metrics.format_table(results, title)


def save_results(results, path: str) -> str:
    """Write one result dict (or a list of them) as JSON; :func:`load_results` reads either."""
    return write_json_atomic(path, results)
