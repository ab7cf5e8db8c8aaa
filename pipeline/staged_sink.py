"""How a Beam job's outputs reach a data folder: dead letters, staged shards, reconciled counts, one manifest.

Why a module of its own: every job (``ingest-activitynet``, ``extract-video``)
must write the same contract (``vreloc_tf.data.schema``) the same way, on every
runner, and prove its counts. A job composes its own transforms and hands
its writers' outputs to :func:`run_and_publish`.

How outputs are written, and why not with ``WriteToTFRecord``
-------------------------------------------------------------
Records are encoded with ``vreloc_tf.data.schema.encode_record`` and written by
:class:`WriteBundleFilesFn` (framed by ``vreloc_tf.data.tfrecord.write_record``, the
project's one TFRecord writer; counted back, every checksum checked, by
``vreloc_tf.data.tfrecord.count_stream``): one file per bundle and split, first under a
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

One dataset per folder
----------------------
The manifest records the source of every split (``splits.<split>.source``).
A run that would leave splits of another source or another feature dim beside
its own (say, a re-run with only ``train.json`` into a folder whose val/test
came from another file) is refused before any work with a
:class:`DatasetMixError`, unless ``overwrite``: then the folder's old shards,
dead letters and manifest entries are removed when the new outputs are
published (a failed run still leaves them untouched).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TypeVar

from pipeline import options as _options  # noqa: F401  (quiets Beam's import-time warning first)

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from vreloc_tf.data import tfrecord
from vreloc_tf.errors import InputError
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.data.schema import MANIFEST_NAME, encode_record

LOG = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"  # the tag of dead-letter outputs
DEAD_LETTER_DIR = "dead_letter"  # DATA_DIR/dead_letter/<split>.jsonl
SHARD_PATTERN = "*-*-of-*.tfrecord"
_RECORDS = "records"
T = TypeVar("T")


class ReconciliationError(RuntimeError):
    """The outputs do not add up: read != written + dead-lettered for some split."""


class DatasetMixError(InputError):
    """The output folder holds splits of another source or feature dim that this run would keep."""


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
            entry[3] += tfrecord.write_record(entry[0], payload)
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
    """``vreloc_tf.data.schema.Record`` elements -> staged TFRecord files, per split; yields (split, 1) tokens."""

    def __init__(self, staging_dir: str, max_file_bytes: int = 256 << 20, label: Optional[str] = None):
        super().__init__(label)
        self.staging_dir, self.max_file_bytes = staging_dir, max_file_bytes

    def expand(self, records):
        return (records
                | "Encode" >> beam.Map(_encode_keyed)
                | "WriteFiles" >> beam.ParDo(WriteBundleFilesFn(self.staging_dir, _RECORDS, ".tfrecord", "tfrecord",
                                                                self.max_file_bytes)))


def _encode_keyed(record):
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
    """Records in one TFRecord file on any Beam file system, every length and data checksum checked
    (``vreloc_tf.data.tfrecord.CorruptRecordError`` naming the file and byte offset otherwise)."""
    from apache_beam.io.filesystem import CompressionTypes

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return tfrecord.count_stream(fh, path)


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


@dataclasses.dataclass
class SplitCounts:
    read: int
    written: int
    dead_lettered: int

    def reconciles(self) -> bool:
        return self.read == self.written + self.dead_lettered


def count_staged(staging_dir: str, read_counts: Dict[str, int]) -> Dict[str, SplitCounts]:
    """Count the staged outputs of every split (not Beam metrics: some runners report none)."""
    counts = {}
    for split, read in read_counts.items():
        written = sum(count_tfrecords(p) for p in match_files(
            FileSystems.join(staging_path(staging_dir, _RECORDS, split), "*.tfrecord")))
        dead = sum(count_lines(p) for p in match_files(
            FileSystems.join(staging_path(staging_dir, DEAD_LETTER_DIR, split), "*.jsonl")))
        counts[split] = SplitCounts(read, written, dead)
    return counts


# --------------------------------------------------------------------------- the manifest


def read_existing_manifest(data_dir: str) -> Optional[DataManifest]:
    """The manifest of ``data_dir`` if it has one, else None.

    :meth:`vreloc_tf.data.manifest.DataManifest.read` is the one reader; it reads plain paths.
    A remote folder's (gs://...) manifest is first copied to a local temporary
    folder through Beam's FileSystems, so the parsing still happens there only.
    """
    path = FileSystems.join(data_dir, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return None
    if FileSystems.get_scheme(data_dir) is None:
        return DataManifest.read(data_dir)
    with tempfile.TemporaryDirectory(prefix="vreloc-manifest-") as local:
        with FileSystems.open(path) as src, open(os.path.join(local, MANIFEST_NAME), "wb") as dst:
            shutil.copyfileobj(src, dst)
        return DataManifest.read(local)


def split_source(manifest: DataManifest, split: str) -> Optional[dict]:
    """Where a split of an existing manifest came from (older manifests: the folder-wide ``source``)."""
    return (manifest.splits or {}).get(split, {}).get("source", manifest.source)


def check_no_mixing(data_dir: str, feature_dim: int, source: dict, splits: Iterable[str],
                    overwrite: bool = False) -> None:
    """Refuse to publish beside kept splits of another feature dim or another source (unless ``overwrite``)."""
    previous = read_existing_manifest(data_dir)
    if overwrite or not previous:
        return
    kept = sorted(set(previous.splits or {}) - set(splits))
    if not kept:
        return  # every split of the folder is rewritten: nothing old stays beside the new
    old_dim = int(feature_dim if previous.feature_dim is None else previous.feature_dim)
    if old_dim != int(feature_dim):
        raise DatasetMixError(
            f"{data_dir}: already holds splits {kept} with feature_dim {old_dim}; writing feature_dim "
            f"{feature_dim} there would mix dims (use another --out folder, or --overwrite to replace them)")
    other = [s for s in kept if split_source(previous, s) != source]
    if other:
        theirs = split_source(previous, other[0]) or {}
        raise DatasetMixError(
            f"{data_dir}: already holds splits {other} from another source "
            f"({theirs.get('job', '?')} of {_source_text(theirs)}, not {_source_text(source)}); "
            f"this run would leave them beside its own (use another --out folder, or --overwrite to replace them)")


def _source_text(source: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(source.items()) if k != "job") or "unknown inputs"


def write_manifest(data_dir: str, fields: dict, source: dict, counts: Dict[str, SplitCounts],
                   shards: Dict[str, List[str]], previous: Optional[DataManifest]) -> DataManifest:
    """Write ``manifest.json``: this run's splits, each with its source, plus ``previous``'s other splits.

    The file is :meth:`DataManifest.encode`'s bytes (the one writer), written here through Beam's
    FileSystems so a gs:// folder gets it too.
    """
    splits = dict(previous.splits or {}) if previous is not None else {}
    for split, old in list(splits.items()):
        splits[split] = {"source": split_source(previous, split), **old}  # older manifests name no source per split
    splits.update({s: {**dataclasses.asdict(c), "shards": shards.get(s, []), "source": source}
                   for s, c in counts.items()})
    manifest = DataManifest.of_job(fields, source, splits)
    _write_atomically(FileSystems.join(data_dir, MANIFEST_NAME), manifest.encode())
    return manifest


def _write_atomically(path: str, body: bytes) -> None:
    """tmp-then-rename through FileSystems (vreloc_tf.files does it for plain paths; these may be gs://)."""
    tmp = path + ".inprogress"
    with FileSystems.create(tmp) as fh:
        fh.write(body)
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([tmp], [path])


# --------------------------------------------------------------------------- publishing


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def remove_dataset(data_dir: str) -> None:
    """Delete a data folder's shards, dead letters and manifest (what ``overwrite`` replaces)."""
    old = match_files(FileSystems.join(data_dir, SHARD_PATTERN))
    old += match_files(FileSystems.join(data_dir, DEAD_LETTER_DIR, "*.jsonl"))
    old += [p for p in [FileSystems.join(data_dir, MANIFEST_NAME)] if FileSystems.exists(p)]
    if old:
        FileSystems.delete(old)


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
        body = b""
        for part in match_files(FileSystems.join(staging_path(staging_dir, DEAD_LETTER_DIR, split), "*.jsonl")):
            with FileSystems.open(part) as fh:
                body += fh.read()
        _write_atomically(FileSystems.join(data_dir, DEAD_LETTER_DIR, f"{split}.jsonl"), body)


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


# --------------------------------------------------------------------------- one run


@dataclasses.dataclass(frozen=True)
class JobSummary(Mapping):
    """What a job published: per-split counts (pseudo-splits included), the manifest, the time it took.

    It reads as the mapping split -> :class:`SplitCounts` too (``summary["train"]``,
    ``summary.items()``), which is what callers of the launchers mostly need.
    """

    job: str
    data_dir: str
    feature_dim: int
    counts: Dict[str, SplitCounts]
    manifest: dict
    seconds: float

    def __getitem__(self, split: str) -> SplitCounts:
        return self.counts[split]

    def __iter__(self):
        return iter(self.counts)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def written(self) -> int:
        return sum(c.written for c in self.counts.values())

    @property
    def dead_lettered(self) -> int:
        return sum(c.dead_lettered for c in self.counts.values())

    def report(self) -> str:
        """One line per split and a total line: what ``vreloc ingest-activitynet``/``extract-video`` print."""
        lines = [f"{self.job}: {split}: read {c.read}, written {c.written}, dead-lettered {c.dead_lettered}"
                 + (f" (see {FileSystems.join(self.data_dir, DEAD_LETTER_DIR, split + '.jsonl')})"
                    if c.dead_lettered else "")
                 for split, c in self.counts.items()]
        lines.append(f"{self.job}: {self.written} records in {self.seconds:.1f} s "
                     f"({self.written / max(self.seconds, 1e-9):.1f} records/s) -> {self.data_dir}")
        return "\n".join(lines)


def run_job(job: str, options, out_dir: str, build: Callable[[beam.Pipeline, str], Sequence[beam.PCollection]],
            finish: Callable[[str, object], T]) -> T:
    """The one Beam job runner (every job here: ingest, extract-video, the index build); ``finish``'s value.

    Makes ``out_dir`` if needed and a fresh staging folder ``out_dir/.staging-<uuid>``;
    ``build(pipeline, staging_dir)`` composes the job and returns the token PCollections of its
    writers, which are flattened into one last transform (the Dask runner computes only the last
    one); runs the pipeline and waits (closing the Dask runner's client); then
    ``finish(staging_dir, result)`` counts, reconciles and publishes what was staged. The staging
    folder is deleted whatever happens, so a failed run leaves the previous outputs as they were.
    """
    if not FileSystems.exists(out_dir):
        FileSystems.mkdirs(out_dir)
    staging_dir = FileSystems.join(out_dir, f".staging-{uuid.uuid4().hex[:12]}")
    t0 = time.time()
    try:
        pipeline = beam.Pipeline(options=options)
        tokens = build(pipeline, staging_dir)
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
        return finish(staging_dir, result)
    finally:
        if FileSystems.exists(staging_dir):
            FileSystems.delete([staging_dir])


def check_reconciled(job: str, counts: Mapping, unchanged: str) -> None:
    """:class:`ReconciliationError` unless every split's counts reconcile (``counts``: split -> a dataclass
    whose first field is what was read and the others where each read input went, with ``reconciles()``);
    ``unchanged`` says what a failed run leaves as it was."""
    bad = {s: c for s, c in counts.items() if not c.reconciles()}
    if bad:
        names = [f.name for f in dataclasses.fields(next(iter(bad.values())))]
        raise ReconciliationError(
            f"{job}: counts do not reconcile ({names[0]} != {' + '.join(names[1:])}): "
            + "; ".join(f"{s}: " + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(c).items())
                        for s, c in bad.items()) + f"; {unchanged}")


def run_and_publish(job: str, options, data_dir: str, read_counts: Dict[str, int],
                    build: Callable[[beam.Pipeline, str], Sequence[beam.PCollection]],
                    manifest_fields: dict, source: dict, shardless: Sequence[str] = (),
                    on_success: Optional[Callable[[str], dict]] = None, overwrite: bool = False) -> JobSummary:
    """Build, run (:func:`run_job`), count, reconcile, publish, write the manifest; the :class:`JobSummary`.

    ``build(pipeline, staging_dir)`` composes the job and returns the token
    PCollections of its writers. ``manifest_fields`` must hold ``feature_dim``;
    ``source`` (the job and its inputs) is recorded for every split written and
    checked against the splits the folder keeps (:func:`check_no_mixing`).
    ``shardless``: pseudo-splits that only ever hold dead letters (e.g. videos
    without annotations): counted and reconciled, their dead letters
    published, but no shards and no entry under the manifest's ``splits``
    (they go under ``unassigned``). ``on_success(staging_dir)`` publishes a
    job's extra artifacts once the counts reconcile and returns extra manifest
    fields. ``overwrite``: replace whatever dataset the folder holds.
    Raises :class:`ReconciliationError` (leaving the previous outputs in place)
    when the counts do not add up.
    """
    record_names = [s for s in read_counts if s not in shardless]
    check_no_mixing(data_dir, manifest_fields["feature_dim"], source, record_names, overwrite)
    t0 = time.time()

    def publish_staged(staging_dir: str, result) -> JobSummary:
        counts = count_staged(staging_dir, read_counts)
        compare_with_metrics(job, result, counts)
        check_reconciled(job, counts, f"previous outputs in {data_dir} left unchanged")
        extra = on_success(staging_dir) if on_success else {}
        previous = None if overwrite else read_existing_manifest(data_dir)
        if overwrite:
            remove_dataset(data_dir)
        elif previous and int(-1 if previous.feature_dim is None else previous.feature_dim) \
                != int(manifest_fields["feature_dim"]):
            previous = None  # every old split is rewritten (check_no_mixing): keep none of their entries
        record_splits = {s: c for s, c in counts.items() if s not in shardless}
        shards = publish(staging_dir, data_dir, record_splits)
        publish_dead_letters(staging_dir, data_dir, [s for s in counts if s in shardless])
        unassigned = {s: dataclasses.asdict(c) for s, c in counts.items() if s in shardless}
        manifest = write_manifest(
            data_dir, {**manifest_fields, **extra, **({"unassigned": unassigned} if unassigned else {})},
            source, record_splits, shards, previous)
        LOG.info("%s: counted, published and wrote the manifest at %.1f s", job, time.time() - t0)
        return JobSummary(job, data_dir, int(manifest_fields["feature_dim"]), counts, manifest.to_json(),
                          time.time() - t0)

    return run_job(job, options, data_dir, build, publish_staged)
