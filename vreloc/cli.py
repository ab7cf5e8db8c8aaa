"""The ``vreloc`` console script: a dispatcher over :mod:`vreloc.commands`, and the one error path.

Why one error path: a bad input (a missing folder, a wrong config value, a corrupt file)
should cost the user one line that says what is wrong, where, and what to do -- not a
traceback. Every subcommand runs inside :func:`main`, which turns
:class:`vreloc_tf.errors.InputError` (and the OS/value errors of bad paths and values)
into ``vreloc CMD: error: ...`` on stderr and exit code 2; anything else is a bug and
exits 1 with a one-line summary. ``--debug`` shows the full traceback instead.

Command modules are imported only when their subcommand runs, so ``vreloc --help`` is
instant and does not load TensorFlow.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from vreloc_tf import __version__
from vreloc_tf.errors import InputError

# name -> one-line help; the module is vreloc.commands.<name with '-' as '_'>
COMMANDS = {
    "synth": "write a synthetic ActivityNet-format dataset (HDF5 + split JSONs)",
    "ingest-activitynet": "Beam job: ActivityNet C3D HDF5 + split JSONs -> sharded TFRecords",
    "extract-video": "Beam job: raw videos -> C3D -> PCA -> sharded TFRecords",
    "train": "train a model with model.fit under MirroredStrategy (full or weak supervision)",
    "evaluate": "score a trained model on a fixed pair list (mAP@1 at IoU 0.5..0.9)",
    "baseline": "score the random / statistical-prior / frame-level baselines",
    "export": "export a trained model as a TF Serving SavedModel version",
    "serve": "serve exported models over TF Serving's gRPC API",
    "query": "send a query/reference pair to a gRPC server and print the segment",
    "locate": "find a query clip in a long reference video file",
    "visualize": "plot multiscale attention maps and probabilities (paper Figure 4)",
    "pipeline": "run the whole job: features -> train -> evaluate -> push",
    "bench": "measure throughput and latency of every stage",
    "quality": "train and score every method on every data family over seeds (docs/QUALITY.md)",
    "index": "library index for search: build (a Beam job), add, remove, info",
    "search": "find a clip in a library index: ANN proposes, the model re-localizes and ranks",
    "evaluate-search": "recall@k and latency of library search vs the exhaustive model on a split",
}

INPUT_ERRORS = (InputError, OSError, ValueError)  # bad paths, files and values: exit 2, one line


def command_module(name: str):
    return importlib.import_module(f"vreloc.commands.{name.replace('-', '_')}")


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps the subparser from resetting them.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="more logging (-v info, -vv debug)")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show the full traceback of an error")


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vreloc",
        description="vreloc-tf: video re-localization (Huang et al., AAAI 2020) on TensorFlow/Keras.",
    )
    parser.add_argument("--version", action="version", version=f"vreloc-tf {__version__}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(sp, top=False)
        if name == selected:
            command_module(name).add_arguments(sp)
    return parser


def _selected_command(argv: List[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def one_line(exc: BaseException) -> str:
    """The error message on one line (multi-line messages are joined)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_selected_command(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)] if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # importing Beam configures the root logger first; ours must win
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(command_module(args.command).main(args) or 0)
    except KeyboardInterrupt:
        print(f"vreloc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one error path of every command
        if args.debug:
            raise
        if isinstance(exc, INPUT_ERRORS):
            print(f"vreloc {args.command}: error: {one_line(exc)}", file=sys.stderr)
            return 2
        print(f"vreloc {args.command}: internal error: {type(exc).__name__}: {one_line(exc)} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
