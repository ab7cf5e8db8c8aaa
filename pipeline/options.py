"""Beam options of the jobs: the runner, its aliases, and every unknown argument passed through to Beam.

Why a module of its own: both jobs (``ingest-activitynet``, ``extract-video``) take
the same ``--runner`` and forward the same pass-through arguments; the command
line (``vreloc.commands``) and the library callers (the orchestrator) must build
identical ``PipelineOptions`` from them.

Runners
-------
``--runner`` defaults to the DirectRunner, and ``DirectRunner`` (default or given)
names ``InProcessDirectRunner`` here: Beam's DirectRunner (``SwitchingDirectRunner``)
first tries its Prism runner, which downloads a Prism binary from GitHub on first use
(offline: a failed download, a stack of log lines, then the fallback); ours goes
straight to the fallback, the in-process FnApiRunner (BundleBasedDirectRunner where
the FnApiRunner cannot run a pipeline). ``--runner PrismRunner`` asks for Prism, and
``--runner apache_beam.runners.direct.direct_runner.DirectRunner`` for Beam's own.
Jobs with a lot of data switch the DirectRunner to multi-process mode
(``--direct_running_mode=multi_processing --direct_num_workers=<cores - 1>``) on
machines with at least 4 cores, unless those options are given (on 2 cores it
measured no faster, see :func:`pipeline_options`).
``--runner DaskRunner`` is mapped to
``apache_beam.runners.dask.dask_runner.DaskRunner`` (pass
``--dask_client_address=tcp://HOST:8786`` for an existing cluster). Every other
argument that a job does not know is passed to Beam as a pipeline option (unless
it looks like a typo, see :func:`add_beam_arguments`), e.g.
on Dataflow (``--setup_file`` ships ``vreloc_tf`` and ``pipeline`` to the
workers; the input files must be on GCS)::

    vreloc ingest-activitynet \\
        --features gs://BUCKET/activitynet/sub_activitynet_v1-3.c3d.hdf5 \\
        --splits gs://BUCKET/activitynet/splits \\
        --out gs://BUCKET/vreloc/data \\
        --runner DataflowRunner --project PROJECT --region us-central1 \\
        --temp_location gs://BUCKET/tmp --staging_location gs://BUCKET/staging \\
        --setup_file ./setup.py --machine_type n2-standard-4 --max_num_workers 8

    vreloc extract-video --videos 'gs://BUCKET/videos/*.mp4' \\
        --annotations gs://BUCKET/videos/annotations.json \\
        --weights gs://BUCKET/models/sports1M_weights_tf.h5 --out gs://BUCKET/vreloc/videos \\
        --runner DataflowRunner --project PROJECT --region us-central1 \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
from typing import List, Optional, Sequence

from vreloc_tf.suggest import closest, is_flag

DEFAULT_RUNNER = "DirectRunner"
IN_PROCESS_RUNNER = "pipeline.options.InProcessDirectRunner"
RUNNER_ALIASES = {
    "DirectRunner": IN_PROCESS_RUNNER,
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}
MULTIPROCESS_MIN_CORES = 4
TYPO_CUTOFF = 0.75  # difflib ratio (dashes stripped) above which an unknown flag is taken for a typo


class _NoOptionalClientNotice(logging.Filter):
    """Drops the warning ``import apache_beam`` logs when Google's optional BigQuery client is absent.

    Why: it goes to stderr on every run, before the job's own first line, so a
    one-line error of ``vreloc ingest-activitynet`` would come out as two lines.
    The jobs import this module before Beam. The same import announces the
    missing BigQuery storage client at INFO; the jobs use no BigQuery, so that
    logger is kept at WARNING. Nothing else is filtered.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_NoOptionalClientNotice())
logging.getLogger("apache_beam.io.gcp.bigquery").setLevel(logging.WARNING)


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runner`` plus a catch-all: the job's unknown arguments go to Beam, unless they look like typos.

    The ``vreloc`` CLI parses with ``parse_args``, which rejects unknown options;
    the subcommand's parser therefore keeps its unknown arguments in
    ``args.beam_args`` instead of handing them back as errors. Which unknown flags
    pass (values that follow a flag go with it):

    * a flag Beam's ``PipelineOptions`` define, those of the chosen runner included
      (``--direct_num_workers=2``, ``--project X``, ``--dask_client_address=...``), passes;
    * else a flag close to one of the job's own flags or to a Beam option is a typo:
      ``unrecognized arguments: --ovewrite (did you mean --overwrite?)``, exit 2 --
      passed on, Beam would drop it with a warning and the job would run without it;
    * else it passes: a runner such as Dataflow forwards options the Python SDK does
      not define to its service (Beam warns ``Unparseable argument`` if none does);
    * a single-dash flag is an error (Beam drops those).
    """
    parser.add_argument("--runner", default=DEFAULT_RUNNER,
                        help="Beam runner: DirectRunner (default: in process, never Prism), DaskRunner, DataflowRunner, "
                             "FlinkRunner, ... Any other unknown option is passed to Beam as a pipeline option.")
    parser.set_defaults(beam_args=[])
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = original(args, namespace)
        wrong = beam_arg_typos(parser, getattr(ns, "runner", DEFAULT_RUNNER), extras)
        if wrong:
            parser.error("unrecognized arguments: " + ", ".join(wrong))
        ns.beam_args = list(getattr(ns, "beam_args", []) or []) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def beam_arg_typos(parser: argparse.ArgumentParser, runner: str, extras: Sequence[str]) -> List[str]:
    """The unknown flags of ``extras`` that must not go to Beam, each with its suggestion (see add_beam_arguments)."""
    flags = [t for t in extras if is_flag(t)]
    if not flags:
        return []
    beam = beam_option_names(runner)
    if beam is None:  # Beam's options could not be listed: everything passes, as before
        return []
    own = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    wrong = []
    for token in flags:
        name = token.split("=", 1)[0]
        if not token.startswith("--"):
            wrong.append(f"{token} (Beam takes --name flags only)")
        elif name not in beam:
            match = closest(name, own, TYPO_CUTOFF) or closest(name, sorted(beam), TYPO_CUTOFF)
            if match:
                wrong.append(f"{token} (did you mean {match}?)")
    return wrong


def beam_option_names(runner: str) -> Optional[set]:
    """Every flag Beam's ``PipelineOptions`` parse, with the options module of ``runner`` loaded; None if unknowable.

    Beam finds its options as the subclasses of ``PipelineOptions`` that are imported, and a
    runner's own (DaskRunner's ``--dask_client_address``) live in the runner's module."""
    try:
        from apache_beam.options import pipeline_options as po

        path = resolve_runner(runner)
        if "." not in path:
            known = {p.rsplit(".", 1)[-1].lower(): p for p in po.StandardOptions.ALL_KNOWN_RUNNERS}
            path = known.get(path.lower(), known.get(path.lower() + "runner", ""))
        if "." in path:
            try:
                importlib.import_module(path.rsplit(".", 1)[0])
            except ImportError:
                pass
        beam_parser = po._BeamArgumentParser(allow_abbrev=False)
        for cls in {str(c): c for c in po.PipelineOptions.__subclasses__()}.values():
            cls._add_argparse_args(beam_parser)
        return {s for action in beam_parser._actions for s in action.option_strings}
    except Exception:  # private Beam API (Beam 2.77): if it moved, judge nothing
        return None


def enable_progress_logging() -> None:
    """Show the jobs' INFO progress lines (per video, per phase).

    Importing Beam logs a warning through the root logger before the CLI sets
    up logging, which leaves the root at WARNING; the ``pipeline`` loggers get
    their own level so their records still reach the root's handlers.
    """
    logger = logging.getLogger("pipeline")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def resolve_runner(name: str) -> str:
    """Map short runner names to the import path we mean by them (``DirectRunner``: in process, see above)."""
    return RUNNER_ALIASES.get(name, name)


def is_direct_runner(runner: str) -> bool:
    return resolve_runner(runner).split(".")[-1] in (
        "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner", "FnApiRunner", "InProcessDirectRunner")


_IN_PROCESS_RUNNER_CLASS = None


def __getattr__(name: str):
    """``pipeline.options.InProcessDirectRunner``, made on first use: Beam imports only when a job runs."""
    if name == "InProcessDirectRunner":
        return _in_process_runner_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _in_process_runner_class():
    global _IN_PROCESS_RUNNER_CLASS
    if _IN_PROCESS_RUNNER_CLASS is None:
        from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

        class InProcessDirectRunner(SwitchingDirectRunner):
            """Beam's DirectRunner without its first try, the Prism runner (and Prism's download).

            ``SwitchingDirectRunner`` skips Prism for an interactive pipeline (Beam 2.77:
            ``_is_interactive`` is read for that alone) and then picks the FnApiRunner, with
            the pipeline options in its provision info (the multi-process workers read them),
            or the BundleBasedDirectRunner for what the FnApiRunner cannot run.
            tests/test_beam_runner.py checks that no download is attempted.
            """

            _is_interactive = True

        InProcessDirectRunner.__module__, InProcessDirectRunner.__qualname__ = __name__, "InProcessDirectRunner"
        _IN_PROCESS_RUNNER_CLASS = InProcessDirectRunner
    return _IN_PROCESS_RUNNER_CLASS


def pipeline_options(runner: str, beam_args: Sequence[str], multiprocess: bool = False, cores: Optional[int] = None):
    """PipelineOptions from ``--runner`` and the pass-through args.

    ``multiprocess``: the job has enough data for the DirectRunner's
    multi-process mode to pay for its workers' start-up (each imports Beam,
    h5py and TensorFlow). Applied only with at least 4 cores (one worker per
    core but one, which the runner process itself keeps busy) and only when the
    user did not choose the DirectRunner's mode or worker count. Measured on
    the 2-core development machine (shared with other work), 4,500 full-size
    entries: 29.4 s with 2 worker processes vs 27.6 s in process, so 2 cores
    stay in process.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    cores = (os.cpu_count() or 1) if cores is None else cores
    args = [f"--runner={resolve_runner(runner)}"] + list(beam_args)
    if multiprocess and cores >= MULTIPROCESS_MIN_CORES and is_direct_runner(runner) and not any(
            a.startswith(("--direct_running_mode", "--direct_num_workers")) for a in beam_args):
        args += ["--direct_running_mode=multi_processing", f"--direct_num_workers={cores - 1}"]
    return PipelineOptions(args)
