"""The ``vreloc`` console script: a dispatcher over :mod:`vreloc.commands`, and the one error path.

Why one error path: a bad input (a missing folder, a wrong config value, a corrupt file)
should cost the user one line that says what is wrong, where, and what to do -- not a
traceback; and a bug of ours must not read as the user's fault. Every subcommand runs inside
:func:`main`, on :func:`vreloc_tf.errors.run_guarded` (the path the ``python -m`` entry points
take too): :class:`vreloc_tf.errors.InputError` (and an OSError about the user's path or disk)
becomes ``vreloc CMD: error: ...`` on stderr and exit code 2; anything else is a bug and exits 1
with ``vreloc CMD: internal error: TYPE: MESSAGE -- this is a bug, please report it (rerun with
--debug for the traceback)``. ``--debug`` shows the full traceback instead. Argument errors are
one line too, with the closest flag, command or choice when there is one
(``unrecognized arguments: --topk (did you mean --top-k?)``).

Why quiet: TensorFlow's C++ start-up notices (oneDNN, CUDA factories, absl), its Python
INFO lines, Beam's runner chatter and the like would come before the one line of answer
or error, on every command. :func:`quiet_start` turns them off in one place, before
anything imports TensorFlow; ``-v`` leaves them on. Our own loggers (``vreloc``,
``vreloc_tf``, ``pipeline``, ``serving``) keep their INFO progress lines and warnings.

Command modules are imported only when their subcommand runs, so ``vreloc --help`` is
instant and does not load TensorFlow.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.abc
import importlib.util
import logging
import os
import re
import subprocess
import sys
import warnings
from typing import List, Optional, Sequence

from vreloc_tf import __version__
from vreloc_tf.errors import run_guarded, wants_debug
from vreloc_tf.suggest import closest, is_flag

# name -> one-line help; the module is vreloc.commands.<name with '-' as '_'>
COMMANDS = {
    "benchmark": "the benchmark's split files (Feng et al.): fetch them (pinned, sha256-checked) or show where they are",
    "synth": "write a synthetic ActivityNet-format dataset (HDF5 + split JSONs)",
    "ingest-activitynet": "Beam job: ActivityNet C3D HDF5 + split JSONs -> sharded TFRecords",
    "extract-video": "Beam job: raw videos (annotated, or a plain folder) -> a backbone -> PCA -> sharded TFRecords",
    "train": "train a model with model.fit under MirroredStrategy (full or weak supervision)",
    "evaluate": "score a trained model on a fixed pair list (mAP@1 at IoU 0.5..0.9)",
    "baseline": "score the random / statistical-prior / frame-level baselines",
    "export": "export a trained model as a TF Serving SavedModel version",
    "serve": "serve exported models over TF Serving's gRPC API",
    "query": "send a query/reference pair to a gRPC server and print the segment",
    "locate": "find a query clip in a long reference video file",
    "features": "write a video's (or a cut's) features as .npy, made like a data folder's, run's, export's or index's",
    "visualize": "plot multiscale attention maps and probabilities (paper Figure 4)",
    "pipeline": "run the whole job: features -> train -> evaluate -> push",
    "bench": "measure throughput and latency of every stage",
    "quality": "train and score every method on every data family over seeds (docs/QUALITY.md)",
    "index": "library index for search: build (a Beam job), add, remove, info",
    "search": "find a clip in a library index: ANN proposes, the model re-localizes and ranks",
    "evaluate-search": "recall@k and latency of library search vs the exhaustive model on a split",
}


# -- quiet start-up -------------------------------------------------------------------------------

OWN_LOGGERS = ("vreloc", "vreloc_tf", "pipeline", "serving", "__main__")
# Set before TensorFlow or gRPC load (a user's own setting wins): TF's C++ log threshold (3 = none of
# its INFO/WARNING/ERROR lines; what it writes while loading, QuietTensorFlowImport filters) and gRPC's.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}
# Unless -v, other loggers (tensorflow, absl, apache_beam, h5py, matplotlib, ...) show ERROR and up
# only; the exceptions below. Beam's option parser keeps WARNING: it is what says that an option
# passed through to Beam was not used ("Unparseable argument: --foo").
QUIET_LOGGERS = {"apache_beam.options": logging.WARNING}
# Python warnings raised inside these packages (DeprecationWarning and FutureWarning from anywhere).
QUIET_WARNING_MODULES = r"(tensorflow|tf_keras|keras|keras_hub|absl|apache_beam|h5py|google|grpc|distributed|dask)(\.|$)"


def verbosity(argv: Sequence[str]) -> int:
    """The -v count, read before parsing: the quiet settings must precede the imports parsing does."""
    count = 0
    for token in argv:
        if token == "--":
            break
        if token == "--verbose":
            count += 1
        elif re.fullmatch(r"-v+", token):
            count += len(token) - 1
    return count


def _threshold(name: str) -> int:
    """The lowest level shown of logger ``name`` when quiet: 0 for ours, else its QUIET_LOGGERS entry or ERROR."""
    if name.split(".")[0] in OWN_LOGGERS:
        return logging.NOTSET
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        level = QUIET_LOGGERS.get(".".join(parts[:end]))
        if level is not None:
            return level
    return logging.ERROR


class _QuietThirdParty(logging.Filter):
    """On the root handler: every record of our own loggers; of anyone else's, ERROR and above.

    A filter on the handler, not levels alone, because a library may log below ERROR through a
    logger nobody listed (or the root logger itself)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= _threshold(record.name)


def configure_logging(verbose: int) -> None:
    """Our INFO progress lines always; third-party records only from ERROR up unless -v (-vv: DEBUG)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # importing Beam configures the root logger first; ours must win
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietThirdParty())


# What TensorFlow's shared libraries write while they load: absl's notice that logging is not set
# up yet, then absl-format lines (I/W/E; F = fatal is kept), e.g. oneDNN, CUDA stubs and factories.
ABSL_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                        rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s:]+:\d+\] )")
# A child process copies its stdin to stderr without ABSL_NOISE lines; being a process of its own,
# it still writes out what it got if the import kills ours.
_FILTER = ("import re, sys\n"
           "noise = re.compile(%r)\n"
           "for line in sys.stdin.buffer:\n"
           "    if not noise.match(line):\n"
           "        sys.stderr.buffer.write(line); sys.stderr.buffer.flush()\n") % ABSL_NOISE.pattern


@contextlib.contextmanager
def _stderr_without_absl_noise():
    """fd 2 goes through the _FILTER process for the duration (nothing changes if that cannot start)."""
    child = saved = None
    try:
        sys.stderr.flush()
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL)
        saved = os.dup(2)
        os.dup2(child.stdin.fileno(), 2)
    except (OSError, ValueError, AttributeError):
        if child is not None:
            child.stdin.close()
            child.wait()
        if saved is not None:
            os.close(saved)
        child = None
    try:
        yield
    finally:
        if child is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            child.stdin.close()
            child.wait()


class _QuietLoader(importlib.abc.Loader):
    """The real loader of ``tensorflow``, run with fd 2 filtered; afterwards the module names the real one."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        try:
            with _stderr_without_absl_noise():
                self.loader.exec_module(module)
        finally:
            module.__loader__ = self.loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self.loader
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, QuietTensorFlowImport)]

    def __getattr__(self, name):
        return getattr(self.loader, name)


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Filters stderr while ``tensorflow`` is imported, by whichever module.

    Why: TensorFlow 2.21's shared libraries log their start-up notices (oneDNN, CUDA) through absl
    before anything calls ``absl::InitializeLog()``, and that path ignores TF_CPP_MIN_LOG_LEVEL;
    all of it happens during the import (the logs TensorFlow writes later do obey the variable).
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or self._finding:
            return None
        self._finding = True  # the real spec, from the finders after this one
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_start(verbose: int) -> None:
    """Silence the libraries' start-up noise unless ``verbose``; call before anything imports TensorFlow.

    A TF_CPP_MIN_LOG_LEVEL the user set wins (below 1, TensorFlow's import is not filtered either)."""
    if verbose:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if (os.environ["TF_CPP_MIN_LOG_LEVEL"].strip() or "0") != "0" and "tensorflow" not in sys.modules \
            and not any(isinstance(f, QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, QuietTensorFlowImport())
    warnings.filterwarnings("ignore", module=QUIET_WARNING_MODULES)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)


# -- argument parsing: one-line errors with suggestions -------------------------------------------

def option_strings(parser: argparse.ArgumentParser) -> List[str]:
    return [s for action in parser._actions for s in action.option_strings]


def unrecognized(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """``unrecognized arguments: --topk (did you mean --top-k?)``: flags with their closest match.

    The values that follow an unknown flag are left out (they belong to it); extras with no
    flag among them are listed as they are."""
    flags = [t for t in extras if is_flag(t)]
    known = [s for s in option_strings(parser) if s.startswith("--")]
    shown = []
    for token in flags or extras:
        match = closest(token.split("=", 1)[0], known) if token in flags else None
        shown.append(f"{token} (did you mean {match}?)" if match else token)
    return "unrecognized arguments: " + ", ".join(shown)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``vreloc CMD: error: ...``) and a suggestion for each typo.

    Subparsers are of this class too (argparse makes them with the parent's class), so
    every level, ``vreloc index build`` included, answers the same way."""

    def parse_known_args(self, args=None, namespace=None):
        self._seen = list(sys.argv[1:] if args is None else args)  # for error(): typos behind a missing flag
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:
            options = re.findall(r"'([^']*)'", choice.group(2)) or [c.strip() for c in choice.group(2).split(",")]
            match = closest(choice.group(1), options)
            if match:
                message = message[:choice.start(2) - len("(choose from ")] + f"(did you mean {match}?)"
        elif message.startswith("the following arguments are required"):
            # `--qurey x` leaves --query missing: the typo is the news, the missing flag its consequence.
            known = option_strings(self)
            typos = [t for t in getattr(self, "_seen", ()) if t.startswith("--")
                     and not any(k.startswith(t.split("=", 1)[0]) for k in known)
                     and closest(t.split("=", 1)[0], [k for k in known if k.startswith("--")])]
            if typos:
                message = f"{unrecognized(self, typos)}; {message}"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            target = chosen_parser(self, ns)
            target.error(unrecognized(target, extras))
        return ns


def chosen_parser(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost (sub)parser the parsed command line selected, e.g. that of ``vreloc index build``."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(ns, subs[0].dest, None) if subs and subs[0].dest != argparse.SUPPRESS else None
        if name not in (subs[0].choices if subs else {}):
            return parser
        parser = subs[0].choices[name]


def command_module(name: str):
    return importlib.import_module(f"vreloc.commands.{name.replace('-', '_')}")


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps the subparser from resetting them.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="more logging (-v info, -vv debug)")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show the full traceback of an error")


def _nested_parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for nested in action.choices.values():
                yield nested
                yield from _nested_parsers(nested)


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = ArgumentParser(
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
            for nested in _nested_parsers(sp):  # `vreloc index build -v` as well as `vreloc -v index build`
                if "--verbose" not in nested._option_string_actions:
                    _common_options(nested, top=False)
    return parser


def _selected_command(argv: List[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``vreloc ARGV``; the exit code. As the program (``argv`` None: the console script,
    ``python -m vreloc``) it first makes the process quiet (:func:`quiet_start`); a caller that
    passes ``argv`` (tests, scripts) keeps its own environment, warnings and imports as they are.

    Everything after the quiet start -- importing the command, parsing, running it -- is on the
    one error path (:func:`vreloc_tf.errors.run_guarded`); until parsing is done, the command and
    ``--debug`` are read from the raw arguments."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = verbosity(argv)
    if program:
        quiet_start(verbose)  # before build_parser: a command's add_arguments may import TensorFlow
    configure_logging(verbose)
    selected = _selected_command(argv)
    state = {"prog": f"vreloc {selected}" if selected else "vreloc", "debug": wants_debug(argv)}

    def run() -> int:
        parser = build_parser(selected)
        args = parser.parse_args(argv)
        state["debug"] = args.debug
        if args.verbose != verbose:  # e.g. an abbreviated --verb
            configure_logging(args.verbose)
        if args.command is None:
            parser.print_help()
            return 2
        state["prog"] = f"vreloc {args.command}"
        return int(command_module(args.command).main(args) or 0)

    return run_guarded(run, lambda: state["prog"], lambda: state["debug"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
