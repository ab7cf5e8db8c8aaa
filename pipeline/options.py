"""Beam options of the jobs: the runner, its aliases, and every unknown argument passed through to Beam.

Why a module of its own: both jobs (``ingest-activitynet``, ``extract-video``) take
the same ``--runner`` and forward the same pass-through arguments; the command
line (``vreloc.commands``) and the library callers (the orchestrator) must build
identical ``PipelineOptions`` from them.

Runners
-------
``--runner`` defaults to the DirectRunner; jobs with a lot of data switch it to
multi-process mode (``--direct_running_mode=multi_processing
--direct_num_workers=<cores - 1>``) on machines with at least 4 cores, unless
those options are given (on 2 cores it measured no faster, see
:func:`pipeline_options`).
``--runner DaskRunner`` is mapped to
``apache_beam.runners.dask.dask_runner.DaskRunner`` (pass
``--dask_client_address=tcp://HOST:8786`` for an existing cluster). Every other
argument that a job does not know is passed to Beam as a pipeline option, e.g.
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
        --c3d-weights gs://BUCKET/models/c3d_sports1m.h5 --out gs://BUCKET/vreloc/videos \\
        --runner DataflowRunner --project PROJECT --region us-central1 \\
        --temp_location gs://BUCKET/tmp --setup_file ./setup.py
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Optional, Sequence

DEFAULT_RUNNER = "DirectRunner"
RUNNER_ALIASES = {
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}
MULTIPROCESS_MIN_CORES = 4


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
    """``--runner`` plus a catch-all: every argument the job does not know goes to Beam.

    The ``vreloc`` CLI parses with ``parse_args``, which rejects unknown options;
    the subcommand's parser therefore keeps its unknown arguments in
    ``args.beam_args`` instead of handing them back as errors.
    """
    parser.add_argument("--runner", default=DEFAULT_RUNNER,
                        help="Beam runner: DirectRunner (default), DaskRunner, DataflowRunner, FlinkRunner, ... "
                             "Any other unknown option is passed to Beam as a pipeline option.")
    parser.set_defaults(beam_args=[])
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = original(args, namespace)
        ns.beam_args = list(getattr(ns, "beam_args", []) or []) + list(extras)
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


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
    """Map short runner names Beam cannot resolve on its own to their full import path."""
    return RUNNER_ALIASES.get(name, name)


def is_direct_runner(runner: str) -> bool:
    return resolve_runner(runner).split(".")[-1] in ("DirectRunner", "BundleBasedDirectRunner", "FnApiRunner")


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
