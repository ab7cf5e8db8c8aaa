"""The ``vreloc`` console script: one subcommand per stage of the system.

Each subcommand lives in its own module, which defines ``add_arguments(parser)``
and ``main(args) -> int``. Modules are imported only when their subcommand is
used, so ``vreloc --help`` is instant and does not load TensorFlow. A
subcommand whose module does not exist yet says so and exits non-zero.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from vreloc_tf import __version__

# name -> (module, one-line help, issue that builds it)
SUBCOMMANDS = {
    "synth": ("pipeline.synth", "write a synthetic ActivityNet-format dataset (HDF5 + split JSONs)", 3),
    "ingest-activitynet": ("pipeline.ingest_activitynet", "Beam job: ActivityNet C3D HDF5 + split JSONs -> sharded TFRecords", 3),
    "extract-video": ("pipeline.extract_video", "Beam job: raw videos -> C3D -> PCA -> sharded TFRecords", 3),
    "train": ("vreloc_tf.train", "train a model with model.fit under MirroredStrategy (full or weak supervision)", 5),
    "evaluate": ("vreloc_tf.evaluate", "score a trained model on a fixed pair list (mAP@1 at IoU 0.5..0.9)", 5),
    "baseline": ("vreloc_tf.baselines", "score the random / statistical-prior / frame-level baselines", 5),
    "export": ("serving.export", "export a trained model as a TF Serving SavedModel version", 6),
    "serve": ("serving.server", "serve exported models over TF Serving's gRPC API", 6),
    "query": ("serving.client", "send a query/reference pair to a gRPC server and print the segment", 6),
    "locate": ("vreloc_tf.locate", "find a query clip in a long reference video file", 7),
    "visualize": ("vreloc_tf.visualize", "plot multiscale attention maps and probabilities (paper Figure 4)", 7),
    "pipeline": ("vreloc_tf.orchestrator", "run the whole job: features -> train -> evaluate -> push", 7),
    "bench": ("vreloc_tf.bench", "measure throughput and latency of every stage", 7),
}


class NotBuiltYet(RuntimeError):
    pass


def _load(name: str):
    module_name, _, issue = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotBuiltYet(f"vreloc {name}: not built yet (module {module_name} is planned in issue {issue})") from None
        raise
    if not hasattr(module, "main") or not hasattr(module, "add_arguments"):
        raise NotBuiltYet(f"vreloc {name}: not built yet ({module_name} has no add_arguments/main)")
    return module


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vreloc",
        description="vreloc-tf: video re-localization (Huang et al., AAAI 2020) on TensorFlow/Keras.",
    )
    parser.add_argument("--version", action="version", version=f"vreloc-tf {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text, _) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).add_arguments(sp)
    return parser


def _selected_command(argv: List[str]) -> Optional[str]:
    for token in argv:
        if token.startswith("-"):
            continue
        return token if token in SUBCOMMANDS else None
    return None


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = _selected_command(argv)
    try:
        parser = build_parser(selected)
    except NotBuiltYet as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)] if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # importing Beam configures the root logger first; ours must win
    )
    if args.command is None:
        parser.print_help()
        return 2
    return int(_load(args.command).main(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
