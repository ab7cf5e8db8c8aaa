"""The `model.fit` wrapper: loss, optimizer, learning-rate schedule and the callbacks of a run.

:class:`RelocTrainer` wraps the functional inference model of
:func:`vreloc_tf.model.functional.build_model` (``self.net``, the model that is saved as
``model.keras``) and overrides ``compute_loss`` (and extends ``train_step`` by one update
after it, below): Keras' own ``train_step`` does the forward pass, the gradient tape and the
optimizer update, also per replica under a tf.distribute strategy. The loss is :func:`vreloc_tf.model.losses.total_loss` at the current
optimizer step (the co-attention masks switch on after the warm-up; weak "ours" blends in the
segments of the student's running average, :class:`vreloc_tf.model.student_average.StudentAverage`,
which ``train_step`` updates after each optimizer step), divided by the
number of replicas as Keras does for its compiled losses (gradients are summed across
replicas; :func:`vreloc_tf.training.strategy.scale_loss_for_replicas`). The model is built before
``fit()`` (:class:`vreloc_tf.model.keras_compat.PrebuiltFit` explains why that matters).

Optimizer (paper, Implementation Details): Adam, learning rate
``lr * factor ** (step // decay_steps)`` (staircase exponential decay: 1e-3 divided by 10
every 200 steps), gradients clipped by global norm ``cfg.train.clip_norm`` (5.0, Feng's
code).

Callbacks, in order: :class:`ValidationCallback` (mAP@1 on the fixed val pair list, and the
checkpoint the selection rule prefers as ``model.keras``), :class:`StepCheckpoint` (``checkpoints/step-NNNNNN.keras``),
TensorBoard (``logs/``: loss, learning rate, validation metrics per epoch, i.e. per
validation), BackupAndRestore (``backup/``, end of every epoch).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from typing import Optional

import keras
import numpy as np

from vreloc_tf.data.artifacts import MODEL_FILE
from vreloc_tf.config import Config
from vreloc_tf.contract import INPUT_NAMES, PROBABILITIES, SELF_TARGET
from vreloc_tf.errors import DataError, InputError
from vreloc_tf.evaluation.scoring import inference_probabilities, predict_segments, score_plan
from vreloc_tf.files import atomic_path, read_json, write_json_atomic
from vreloc_tf.data.input_pipeline import evaluation_dataset, length_sorted, teacher_options
from vreloc_tf.model.keras_compat import PrebuiltFit
from vreloc_tf.model.losses import (average_is_model, per_example_loss, total_loss, truncated_mean, truncation_fraction,
                              uses_self_target)
from vreloc_tf.training.strategy import is_multi_worker, scale_loss_for_replicas
from vreloc_tf.model.student_average import StudentAverage


class RelocTrainer(PrebuiltFit, keras.Model):
    """Training wrapper around the inference model: the loss, and for weak "ours" the running average."""

    def __init__(self, cfg: Config, net: keras.Model, **kwargs):
        super().__init__(name="vreloc_trainer", **kwargs)
        self.cfg = cfg
        self.net = net
        # weak "ours": the running average of the student whose segments join the target (None if unused)
        self.student_average = StudentAverage(net, cfg.loss.self_target_momentum) if uses_self_target(cfg) else None
        self.built = True  # the wrapped functional model is built

    def call(self, inputs, training=False):
        return self.net({k: inputs[k] for k in INPUT_NAMES}, training=training)

    def train_step(self, data):
        logs = super().train_step(data)
        if self.student_average is not None:
            self.student_average.update(self.net)  # after the optimizer step
        if is_multi_worker(self.distribute_strategy):
            # Keras reduces the step logs across workers with strategy.reduce("MEAN", v, axis=0),
            # which needs an axis that scalar logs do not have: give them one.
            logs = {k: keras.ops.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.student_average is not None:
            inputs = {k: x[k] for k in INPUT_NAMES}
            x = {**x, SELF_TARGET: self.student_average.segments(self.net, inputs, self.cfg.decode.full_max_length)}
        loss = total_loss(self.cfg, x, y_pred[PROBABILITIES], self.optimizer.iterations)
        return scale_loss_for_replicas(loss)


def saved_weights(trainer: keras.Model):
    """A context in which ``trainer.net`` holds the weights a run saves and evaluates as its model.

    The student's own, except for weak "ours" with ``loss.self_target_as_model``: there the
    running average's (:meth:`vreloc_tf.model.student_average.StudentAverage.swapped_into`).
    """
    average = getattr(trainer, "student_average", None)
    if average is not None and average_is_model(trainer.cfg):
        return average.swapped_into(trainer.net)
    return contextlib.nullcontext(trainer.net)


def make_optimizer(cfg: Config) -> keras.optimizers.Optimizer:
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg.train.learning_rate, decay_steps=cfg.train.lr_decay_steps, decay_rate=cfg.train.lr_decay_factor,
        staircase=True)
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=cfg.train.clip_norm)


def schedule(cfg: Config, steps: Optional[int] = None):
    """(steps_per_epoch, epochs): an epoch ends at every validation point.

    Validation happens every ``validate_every`` steps and at the last step; the epoch is
    the largest length that hits all of them (gcd), e.g. 600 steps, validate_every 100 ->
    6 epochs of 100; 250 steps -> 5 epochs of 50 (validating at 100, 200, 250).
    """
    steps = int(cfg.train.steps if steps is None else steps)
    if steps < 1:
        raise ValueError(f"train.steps must be >= 1, got {steps}")
    every = max(1, min(int(cfg.train.validate_every), steps))
    per_epoch = math.gcd(steps, every)
    return per_epoch, steps // per_epoch


BEST_STATE = "best.json"


_SEGMENT_FNS = weakref.WeakKeyDictionary()  # StudentAverage -> {(id(student), max_length): traced segments}


def _average_segments(average, model, max_length):
    """``average.segments(model, inputs, max_length)`` as a tf.function made once per (average, model),
    so that validations do not retrace it."""
    import tensorflow as tf

    functions = _SEGMENT_FNS.setdefault(average, {})
    key = (id(model), max_length)  # the function holds the model: its id is not reused while cached
    if key not in functions:
        # autograph=False: plain ops, no Python control flow on tensors to convert
        functions[key] = tf.function(lambda inputs: average.segments(model, inputs, max_length),
                                     reduce_retracing=True, autograph=False)
    return functions[key]


def objective_on_plan(model, index, plan: np.ndarray, feature_dim: int, cfg: Config, step: int,
                      batch_size: int = 64, average=None) -> float:
    """The mean training objective (:func:`vreloc_tf.model.losses.per_example_loss`) over an evaluation plan.

    For weak supervision this reads no labels: "paper" is the co-attention loss of the raw
    features, "ours" the cross-entropy against the label-free teacher's segments, blended with
    the segments of ``average`` (the run's :class:`~vreloc_tf.model.student_average.StudentAverage`)
    when the config uses a self target; it is the ``label_free`` selection criterion.
    """
    if cfg.supervision != "weak":
        raise ValueError("objective_on_plan: the label-free criterion exists for weak supervision only")
    if uses_self_target(cfg) and average is None:
        raise ValueError("objective_on_plan: this config blends in the student's running average (loss.self_target_*); "
                         "pass the run's StudentAverage as average=")
    ordered, _ = length_sorted(plan)
    probabilities = inference_probabilities(model)
    if uses_self_target(cfg):
        # the self target at its full weight at every step, so that steps compare like with like
        step = max(int(step), int(cfg.loss.self_target_start) + int(cfg.loss.self_target_ramp_steps))
        segments = _average_segments(average, model, cfg.decode.full_max_length)
        with_target = lambda batch, inputs: dict(batch, self_target=segments(inputs))  # noqa: E731
    else:
        with_target = lambda batch, inputs: batch  # noqa: E731
    losses = []
    for batch in evaluation_dataset(index, ordered, feature_dim, batch_size, teacher=teacher_options(cfg)):
        inputs = {k: batch[k] for k in INPUT_NAMES}
        losses.append(np.asarray(per_example_loss(cfg, with_target(batch, inputs), probabilities(inputs), step)))
    if not losses:
        return 0.0
    # the objective as trained: with loss.teacher_truncation, the mean of all but the highest-loss
    # pairs (the full fraction at every step, so that steps compare like with like)
    return float(truncated_mean(np.concatenate(losses), truncation_fraction(cfg)))


class ValidationCallback(keras.callbacks.Callback):
    """Validation at validation points: val mAP@1 (logged) and the selection criterion.

    ``model.keras`` is the checkpoint the run's selection rule (``Config.selection_rule``)
    prefers: ``val_map`` the highest labelled val mAP@1, ``label_free`` the lowest training
    objective on val pairs (no labels read; weak supervision), ``last`` the last one. The
    val mAP@1 is still logged for every rule -- to watch a run, never to pick a weak model.
    What is validated and saved is the model of :func:`saved_weights` (for weak "ours" the
    student's running average; the student's own val mAP@1 is then logged beside it).
    """

    def __init__(self, cfg: Config, index, plan: np.ndarray, feature_dim: int, run_dir: str,
                 steps_per_epoch: int, state_dir: str, write: bool = True, batch_size: int = 64):
        super().__init__()
        self.cfg, self.index, self.plan, self.feature_dim = cfg, index, plan, feature_dim
        self.rule = cfg.selection_rule
        if self.rule == "label_free" and cfg.supervision != "weak":
            raise InputError("train.selection=label_free needs weak supervision (full supervision has labels: "
                             "use val_map or last)")
        self.mode, self.max_length = cfg.decode_rule, cfg.decode_max_length
        self.run_dir, self.state_dir, self.write = run_dir, state_dir, write
        self.steps_per_epoch, self.total_steps = steps_per_epoch, cfg.train.steps
        self.validate_every = min(cfg.train.validate_every, cfg.train.steps)
        self.batch_size = batch_size
        self.best_val, self.best_step, self.best_criterion, self.history = None, None, None, []

    @property
    def _state_path(self):
        return os.path.join(self.state_dir, BEST_STATE)

    def on_train_begin(self, logs=None):
        if os.path.exists(self._state_path):  # a resumed run keeps its best so far
            state = read_json(self._state_path, "validation state")
            self.best_val, self.best_step, self.history = state["best_val"], state["best_step"], state["history"]
            self.best_criterion = state.get("best_criterion")

    def _better(self, criterion: float) -> bool:
        if self.best_criterion is None or self.rule == "last":
            return True
        return criterion > self.best_criterion if self.rule == "val_map" else criterion < self.best_criterion

    def _score(self, net) -> dict:
        start, end, _ = predict_segments(net, self.index, self.plan, self.feature_dim, self.mode, self.max_length,
                                         self.batch_size)
        return score_plan(self.plan, start, end, "val", "val")

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        if step % self.validate_every and step != self.total_steps:
            return
        entry = {"step": step, "loss": (logs or {}).get("loss")}
        average = getattr(self.model, "student_average", None)
        if average is not None and average_is_model(self.cfg):
            # the model is the running average; the student's own val mAP@1 is logged beside it (to watch)
            entry["student_val_average"] = self._score(self.model.net)["average"]
        with saved_weights(self.model) as net:
            result = self._score(net)
            entry["average"] = result["average"]
            if self.rule == "label_free":
                entry["objective"] = objective_on_plan(net, self.index, self.plan, self.feature_dim, self.cfg, step,
                                                       self.batch_size, average=average)
            criterion = {"val_map": result["average"], "label_free": entry.get("objective"), "last": step}[self.rule]
            if self._better(criterion):
                self.best_val, self.best_step, self.best_criterion = result["average"], step, criterion
                if self.write:
                    with atomic_path(os.path.join(self.run_dir, MODEL_FILE)) as tmp:
                        net.save(tmp)
        if logs is not None:
            logs["val_average"] = result["average"]
            for k, v in result["map_at_1"].items():
                logs[f"val_map_iou{k}"] = v
            if "objective" in entry:
                logs["val_objective"] = entry["objective"]
        self.history.append(entry)
        if self.write:
            write_json_atomic(self._state_path, {"best_val": self.best_val, "best_step": self.best_step,
                                                 "best_criterion": self.best_criterion, "history": self.history})


class StepCheckpoint(keras.callbacks.Callback):
    """``checkpoints/step-NNNNNN.keras`` (the inference model, :func:`saved_weights`) every ``every`` steps
    and at the end."""

    def __init__(self, directory: str, every: int, steps_per_epoch: int, total_steps: int, write: bool = True):
        super().__init__()
        self.directory, self.every, self.steps_per_epoch = directory, max(1, int(every)), steps_per_epoch
        self.total_steps, self.write = total_steps, write
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + batch + 1
        if self.write and (step % self.every == 0 or step == self.total_steps):
            os.makedirs(self.directory, exist_ok=True)
            with saved_weights(self.model) as net:
                net.save(os.path.join(self.directory, f"step-{step:06d}.keras"))


def _sublayers(layer) -> list:
    """The layers inside ``layer``, through public attributes only."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, keras.layers.RNN):
        return [layer.cell]
    return list(getattr(layer, "layers", ()))


def seed_generators(model: keras.Model) -> list:
    """Every keras SeedGenerator of a model (the dropout masks of Dropout and RNN cells), in layer order.

    Walks ``model.layers`` (into wrapped models, Bidirectional's two directions and RNN
    cells) and takes each layer's public ``seed_generator``.
    """
    out, pending = [], [model]
    while pending:
        layer = pending.pop(0)
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            out.append(generator)
        pending[:0] = _sublayers(layer)
    return out


class SeedStateBackup(keras.callbacks.Callback):
    """Backs up the dropout seed-generator states with BackupAndRestore's epochs.

    Keras' ``save_weights`` (what BackupAndRestore stores) leaves out the states of
    ``SeedGenerator``s, so a resumed run would replay the dropout masks of step 0; this
    stores them at every epoch end and restores them on resume.
    """

    FILE = "seed_states.npz"

    def __init__(self, backup_dir: str, write: bool = True):
        super().__init__()
        self.path = os.path.join(backup_dir, self.FILE)
        self.write = write

    def on_train_begin(self, logs=None):
        if os.path.exists(self.path):
            saved = np.load(self.path)
            gens = seed_generators(self.model)
            if len(saved.files) != len(gens):
                raise DataError(f"{self.path}: {len(saved.files)} seed states for {len(gens)} generators")
            for i, sg in enumerate(gens):
                sg.state.assign(saved[f"s{i}"])

    def on_epoch_end(self, epoch, logs=None):
        if self.write:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            states = {f"s{i}": np.asarray(sg.state.numpy()) for i, sg in enumerate(seed_generators(self.model))}
            with atomic_path(self.path) as tmp:
                np.savez(tmp, **states)


class Timer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def resume_epoch(backup_dir: str) -> int:
    """The epoch BackupAndRestore will resume from (0 for a fresh run)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    return int(read_json(path, "BackupAndRestore state")["epoch"])
