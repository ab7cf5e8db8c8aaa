"""Training a run: `model.fit` under a tf.distribute strategy (full or weak supervision).

:func:`train` takes an opened :class:`~vreloc_tf.data.artifacts.Dataset`, returns the
:class:`~vreloc_tf.data.artifacts.Run` it made, and writes the run folder of :mod:`vreloc_tf.data.artifacts` (config.yaml, run.json,
model.keras = the checkpoint the selection rule prefers, checkpoints/, backup/, logs/). Calling it again
on the same folder resumes from the last finished epoch (BackupAndRestore); a finished run
is left as it is. The data decides the feature dim (:class:`~vreloc_tf.data.artifacts.Dataset`);
``data.feature_dim`` in the config is a checked expectation (null = any).

Run folders refuse to mix: a folder holding a run of another config, a run started on data of
other content, or a finished run of another feature dim or another data source, is an
InputError unless ``overwrite=True``, which starts the folder clean. Before the first step the
folder gets data.json, the SHA-256 of the record files training reads
(:mod:`vreloc_tf.data.fingerprint`), so even an interrupted run knows its data: a path can be reused
for other data, and a copy of the data at another path is still the same data. run.json records
the data's source and fingerprint.

Nothing is written until everything that can be checked without training is: the config's
ranges (:func:`vreloc_tf.config.validate`), the data, the run folder, the indexes and the
model. A refused start leaves the folder as it was, so the corrected command just works.

Determinism: with the same config (seed) and data, the batches of every epoch are the
same whether the run was interrupted or not (see :mod:`vreloc_tf.data.input_pipeline`);
weights then match up to floating-point non-determinism of TensorFlow's kernels, which
``tf.config.experimental.enable_op_determinism()`` removes (the resume test does so).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Optional

from vreloc_tf.data.artifacts import (BACKUP_DIR, CHECKPOINT_DIR, CONFIG_FILE, LOG_DIR, MANIFEST_FILE, DataRecord, Dataset,
                                     Run, RunManifest)
from vreloc_tf.config import Config, load_config, save_config, validate
from vreloc_tf.data.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.files import clear_folder
from vreloc_tf.data.fingerprint import short
from vreloc_tf.data.input_pipeline import evaluation_plan, load_training_index, training_dataset
from vreloc_tf.model.losses import average_is_model
from vreloc_tf.model.functional import build_model
from vreloc_tf.data.pairs import pairs_from_index, subsample
from vreloc_tf.training.strategy import is_chief, make_strategy
from vreloc_tf.training.fit import (RelocTrainer, SeedStateBackup, StepCheckpoint, Timer, ValidationCallback,
                                make_optimizer, resume_epoch, schedule)

log = logging.getLogger(__name__)

RETRY = "choose a new --out, or --overwrite to start the folder clean"


def check_run_folder(cfg: Config, out_dir: str, dataset: Dataset, fingerprint: Optional[str] = None) -> None:
    """InputError if ``out_dir`` holds a run that this one may not continue; writes nothing.

    Refused: another config (resuming must not change the run); a run started on data of another
    content (data.json, or run.json's fingerprint: steps of one run must all see the same data);
    a finished run (run.json) trained on data of another feature dim or another source.
    ``fingerprint``: the data's :meth:`Dataset.content_fingerprint` (computed here if None).
    """
    previous = RunManifest.read(out_dir) if os.path.exists(os.path.join(out_dir, MANIFEST_FILE)) else None
    if previous is not None:
        if int(previous.feature_dim) != dataset.feature_dim:
            raise InputError(f"{out_dir} holds a run trained on {previous.feature_dim}-d features "
                             f"({previous.data_dir}) but {dataset.path} holds {dataset.feature_dim}-d features; {RETRY}")
        if previous.data_source is not None and previous.data_source != dataset.training_source():
            raise InputError(f"{out_dir} holds a run trained on data from another source ({previous.data_dir}: "
                             f"{previous.data_source}) than {dataset.path} ({dataset.training_source()}); {RETRY}")
    record = DataRecord.read(out_dir)
    if record is None and previous is not None and previous.data_fingerprint:
        record = DataRecord(previous.data_fingerprint, previous.data_dir)
    if record is not None:
        fingerprint = fingerprint or dataset.content_fingerprint()
        if record.fingerprint != fingerprint:
            raise InputError(
                f"{out_dir} holds a run started on the data in {record.data_dir} (content fingerprint "
                f"{short(record.fingerprint)}), but the train/val records in {dataset.path} have fingerprint "
                f"{short(fingerprint)}: resuming would train one run on two datasets; resume with the original "
                f"data (--data {record.data_dir}, or an unchanged copy of it), or {RETRY}")
    path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(path):
        previous_cfg = load_config(path)
        if previous_cfg.digest() != cfg.digest():
            raise InputError(f"{out_dir} holds a run with a different config (digest {previous_cfg.digest()} vs "
                             f"{cfg.digest()}); resume with the same config, {RETRY}")


def prepare_run_folder(cfg: Config, out_dir: str, dataset: Dataset, overwrite: bool = False,
                       write: bool = True, fingerprint: Optional[str] = None) -> None:
    """Check that ``out_dir`` may hold this run (:func:`check_run_folder`; or clear it with
    ``overwrite``), then write data.json (the data's content fingerprint) and config.yaml.

    ``write`` False (a non-chief worker): check only; with ``overwrite`` the chief clears the folder.
    """
    validate(cfg, "the config")
    fingerprint = fingerprint or dataset.content_fingerprint()
    if overwrite and write and os.path.isdir(out_dir):
        log.warning("--overwrite: clearing %s", out_dir)
        clear_folder(out_dir)
    if not overwrite or write:
        check_run_folder(cfg, out_dir, dataset, fingerprint)
    if not write:
        return
    os.makedirs(out_dir, exist_ok=True)
    if DataRecord.read(out_dir) is None:
        if os.path.exists(os.path.join(out_dir, CONFIG_FILE)):
            log.warning("%s: a run from before data fingerprints; its data cannot be checked, recording the "
                        "data of this resume (%s, %s)", out_dir, dataset.path, short(fingerprint))
        DataRecord.of(dataset, fingerprint).write(out_dir)
    path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.exists(path):
        save_config(cfg, path)


def train(cfg: Config, dataset: Dataset, out_dir: str, devices: Optional[int] = None,
          callbacks: Optional[list] = None, strategy=None, verbose: Optional[int] = None,
          overwrite: bool = False) -> Run:
    """Train (or resume) a run on ``dataset`` in the folder ``out_dir``; returns the :class:`Run`
    (config, and the RunManifest also written as run.json), for the next stage to take as it is.

    ``dataset`` comes opened (:meth:`Dataset.open`, at the command line or the orchestrator), so bad
    data has already failed before TensorFlow starts.
    """
    validate(cfg, "the config")  # a Config built in code too: before anything is written
    data_dir = dataset.path
    feature_dim = dataset.check_feature_dim(cfg.data.feature_dim)
    started = time.perf_counter()
    fingerprint = dataset.content_fingerprint()
    log.info("data %s: content fingerprint %s (%.1f s)", dataset.path, short(fingerprint),
             time.perf_counter() - started)
    if not overwrite:
        check_run_folder(cfg, out_dir, dataset, fingerprint)  # refuse before TensorFlow starts

    import keras

    strategy = strategy or make_strategy(devices)
    chief = is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise InputError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {replicas} replicas")

    keras.utils.set_random_seed(cfg.seed)
    if cfg.train.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # the same config and data give the same weights
    index = load_training_index(cfg, data_dir, "train")
    val_index = load_index(data_dir, "val")
    val_pairs = subsample(pairs_from_index(val_index, cfg.seed)["pairs"], cfg.train.validation_pairs, cfg.seed)
    if not val_pairs:
        raise InputError(f"{data_dir}: the val split gives no evaluation pairs")
    val_plan = evaluation_plan(val_index, val_pairs)

    steps_per_epoch, epochs = schedule(cfg)
    backup_dir = os.path.join(out_dir, BACKUP_DIR)

    with strategy.scope():
        net = build_model(cfg, feature_dim)
        trainer = RelocTrainer(cfg, net)
        trainer.compile(optimizer=make_optimizer(cfg))

    validation = ValidationCallback(cfg, val_index, val_plan, feature_dim, out_dir, steps_per_epoch, backup_dir,
                                    write=chief)
    # the first write: everything above could still refuse this start without leaving a trace
    prepare_run_folder(cfg, out_dir, dataset, overwrite, chief, fingerprint)
    start_epoch = resume_epoch(backup_dir)
    if start_epoch:
        log.info("resuming %s from epoch %d (step %d)", out_dir, start_epoch, start_epoch * steps_per_epoch)
    timer = Timer()
    all_callbacks = [
        validation,
        StepCheckpoint(os.path.join(out_dir, CHECKPOINT_DIR), cfg.train.checkpoint_every, steps_per_epoch,
                       cfg.train.steps, write=chief),
        keras.callbacks.TensorBoard(os.path.join(out_dir, LOG_DIR), update_freq="epoch"),
        keras.callbacks.BackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False),
        SeedStateBackup(backup_dir, write=chief),
        timer,
    ] + list(callbacks or [])
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if start_epoch < epochs:
        batches = training_dataset(cfg, index, feature_dim, steps_per_epoch, start_epoch, epochs)
        trainer.fit(batches, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, shuffle=False,
                    verbose=verbose)
        seconds = timer.seconds
    else:
        validation.on_train_begin()
        seconds = 0.0
        log.info("%s: already trained for %d steps", out_dir, cfg.train.steps)

    manifest = RunManifest(
        data_dir=dataset.path, feature_dim=feature_dim, supervision=cfg.supervision,
        pca_file=dataset.pca_file, frames_per_feature=dataset.frames_per_feature,
        data_source=dataset.training_source(), data_fingerprint=fingerprint,
        features=dataset.feature_spec.to_json() if dataset.feature_spec else None,
        steps=int(trainer.optimizer.iterations.numpy()) if start_epoch < epochs else cfg.train.steps,
        best_step=validation.best_step, best_val_average=validation.best_val, train_seconds=seconds,
        selection=cfg.selection_rule, decode=cfg.decode_rule,
        extra={"config_digest": cfg.digest(), "replicas": replicas, "strategy": type(strategy).__name__,
               "resumed_from_step": start_epoch * steps_per_epoch, "validation_pairs": len(val_pairs),
               "model_weights": "student_average" if average_is_model(cfg) else "student",
               "validation_history": validation.history})
    if chief:
        manifest.write(out_dir)
    best = "n/a" if manifest.best_val_average is None else f"{manifest.best_val_average:.1f}"
    print(f"trained {manifest.steps} steps in {seconds:.1f} s; model.keras = step {manifest.best_step} "
          f"(selection {manifest.selection}; val average there {best})")
    return Run(out_dir, cfg, manifest)
