"""`vreloc export`: a trained run as one TF Serving SavedModel version, BASE/NAME/<version>/."""
from __future__ import annotations

import argparse

from serving.export import CONFIG_LIMIT, export_model
from vreloc_tf.contract import DECODE_RULES
from vreloc_tf.data.artifacts import Run
from vreloc_tf.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="training run folder (vreloc train --out)")
    parser.add_argument("--out", required=True, metavar="BASE/NAME",
                        help="model folder; the version goes to BASE/NAME/<version>/ (NAME = the served model name)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    parser.add_argument("--decode", choices=DECODE_RULES, default=None,
                        help="decoding rule in the graph (default: the run's own, Config.decode_rule)")
    parser.add_argument("--max-length", default="config", metavar="N|none",
                        help="segment-length limit of the rule (default: the run config's limit for that rule)")
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True,
                        help="compile the model call with XLA (default: on, faster; --no-xla where versions are "
                             "hot-swapped often: TensorFlow keeps every XLA program, serving/README.md 'Versions')")


def parse_max_length(text: str):
    """--max-length: 'config' -> the config's limit, 'none' -> unlimited, else a positive integer."""
    if text == "config":
        return CONFIG_LIMIT
    if text.lower() == "none":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise InputError(f"--max-length must be a positive integer or 'none', got {text!r}")


def main(args: argparse.Namespace) -> int:
    export = export_model(Run.open(args.model), args.out, args.version, args.decode, parse_max_length(args.max_length),
                          jit_compile=args.xla)
    print(f"exported {export.model_name} version {export.version} to {export.path}")
    return 0
