"""`vreloc train`: train (or resume) a run folder with model.fit under a tf.distribute strategy.

    vreloc train --config FILE --data DIR --out RUN_DIR [--set k=v ...] [--devices N] [--steps N] [--overwrite]
"""
from __future__ import annotations

import argparse

from vreloc_tf.config import load_config
from vreloc_tf.data.artifacts import Dataset
from vreloc_tf.errors import InputError
from vreloc_tf.training.strategy import split_cpu


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config YAML (or a name in configs/: tiny, paper_full, ...)")
    parser.add_argument("--data", required=True, metavar="DIR", help="TFRecord data folder (train and val splits)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (resumed if it exists)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set supervision=weak (repeatable)")
    parser.add_argument("--devices", type=int, help="replicas: N GPUs, or N logical CPU devices without GPUs")
    parser.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start RUN_DIR clean even if it holds a run of other data or another config")


def main(args: argparse.Namespace) -> int:
    """Load and check everything (config ranges, flags) before `train` writes anything."""
    from vreloc_tf.training.run import train  # heavy: TensorFlow, loaded when training runs, not for --help

    for flag, value in (("--steps", args.steps), ("--devices", args.devices)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.config, overrides)  # InputError naming the key, value and legal range
    dataset = Dataset.open(args.data)  # bad data fails here, before TensorFlow starts
    if args.devices is not None and args.devices > 1:
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            split_cpu(args.devices)
    train(cfg, dataset, args.out, devices=args.devices, overwrite=args.overwrite)
    return 0
