"""`vreloc train`: train a model with `model.fit` under a tf.distribute strategy (full or weak).

    vreloc train --config FILE --data DIR --out RUN_DIR [--set k=v ...] [--devices N] [--steps N]

Writes the run folder of :mod:`vreloc_tf.run_dir` (config.yaml, run.json, model.keras = best
by validation average, checkpoints/, backup/, logs/). Running the same command again on
the same ``--out`` resumes from the last finished epoch (BackupAndRestore); a finished
run is left as it is. The feature dim comes from the data folder's manifest.

Determinism: with the same config (seed) and data, the batches of every epoch are the
same whether the run was interrupted or not (see :mod:`vreloc_tf.input_pipeline`);
weights then match up to floating-point non-determinism of TensorFlow's kernels, which
``tf.config.experimental.enable_op_determinism()`` removes (the resume test does so).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

from vreloc_tf.config import Config, apply_overrides, load_config, save_config
from vreloc_tf.run_dir import (BACKUP_DIR, CHECKPOINT_DIR, CONFIG_FILE, LOG_DIR, RunManifest, load_run_config,
                               write_run_manifest)

log = logging.getLogger(__name__)


def _prepare_out_dir(cfg: Config, out_dir: str, write: bool) -> None:
    path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(path):
        previous = load_run_config(out_dir)
        if previous.digest() != cfg.digest():
            raise ValueError(f"{out_dir} holds a run with a different config (digest {previous.digest()} vs "
                             f"{cfg.digest()}); resume with the same config or choose a new --out")
    elif write:
        os.makedirs(out_dir, exist_ok=True)
        save_config(cfg, path)


def train(cfg: Config, data_dir: str, out_dir: str, devices: Optional[int] = None,
          callbacks: Optional[list] = None, strategy=None, verbose: Optional[int] = None) -> RunManifest:
    """Train (or resume) a run; returns its RunManifest (also written as run.json)."""
    import keras

    from vreloc_tf.entry_index import load_index
    from vreloc_tf.input_pipeline import evaluation_plan, load_training_index, training_dataset
    from vreloc_tf.model import build_model
    from vreloc_tf.pairs import pairs_from_index, subsample
    from vreloc_tf.schema import read_manifest
    from vreloc_tf.strategy import is_chief, make_strategy
    from vreloc_tf.training import (RelocTrainer, SeedStateBackup, StepCheckpoint, Timer, ValidationCallback, make_optimizer,
                                    resume_epoch, schedule)

    strategy = strategy or make_strategy(devices)
    chief = is_chief(strategy)
    data_manifest = read_manifest(data_dir)
    feature_dim = int(data_manifest["feature_dim"])
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} is not divisible by the {replicas} replicas")
    _prepare_out_dir(cfg, out_dir, chief)

    keras.utils.set_random_seed(cfg.seed)
    index = load_training_index(cfg, data_dir, "train")
    val_index = load_index(data_dir, "val")
    val_pairs = subsample(pairs_from_index(val_index, cfg.seed)["pairs"], cfg.train.validation_pairs, cfg.seed)
    if not val_pairs:
        raise ValueError(f"{data_dir}: the val split gives no evaluation pairs")
    val_plan = evaluation_plan(val_index, val_pairs)

    steps_per_epoch, epochs = schedule(cfg)
    backup_dir = os.path.join(out_dir, BACKUP_DIR)
    start_epoch = resume_epoch(backup_dir)
    if start_epoch:
        log.info("resuming %s from epoch %d (step %d)", out_dir, start_epoch, start_epoch * steps_per_epoch)

    with strategy.scope():
        net = build_model(cfg, feature_dim)
        trainer = RelocTrainer(cfg, net)
        trainer.compile(optimizer=make_optimizer(cfg))

    validation = ValidationCallback(val_index, val_plan, feature_dim, cfg.supervision, cfg.decode_max_length,
                                    out_dir, steps_per_epoch, min(cfg.train.validate_every, cfg.train.steps),
                                    cfg.train.steps, backup_dir, write=chief)
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
        dataset = training_dataset(cfg, index, feature_dim, steps_per_epoch, start_epoch, epochs)
        trainer.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=all_callbacks, shuffle=False,
                    verbose=verbose)
        seconds = timer.seconds
    else:
        validation.on_train_begin()
        seconds = 0.0
        log.info("%s: already trained for %d steps", out_dir, cfg.train.steps)

    manifest = RunManifest(
        data_dir=os.path.abspath(data_dir), feature_dim=feature_dim, supervision=cfg.supervision,
        pca_file=data_manifest.get("pca_file"),
        frames_per_feature=int(data_manifest.get("frames_per_feature", cfg.data.frames_per_feature)),
        steps=int(trainer.optimizer.iterations.numpy()) if start_epoch < epochs else cfg.train.steps,
        best_step=validation.best_step, best_val_average=validation.best_val, train_seconds=seconds,
        extra={"config_digest": cfg.digest(), "replicas": replicas, "strategy": type(strategy).__name__,
               "resumed_from_step": start_epoch * steps_per_epoch, "validation_pairs": len(val_pairs),
               "validation_history": validation.history})
    if chief:
        write_run_manifest(out_dir, manifest)
    best = "n/a" if manifest.best_val_average is None else f"{manifest.best_val_average:.1f}"
    print(f"trained {manifest.steps} steps in {seconds:.1f} s; best val average {best} at step {manifest.best_step}")
    return manifest


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="config YAML (or a name in configs/: tiny, paper_full, ...)")
    parser.add_argument("--data", required=True, metavar="DIR", help="TFRecord data folder (train and val splits)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (resumed if it exists)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set supervision=weak (repeatable)")
    parser.add_argument("--devices", type=int, help="replicas: N GPUs, or N logical CPU devices without GPUs")
    parser.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")


def main(args) -> int:
    overrides: List[str] = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.config, overrides)
    if args.devices is not None and args.devices > 1:
        from vreloc_tf.strategy import split_cpu
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            split_cpu(args.devices)
    train(cfg, args.data, args.out, devices=args.devices)
    return 0


__all__ = ["train", "apply_overrides"]
