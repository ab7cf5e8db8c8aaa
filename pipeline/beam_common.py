"""Plumbing shared by the Beam jobs: options, runners, dead letters, atomic shards, manifest.

Why a module of its own: every job (``ingest-activitynet``, ``extract-video``)
must write the same contract (``vreloc_tf.schema``) the same way, on every
runner, and prove its counts. The jobs only compose their own transforms and
hand the outputs to :func:`run_and_publish`.

How outputs are written, and why not with ``WriteToTFRecord``
-------------------------------------------------------------
Records are encoded with ``vreloc_tf.schema.encode_record`` and written by
:class:`WriteBundleFiles`: one file per bundle and split, first under a
per-run staging folder ``DATA_DIR/.staging-<uuid>/``. Only after the pipeline
finished does the launcher count what is there, check that
``read = written + dead_lettered`` for every split, replace the split's old
shards with the new ones (``<split>-SSSSS-of-NNNNN.tfrecord``), merge the dead
letters into ``DATA_DIR/dead_letter/<split>.jsonl`` and write
``manifest.json``. A failed run leaves the previous outputs untouched; a rerun
never duplicates or mixes. Everything goes through Beam's ``FileSystems``, so
``gs://`` and other remote folders work.

Beam's own file sinks are avoided because of what Beam 2.77's Dask runner
does (checked here, see ``tests/test_dask_runner.py``): it computes only the
*last* transform of the graph (so independent sinks are skipped), it hands
*every* output of a multi-output ``ParDo`` to each consumer, it drops
elements emitted in ``finish_bundle``, and it recomputes side inputs (so
``WriteToText``/``WriteToTFRecord`` finalize an empty temp folder and leave
``beam-temp-*`` folders behind). Hence here: every writer emits a token per
element, the tokens of all writers are flattened into one final transform, and
the consumers of tagged outputs select their element type explicitly
(:func:`split_dead_letters`), which is a no-op on correct runners.

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
import dataclasses
import datetime
import json
import logging
import os
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

LOG = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
DEAD_LETTER_DIR = "dead_letter"
RUNNER_ALIASES = {
    "DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner",
}
_RECORDS = "records"


class ReconciliationError(RuntimeError):
    """The outputs do not add up: read != written + dead-lettered for some split."""


# --------------------------------------------------------------------------- options


def add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runner`` plus a catch-all: every argument the job does not know goes to Beam.

    The ``vreloc`` CLI parses with ``parse_args``, which rejects unknown options;
    the subcommand's parser therefore keeps its unknown arguments in
    ``args.beam_args`` instead of handing them back as errors.
    """
    parser.add_argument("--runner", default="DirectRunner",
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


MULTIPROCESS_MIN_CORES = 4


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


# --------------------------------------------------------------------------- dead letters


@dataclasses.dataclass
class DeadLetter:
    """An input that could not become a record, and why (one JSON line in the output)."""

    split: str
    reason: str
    entry: object  # the offending entry (JSON-serializable)
    entry_index: int = -1
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)


def dead_letter(split: str, reason: str, entry, entry_index: int = -1, source: str = ""):
    """A tagged dead-letter output for ``ParDo(...).with_outputs(DEAD_LETTER)``."""
    Metrics.counter("vreloc", f"dead_lettered_{split}").inc()
    return beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(split, reason, entry, entry_index, source))


def split_dead_letters(outputs, label: str):
    """(main, dead letters) of a multi-output ParDo, each filtered to its own element type.

    On a correct runner the filters keep everything; Beam 2.77's Dask runner
    delivers all outputs of a ParDo to every consumer, and this undoes that.
    """
    main = outputs[None] | f"{label}: main only" >> beam.Filter(lambda x: not isinstance(x, DeadLetter))
    dead = outputs[DEAD_LETTER] | f"{label}: dead letters only" >> beam.Filter(lambda x: isinstance(x, DeadLetter))
    return main, dead


# --------------------------------------------------------------------------- writing


def staging_path(staging_dir: str, kind: str, split: str) -> str:
    return FileSystems.join(staging_dir, kind, split)


class WriteBundleFilesFn(beam.DoFn):
    """Writes ``(split, payload)`` elements to new files, per bundle and split, under the staging folder.

    Files are written as ``<uuid>.inprogress`` and renamed to their final
    suffix only when the bundle finishes, so a failed (and retried) bundle
    leaves nothing that the launcher would publish. A file is closed and a new
    one started past ``max_file_bytes`` (shards of a size tf.data can read in
    parallel). Emits ``(split, 1)`` per element: a token that keeps the
    writer inside the graph that every runner computes.
    """

    def __init__(self, staging_dir: str, kind: str, suffix: str, framing: str, max_file_bytes: int = 256 << 20):
        if framing not in ("tfrecord", "lines"):
            raise ValueError(f"framing must be 'tfrecord' or 'lines', got {framing!r}")
        self.staging_dir, self.kind, self.suffix, self.framing = staging_dir, kind, suffix, framing
        self.max_file_bytes = max_file_bytes
        self._open: Dict[str, list] = {}  # split -> [handle, tmp path, final path, bytes written]
        self._closed: List[tuple] = []  # (tmp path, final path) of full files of this bundle

    def start_bundle(self):
        self._open, self._closed = {}, []

    def _file(self, split: str) -> list:
        entry = self._open.get(split)
        if entry is not None and entry[3] >= self.max_file_bytes:
            entry[0].close()
            self._closed.append((entry[1], entry[2]))
            entry = None
        if entry is None:
            base = FileSystems.join(staging_path(self.staging_dir, self.kind, split), uuid.uuid4().hex)
            entry = [FileSystems.create(base + ".inprogress"), base + ".inprogress", base + self.suffix, 0]
            self._open[split] = entry
        return entry

    def process(self, element):
        split, payload = element
        entry = self._file(split)
        if self.framing == "tfrecord":
            from apache_beam.io.tfrecordio import _TFRecordUtil  # Beam's TFRecord framing (crc32c)

            _TFRecordUtil.write_record(entry[0], payload)
            entry[3] += len(payload) + 16
        else:
            data = payload.encode("utf-8") + b"\n"
            entry[0].write(data)
            entry[3] += len(data)
        yield split, 1

    def finish_bundle(self):
        for handle, tmp, final, _ in self._open.values():
            handle.close()
            self._closed.append((tmp, final))
        closed, self._open, self._closed = self._closed, {}, []
        if closed:
            FileSystems.rename([t for t, _ in closed], [f for _, f in closed])

    def teardown(self):
        for entry in self._open.values():
            try:
                entry[0].close()
            except Exception:  # pylint: disable=broad-except
                pass


class WriteRecords(beam.PTransform):
    """``vreloc_tf.schema.Record`` elements -> staged TFRecord files, per split; yields (split, 1) tokens."""

    def __init__(self, staging_dir: str, max_file_bytes: int = 256 << 20, label: Optional[str] = None):
        super().__init__(label)
        self.staging_dir, self.max_file_bytes = staging_dir, max_file_bytes

    def expand(self, records):
        return (records
                | "Encode" >> beam.Map(_encode_keyed)
                | "WriteFiles" >> beam.ParDo(WriteBundleFilesFn(self.staging_dir, _RECORDS, ".tfrecord", "tfrecord",
                                                                self.max_file_bytes)))


def _encode_keyed(record):
    from vreloc_tf.schema import encode_record

    Metrics.counter("vreloc", f"written_{record.split}").inc()
    return record.split, encode_record(record)


class WriteDeadLetters(beam.PTransform):
    """DeadLetter elements -> staged JSON-lines files, per split; yields (split, 1) tokens."""

    def __init__(self, staging_dir: str, label: Optional[str] = None):
        super().__init__(label)
        self.staging_dir = staging_dir

    def expand(self, dead):
        return (dead
                | "ToJson" >> beam.Map(lambda d: (d.split, d.to_json()))
                | "WriteFiles" >> beam.ParDo(WriteBundleFilesFn(self.staging_dir, DEAD_LETTER_DIR, ".jsonl", "lines")))


# --------------------------------------------------------------------------- counting


def count_tfrecords(path: str) -> int:
    """Records in one TFRecord file, checking every length and data checksum."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.tfrecordio import _TFRecordUtil

    n = 0
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        while _TFRecordUtil.read_record(fh) is not None:
            n += 1
    return n


def count_lines(path: str) -> int:
    from apache_beam.io.filesystem import CompressionTypes

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return sum(1 for line in fh.read().splitlines() if line.strip())


def match_files(pattern: str) -> List[str]:
    """Sorted paths matching a glob on any Beam file system; [] when nothing matches."""
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # BeamIOError when nothing matches on some file systems
        return []


# --------------------------------------------------------------------------- publishing


@dataclasses.dataclass
class SplitCounts:
    read: int
    written: int
    dead_lettered: int

    def reconciles(self) -> bool:
        return self.read == self.written + self.dead_lettered


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def count_staged(staging_dir: str, read_counts: Dict[str, int]) -> Dict[str, SplitCounts]:
    """Count the staged outputs of every split (not Beam metrics: some runners report none)."""
    counts = {}
    for split, read in read_counts.items():
        written = sum(count_tfrecords(p) for p in match_files(FileSystems.join(staging_path(staging_dir, _RECORDS, split), "*.tfrecord")))
        dead = sum(count_lines(p) for p in match_files(FileSystems.join(staging_path(staging_dir, DEAD_LETTER_DIR, split), "*.jsonl")))
        counts[split] = SplitCounts(read, written, dead)
    return counts


def publish(staging_dir: str, data_dir: str, splits: Iterable[str]) -> Dict[str, List[str]]:
    """Replace each split's shards and dead letters in ``data_dir`` with the staged ones."""
    shards = {}
    for split in splits:
        staged = match_files(FileSystems.join(staging_path(staging_dir, _RECORDS, split), "*.tfrecord"))
        if not staged:  # a split whose entries all went to dead letters: one valid, empty shard
            empty = FileSystems.join(staging_path(staging_dir, _RECORDS, split), "empty.tfrecord")
            FileSystems.create(empty).close()
            staged = [empty]
        old = match_files(FileSystems.join(data_dir, f"{split}-*-of-*.tfrecord"))
        if old:
            FileSystems.delete(old)
        names = [FileSystems.join(data_dir, shard_name(split, i, len(staged))) for i in range(len(staged))]
        FileSystems.rename(staged, names)
        shards[split] = [os.path.basename(n) for n in names]
    publish_dead_letters(staging_dir, data_dir, splits)
    return shards


def publish_dead_letters(staging_dir: str, data_dir: str, splits: Iterable[str]) -> None:
    """Merge each split's staged dead letters into ``DATA_DIR/dead_letter/<split>.jsonl`` (even when empty)."""
    for split in splits:
        parts = match_files(FileSystems.join(staging_path(staging_dir, DEAD_LETTER_DIR, split), "*.jsonl"))
        body = b""
        for part in parts:
            with FileSystems.open(part) as fh:
                body += fh.read()
        final = FileSystems.join(data_dir, DEAD_LETTER_DIR, f"{split}.jsonl")
        tmp = final + ".inprogress"
        with FileSystems.create(tmp) as fh:
            fh.write(body)
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([tmp], [final])


def write_manifest(data_dir: str, fields: dict, counts: Dict[str, SplitCounts], shards: Dict[str, List[str]]) -> dict:
    """Write ``manifest.json`` (merged with an existing one's other splits of the same feature dim)."""
    from vreloc_tf import __version__
    from vreloc_tf.schema import MANIFEST_NAME

    path = FileSystems.join(data_dir, MANIFEST_NAME)
    previous = read_manifest_if_any(data_dir)
    splits = {}
    if previous and int(previous.get("feature_dim", -1)) == int(fields["feature_dim"]):
        splits.update(previous.get("splits", {}))
    splits.update({s: dataclasses.asdict(c) | {"shards": shards.get(s, [])} for s, c in counts.items()})
    manifest = {
        **fields,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "code_version": __version__,
        "splits": splits,
    }
    tmp = path + ".inprogress"
    with FileSystems.create(tmp) as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])
    return manifest


def read_manifest_if_any(data_dir: str) -> Optional[dict]:
    from vreloc_tf.schema import MANIFEST_NAME

    path = FileSystems.join(data_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as fh:
        return json.loads(fh.read().decode("utf-8"))


def check_no_mixing(data_dir: str, feature_dim: int, splits: Iterable[str]) -> None:
    """Refuse to add splits of another feature dim next to splits this run does not rewrite."""
    previous = read_manifest_if_any(data_dir)
    if not previous or int(previous.get("feature_dim", feature_dim)) == int(feature_dim):
        return
    kept = sorted(set(previous.get("splits", {})) - set(splits))
    if kept:
        raise ValueError(f"{data_dir}: already holds splits {kept} with feature_dim {previous['feature_dim']}; "
                         f"writing feature_dim {feature_dim} there would mix dims (use another --out folder)")


def compare_with_metrics(job: str, result, counts: Dict[str, SplitCounts]) -> None:
    """Cross-check the counted outputs against Beam's counters where the runner reports them.

    The counted files are what the job publishes; the counters are only a
    second opinion (the Dask runner reports none, and retried bundles can
    inflate attempted counts), so a disagreement is logged, not fatal.
    """
    try:
        from apache_beam.metrics.metric import MetricsFilter

        found = result.metrics().query(MetricsFilter().with_namespace("vreloc"))["counters"]
    except Exception:  # pylint: disable=broad-except  # NotImplementedError on Dask, others elsewhere
        LOG.info("%s: the runner reports no Beam metrics; relying on the counted outputs", job)
        return
    totals: Dict[str, int] = {}
    for c in found:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    for split, c in counts.items():
        metric = (totals.get(f"written_{split}", 0), totals.get(f"dead_lettered_{split}", 0))
        if metric != (c.written, c.dead_lettered):
            LOG.warning("%s: %s: Beam counters say written %d, dead-lettered %d; the files hold %d and %d",
                        job, split, metric[0], metric[1], c.written, c.dead_lettered)


def run_and_publish(job: str, options, data_dir: str, read_counts: Dict[str, int],
                    build: Callable[[beam.Pipeline, str], Sequence[beam.PCollection]],
                    manifest_fields: dict, shardless: Sequence[str] = (),
                    on_success: Optional[Callable[[str], dict]] = None) -> Dict[str, SplitCounts]:
    """Build, run, count, reconcile, publish, write the manifest; print one summary line per split.

    ``build(pipeline, staging_dir)`` composes the job and returns the token
    PCollections of its writers. ``shardless``: pseudo-splits that only ever
    hold dead letters (e.g. videos without annotations): counted and
    reconciled, their dead letters published, but no shards and no entry
    under the manifest's ``splits`` (they go under ``unassigned``).
    ``on_success(staging_dir)`` publishes a job's extra artifacts once the
    counts reconcile and returns extra manifest fields. Raises
    :class:`ReconciliationError` (leaving the previous outputs in place) when
    the counts do not add up.
    """
    check_no_mixing(data_dir, manifest_fields["feature_dim"], read_counts)
    if not FileSystems.exists(data_dir):
        FileSystems.mkdirs(data_dir)
    staging_dir = FileSystems.join(data_dir, f".staging-{uuid.uuid4().hex[:12]}")
    t0 = time.time()
    try:
        pipeline = beam.Pipeline(options=options)
        tokens = build(pipeline, staging_dir)
        # The last transform depends on every writer: the Dask runner computes only the last one.
        _ = (tuple(tokens) | "AllOutputs" >> beam.Flatten()
             | "CountPerSplit" >> beam.combiners.Count.PerKey()
             | "LogCounts" >> beam.Map(lambda kv: LOG.info("%s: %s: %s elements through the writers", job, kv[0], kv[1])))
        result = pipeline.run()
        try:
            result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)  # the Dask runner's client stays open otherwise
            if client is not None:
                client.close()
        LOG.info("%s: pipeline finished in %.1f s; counting the staged outputs", job, time.time() - t0)
        counts = count_staged(staging_dir, read_counts)
        compare_with_metrics(job, result, counts)
        bad = {s: c for s, c in counts.items() if not c.reconciles()}
        if bad:
            raise ReconciliationError(f"{job}: counts do not reconcile (read != written + dead_lettered): "
                                      + "; ".join(f"{s}: {dataclasses.asdict(c)}" for s, c in bad.items())
                                      + f"; previous outputs in {data_dir} left unchanged")
        extra = on_success(staging_dir) if on_success else {}
        record_splits = {s: c for s, c in counts.items() if s not in shardless}
        shards = publish(staging_dir, data_dir, record_splits)
        publish_dead_letters(staging_dir, data_dir, [s for s in counts if s in shardless])
        unassigned = {s: dataclasses.asdict(c) for s, c in counts.items() if s in shardless}
        write_manifest(data_dir, {**manifest_fields, **extra, **({"unassigned": unassigned} if unassigned else {})},
                       record_splits, shards)
        LOG.info("%s: counted, published and wrote the manifest at %.1f s", job, time.time() - t0)
    finally:
        if FileSystems.exists(staging_dir):
            FileSystems.delete([staging_dir])
    seconds = time.time() - t0
    for split, c in counts.items():
        print(f"{job}: {split}: read {c.read}, written {c.written}, dead-lettered {c.dead_lettered}"
              + (f" (see {FileSystems.join(data_dir, DEAD_LETTER_DIR, split + '.jsonl')})" if c.dead_lettered else ""))
    written = sum(c.written for c in counts.values())
    print(f"{job}: {written} records in {seconds:.1f} s ({written / max(seconds, 1e-9):.1f} records/s) -> {data_dir}")
    return counts
