"""The index job: TFRecords of ingest/extract-video -> one library item per video -> a library index (``vreloc index``).

Beam does the per-video work (decode the records, check them, merge the records of each video,
embed the windows of every piece at every scale; with ``encoder`` embeddings a model call per
piece), so the build scales out with the runner; the launcher then appends what the job staged to
the FAISS index and the metadata parts (vreloc_tf.search.library), which FAISS needs in one
process anyway.

    (split, shard path) --ReadRecords--> Record, or a dead letter (truncated shard, undecodable
                          record, another feature dim) with the reason
        --MergeVideos--> Piece per contiguous run of a video's features: GroupByKey on the video id
                          (across the splits read), then the records whose windows overlap or touch are
                          merged into one feature array (:func:`merge_records`); windows apart stay
                          separate pieces of the same video. A record whose features disagree with the
                          piece's on the overlap, or whose frame rate differs, is dead-lettered.
        --EmbedPieces--> VideoEmbedding (one per piece: its windows at every scale)
        --WriteEmbedded / WriteDeadLetters--> INDEX/.staging-<uuid>/   (pipeline.staged_sink's writers)

Why merge: a video with two annotated instances is two records (two windows, each centred on an
instance); indexed as two items, search returned the same video (often the same segment) twice.

The launcher first counts the input records through ``vreloc_tf.data.tfrecord`` (both checksums of every
record checked): a damaged shard is refused there, a DataError naming the file and byte offset, before
the job runs (the job's own dead letter for an unreadable shard only catches one damaged later). The
job runs on ``staged_sink.run_job``, the runner every Beam job here shares.

Counts, per split, before anything is appended: records read = added (a record that starts a
piece; the piece is staged under its split) + merged (into another record's piece) +
dead-lettered, or nothing is appended (:class:`staged_sink.ReconciliationError`). At append time
(``vreloc index add``), a piece of a video already in the index that overlaps one of its live
pieces is dead-lettered (every record of it), not added twice; a disjoint one becomes one more
piece of that video. Dead letters land in ``INDEX/dead_letter/<split>.jsonl``; Beam counters
``vreloc:written_<split>`` (pieces) / ``merged_<split>`` / ``dead_lettered_<split>`` are
cross-checked with the counted files.

The index records the data's FeatureSpec and a copy of its PCA; ``--model RUN`` is optional
(without it the index re-localizes with the training-free frame-level method, and embeddings must
be ``raw``); a run or a data folder whose features were made otherwise is refused.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import time
import typing
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from pipeline import options, staged_sink  # options first: it quiets Beam's import-time warning

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from vreloc_tf.data import schema
from vreloc_tf.data import tfrecord
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.errors import InputError
from vreloc_tf.files import file_sha256
from vreloc_tf.data.schema import SchemaError, decode_record
from vreloc_tf.search.embedding import DEFAULT_KIND, DEFAULT_SCALES, Embedder, EmbeddingSpec, encoder_of
from vreloc_tf.search.library import MANIFEST, Index, LibraryIndex, VideoEmbedding, check_pca_file
from vreloc_tf.search.relocalize import Relocalizer

LOG = logging.getLogger(__name__)

JOB = "index-build"
EMBEDDED = "embedded"  # staging kind of the embedded pieces
PART_PIECES = 50_000  # pieces per index part (bounds the launcher's memory while appending)
PROGRESS_EVERY = 500
# Records of one video hold copies of the same feature rows where their windows overlap; the
# tolerance only absorbs float32 round trips (a PCA re-applied, a re-encoded shard).
MERGE_RTOL = 1e-4
MERGE_ATOL = 1e-5
ALREADY_INDEXED = "already in the index (remove it first to replace it)"


# --------------------------------------------------------------------------- inputs


def count_inputs(shards: Dict[str, List[str]]) -> Dict[str, int]:
    """Records per split of the input shards, both checksums of every record checked: a damaged shard
    is refused here, before the job (``vreloc_tf.data.tfrecord.CorruptRecordError`` naming the file and byte)."""
    return {split: sum(tfrecord.count_records(p) for p in paths) for split, paths in shards.items()}


def shards_of(data_dir: str, splits: Optional[Sequence[str]]) -> Dict[str, List[str]]:
    """Shard files per split (every split of the data folder when ``splits`` is None)."""
    dataset = Dataset.open(data_dir)

    def files(split):
        try:
            return schema.shard_files(data_dir, split)
        except (InputError, FileNotFoundError):
            return []

    def found_on_disk():  # splits of the shard names (e.g. `library` of a folder of one's own videos)
        pattern = re.compile(r"^(.+)-\d{5}-of-\d{5}" + re.escape(schema.SHARD_SUFFIX) + "$")
        names = {m.group(1) for m in (pattern.match(os.path.basename(p)) for p in
                                      glob.glob(os.path.join(data_dir, "*" + schema.SHARD_SUFFIX))) if m}
        return [s for s in schema.SPLITS if s in names] + sorted(names - set(schema.SPLITS))

    names = list(splits) if splits else (list(dataset.splits) or found_on_disk())
    found = {s: files(s) for s in names}
    missing = [s for s, paths in found.items() if not paths]
    if missing or not found:
        raise InputError(f"--data {data_dir}: no shards of split(s) {', '.join(missing) or 'any'} "
                         f"(expected <split>-SSSSS-of-NNNNN.tfrecord)")
    return found


# --------------------------------------------------------------------------- merging a video's records


@dataclasses.dataclass
class Piece:
    """A contiguous run of one video's features, from one record or several merged (not yet embedded).

    ``split``/``entry_index``: of its base record (the first by window start); ``merged``: (split,
    entry_index) of the records merged into it; ``label``: -1 where their labels differ.
    """

    video_id: str
    split: str
    entry_index: int
    label: int
    window_start: int
    features: np.ndarray
    fps: float
    frames_per_feature: int
    merged: Tuple[Tuple[str, int], ...] = ()


def _same_rate(a: float, b: float) -> bool:
    return a <= 0 or b <= 0 or abs(a - b) <= 1e-3 * max(a, b)


def merge_records(records: Iterable) -> Tuple[List[Piece], List[Tuple[object, str]]]:
    """(pieces, [(record, reason)] refused) of one video's records (vreloc_tf.data.schema.Record, same video_id).

    Records in order of window start (then longest first, split, entry): one that overlaps or touches
    the current piece extends it (its features must equal the piece's on the overlap, within
    MERGE_RTOL/MERGE_ATOL), one that starts past its end starts a new piece. A record whose frame
    rate (fps, frames per feature) differs from the video's first record's is refused; so is one
    whose features disagree on the overlap (it is left out; the piece goes on without it).
    """
    order = sorted(records, key=lambda r: (int(r.window[0]), -int(r.window[1]), r.split, int(r.entry_index)))
    pieces: List[Piece] = []
    chunks: List[List[np.ndarray]] = []  # per piece: feature arrays to concatenate at the end
    ends: List[int] = []
    refused: List[Tuple[object, str]] = []
    if not order:
        return pieces, refused
    first = order[0]
    fps = next((float(r.fps) for r in order if float(r.fps) > 0), float(first.fps))
    for rec in order:
        w0, w1 = int(rec.window[0]), int(rec.window[1])
        if int(rec.frames_per_feature) != int(first.frames_per_feature) or not _same_rate(float(rec.fps), fps):
            refused.append((rec, f"frame rate differs from the video's other records ({float(rec.fps):g} fps, "
                                 f"{int(rec.frames_per_feature)} frames per feature vs {fps:g} fps, "
                                 f"{int(first.frames_per_feature)} of {first.split} entry {first.entry_index}); "
                                 f"not merged"))
            continue
        if pieces and w0 <= ends[-1]:
            piece, end = pieces[-1], ends[-1]
            overlap = min(w1, end) - w0
            if overlap > 0:
                held = np.concatenate(chunks[-1])[w0 - piece.window_start:w0 - piece.window_start + overlap]
                mine = np.asarray(rec.features[:overlap], np.float32)
                if not np.allclose(held, mine, rtol=MERGE_RTOL, atol=MERGE_ATOL):
                    diff = float(np.max(np.abs(held - mine)))
                    refused.append((rec, f"features differ from {piece.split} entry {piece.entry_index} of the same "
                                         f"video on the overlap [{w0}, {w0 + overlap}) (max |difference| {diff:.3g}, "
                                         f"tolerance rtol {MERGE_RTOL:g}, atol {MERGE_ATOL:g}); not merged"))
                    continue
            if w1 > end:
                chunks[-1].append(np.asarray(rec.features[end - w0:], np.float32))
                ends[-1] = w1
            piece.merged += ((rec.split, int(rec.entry_index)),)
            if int(rec.label) != piece.label:
                piece.label = -1
        else:
            pieces.append(Piece(rec.video_id, rec.split, int(rec.entry_index), int(rec.label), w0, None, fps,
                                int(first.frames_per_feature)))
            chunks.append([np.asarray(rec.features, np.float32)])
            ends.append(w1)
    for piece, parts in zip(pieces, chunks):
        piece.features = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return pieces, refused


# --------------------------------------------------------------------------- transforms


class ReadShardFn(beam.DoFn):
    """(split, shard path) -> (split, serialized record); a truncated tail -> one dead letter."""

    def process(self, element):
        split, path = element
        try:
            for _, data in tfrecord.iter_records(path):
                yield split, data
        except tfrecord.CorruptRecordError as exc:
            yield staged_sink.dead_letter(split, f"unreadable shard: {exc}", {"shard": path}, -1, path)


class DecodeRecordFn(beam.DoFn):
    """(split, serialized record) -> Record, or a dead letter (undecodable, another feature dim)."""

    def __init__(self, feature_dim: int):
        self.feature_dim = int(feature_dim)

    def process(self, element):
        from google.protobuf.message import DecodeError

        split, data = element
        try:
            rec = decode_record(data)
            rec.validate()
        except (SchemaError, DecodeError, IndexError, KeyError, ValueError) as exc:
            yield staged_sink.dead_letter(split, f"undecodable record: {exc}", {"bytes": len(data)})
            return
        if rec.feature_dim != self.feature_dim:
            yield staged_sink.dead_letter(split, f"{rec.feature_dim}-d features, the index holds "
                                          f"{self.feature_dim}-d features",
                                          {"video_id": rec.video_id, "entry_index": rec.entry_index}, rec.entry_index)
            return
        if rec.split != split:  # the shard's split is the one counted
            rec = dataclasses.replace(rec, split=split)
        yield rec


class MergeVideoFn(beam.DoFn):
    """(video_id, records) -> Piece per contiguous run (:func:`merge_records`), dead letters for refused records."""

    def process(self, element):
        _, records = element
        pieces, refused = merge_records(records)
        for rec, reason in refused:
            yield staged_sink.dead_letter(rec.split, reason, {"video_id": rec.video_id, "entry_index": rec.entry_index,
                                                              "window": [int(v) for v in rec.window]}, rec.entry_index)
        for piece in pieces:
            for split, _ in piece.merged:
                Metrics.counter("vreloc", f"merged_{split}").inc()
            yield piece


class EmbedPieceFn(beam.DoFn):
    """Piece -> VideoEmbedding: its windows at every scale and their vectors.

    ``run`` (kind ``encoder`` only; the opened :class:`Run`, pickled with the DoFn): its model is
    loaded once per worker in ``setup``.
    """

    def __init__(self, feature_dim: int, spec: EmbeddingSpec, run: Optional[Run] = None):
        self.feature_dim, self.spec, self.run = int(feature_dim), spec, run
        self._embedder = None
        self._seen = 0

    def setup(self):
        encoder = None
        if self.spec.kind == "encoder":
            encoder = encoder_of(self.run.load_model())
        self._embedder = Embedder(self.spec, self.feature_dim, encoder)

    def process(self, piece: Piece):
        if self._embedder is None:
            self.setup()
        spans, vectors = self._embedder.windows(piece.features)
        Metrics.counter("vreloc", f"written_{piece.split}").inc()
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            LOG.info("%s: embedded %d pieces in this worker", JOB, self._seen)
        yield VideoEmbedding(piece.video_id, piece.split, piece.entry_index, piece.label, piece.window_start,
                             piece.features, spans, vectors, piece.fps, piece.frames_per_feature, piece.merged)


class ReadRecords(beam.PTransform):
    """(split, shard path) -> (Record, dead letters)."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim

    def expand(self, shards):
        read = shards | "ReadShards" >> beam.ParDo(ReadShardFn()).with_outputs(staged_sink.DEAD_LETTER)
        serialized, bad_shards = staged_sink.split_dead_letters(read, "ReadShards")
        decoded = serialized | "Decode" >> beam.ParDo(DecodeRecordFn(self.feature_dim)).with_outputs(
            staged_sink.DEAD_LETTER)
        records, bad_records = staged_sink.split_dead_letters(decoded, "Decode")
        return records, (bad_shards, bad_records) | "ReadDeadLetters" >> beam.Flatten()


class MergeVideos(beam.PTransform):
    """Record -> (Piece, dead letters): one video's records grouped by video id, then merged."""

    def expand(self, records):
        merged = (records
                  | "KeyByVideo" >> beam.Map(lambda rec: (rec.video_id, rec)).with_output_types(
                      beam.typehints.KV[str, typing.Any])
                  | "GroupByVideo" >> beam.GroupByKey()
                  | "Merge" >> beam.ParDo(MergeVideoFn()).with_outputs(staged_sink.DEAD_LETTER))
        return staged_sink.split_dead_letters(merged, "Merge")


class EmbedVideos(beam.PTransform):
    """(split, shard path) -> (VideoEmbedding per piece, dead letters): read, merge per video, embed."""

    def __init__(self, feature_dim: int, spec: EmbeddingSpec, run: Optional[Run] = None):
        super().__init__()
        self.feature_dim, self.spec, self.run = feature_dim, spec, run

    def expand(self, shards):
        records, bad_reads = shards | "ReadRecords" >> ReadRecords(self.feature_dim)
        pieces, bad_merges = records | "MergeVideos" >> MergeVideos()
        embedded = pieces | "EmbedPieces" >> beam.ParDo(EmbedPieceFn(self.feature_dim, self.spec, self.run))
        return embedded, (bad_reads, bad_merges) | "AllDeadLetters" >> beam.Flatten()


class WriteEmbedded(beam.PTransform):
    """VideoEmbedding elements -> staged files per base split (TFRecord framing, .npz payloads); (split, 1) tokens."""

    def __init__(self, staging_dir: str):
        super().__init__()
        self.staging_dir = staging_dir

    def expand(self, videos):
        return (videos
                | "Encode" >> beam.Map(lambda v: (v.split, v.to_bytes()))
                | "WriteFiles" >> beam.ParDo(staged_sink.WriteBundleFilesFn(self.staging_dir, EMBEDDED, ".tfrecord",
                                                                            "tfrecord")))


def build(pipeline, staging_dir: str, shards: Dict[str, List[str]], feature_dim: int, spec: EmbeddingSpec,
          run: Optional[Run]):
    """The job graph; returns the writers' token PCollections."""
    pairs = sorted((split, path) for split, paths in shards.items() for path in paths)
    videos, dead = (pipeline | "Shards" >> beam.Create(pairs)
                    | "EmbedVideos" >> EmbedVideos(feature_dim, spec, run))
    return [videos | "WriteEmbedded" >> WriteEmbedded(staging_dir),
            dead | "WriteDeadLetters" >> staged_sink.WriteDeadLetters(staging_dir)]


# --------------------------------------------------------------------------- the launcher


@dataclasses.dataclass
class IndexCounts:
    """One split's records: read = added (started a piece) + merged (into another's piece) + dead-lettered."""

    read: int
    added: int = 0
    merged: int = 0
    dead_lettered: int = 0

    def reconciles(self) -> bool:
        return self.read == self.added + self.merged + self.dead_lettered


def staging_sink_path(staging_dir: str, split: str) -> str:
    return staged_sink.staging_path(staging_dir, EMBEDDED, split)


def _staged_pieces(staging_dir: str, split: str) -> List[str]:
    return staged_sink.match_files(os.path.join(staging_sink_path(staging_dir, split), "*.tfrecord"))


def _staged_dead_letters(staging_dir: str, split: str) -> List[str]:
    return staged_sink.match_files(os.path.join(
        staged_sink.staging_path(staging_dir, staged_sink.DEAD_LETTER_DIR, split), "*.jsonl"))


def against_index(index: LibraryIndex, pieces: Sequence[VideoEmbedding]):
    """(fresh pieces, [(piece, reason)] refused): a piece of a video already in the index that overlaps
    one of its live pieces is refused; a disjoint one is fresh (one more piece of that video)."""
    held = index.live_spans({p.video_id for p in pieces})
    fresh, refused = [], []
    for p in pieces:
        a, b = p.source_span
        spans = held.get(p.video_id, ())
        overlapping = [(s, e) for s, e in spans if s < b and a < e]
        if any(s <= a and b <= e for s, e in spans):
            refused.append((p, ALREADY_INDEXED))
        elif overlapping:
            refused.append((p, f"overlaps the video's piece(s) {', '.join(f'[{s}, {e})' for s, e in overlapping)} "
                               f"already in the index (remove the video and add all of it again)"))
        else:
            fresh.append(p)
    return fresh, refused


def _data_pca(dataset) -> Optional[str]:
    """The PCA that made the data's features: the spec's (or the manifest's ``pca_file``), resolved
    against the data folder; where no such file exists but the path as recorded does (extract-video
    recorded ``--pca`` as given, relative to the folder it ran in), that one."""
    spec = dataset.feature_spec
    resolved = spec.pca_file if spec else dataset.pca_file
    raw = (dataset.manifest.features or {}).get("pca_file") if spec else dataset.manifest.pca_file
    if resolved and "://" not in resolved and not os.path.exists(resolved) and raw and "://" not in raw \
            and os.path.isfile(raw):
        return os.path.abspath(raw)
    return resolved


@dataclasses.dataclass(frozen=True)
class IndexBuild:
    """What ``index build|add`` made: the :class:`Index` (for the next stage to open as it is) and the
    summary :func:`report` prints (counts per split, seconds, records/s)."""

    index: Index
    summary: dict


def run(target, dataset: Dataset, model: Optional[Run] = None, splits: Optional[Sequence[str]] = None,
        kind: str = DEFAULT_KIND, scales: Sequence[int] = DEFAULT_SCALES, index_type: str = "auto",
        runner: str = options.DEFAULT_RUNNER, beam_args: Sequence[str] = (), overwrite: bool = False) -> IndexBuild:
    """Build a new index in the folder ``target`` (a path) or append to ``target`` (an opened
    :class:`Index`: ``index add``) from the TFRecords of ``dataset``; returns the :class:`IndexBuild`.

    ``model``: the opened run whose model re-localizes (build only; None: the frame-level method,
    ``raw`` embeddings only). An append takes the embedding and model from the index.
    """
    t0 = time.time()
    add = isinstance(target, Index)
    index_dir = target.path if add else target
    data_dir = dataset.path
    data_spec = dataset.feature_spec
    shards = shards_of(data_dir, splits)
    if add:
        index = LibraryIndex.load(target)
        if index.feature_dim != dataset.feature_dim:
            raise InputError(f"--data {data_dir} holds {dataset.feature_dim}-d features but the index {index_dir} "
                             f"holds {index.feature_dim}-d features")
        if index.feature_spec is not None:
            index.feature_spec.check_same(data_spec, f"the index {index_dir}", f"--data {data_dir}",
                                          "index it into an index of its own")
        spec = index.embedding
        trained = Run.open(index.model_run) if spec.kind == "encoder" else None  # the run the index records
        pca_source = None
    else:
        spec = EmbeddingSpec(kind, tuple(int(s) for s in scales))
        if spec.kind == "encoder" and model is None:
            raise InputError("--embedding encoder needs --model RUN (the window vectors come from its reference "
                             "encoder); without a model use --embedding raw")
        if os.path.exists(os.path.join(index_dir, MANIFEST)) and not overwrite:
            raise InputError(f"--out {index_dir}: already holds an index; add videos with `vreloc index add`, "
                             f"or rebuild with --overwrite")
        index, trained = None, model  # the index is made once the counts reconcile
        if model is not None:
            if trained.manifest.feature_dim != dataset.feature_dim:
                raise InputError(f"--model {model.path} takes {trained.manifest.feature_dim}-d features but --data "
                                 f"{data_dir} holds {dataset.feature_dim}-d features")
            if trained.feature_spec is not None:
                trained.feature_spec.check_same(data_spec, f"--model {model.path}", f"--data {data_dir}",
                                                "index data made like the run's training features")
        pca_source = _data_pca(dataset)
        check_pca_file(pca_source, data_spec)  # before the job, not after it
    run_dir = trained.path if trained is not None else None
    read_counts = count_inputs(shards)
    LOG.info("%s: %d records of %s from %s, %s embeddings at scales %s, re-localized by %s, runner %s", JOB,
             sum(read_counts.values()), "/".join(shards), data_dir, spec.kind, list(spec.scales),
             run_dir or "the frame-level method", runner)

    def append_staged(staging_dir: str, result) -> dict:
        """Count and reconcile what the job staged, then append its pieces to the index; the summary."""
        t_job = time.time() - t0
        counts = {s: IndexCounts(read) for s, read in read_counts.items()}
        pieces: List[VideoEmbedding] = []
        for split in shards:
            paths = _staged_pieces(staging_dir, split)
            counts[split].added = sum(staged_sink.count_tfrecords(p) for p in paths)  # checks every CRC
            counts[split].dead_lettered = sum(staged_sink.count_lines(p)
                                              for p in _staged_dead_letters(staging_dir, split))
            for path in paths:
                pieces.extend(VideoEmbedding.from_bytes(data) for _, data in tfrecord.iter_records(path))
        for piece in pieces:
            for split, _ in piece.merged:
                counts[split].merged += 1
        staged_sink.compare_with_metrics(JOB, result, {s: staged_sink.SplitCounts(c.read, c.added, c.dead_lettered)
                                                       for s, c in counts.items()})
        staged_sink.check_reconciled(JOB, counts, f"the index in {index_dir} is unchanged")
        pieces.sort(key=lambda v: (v.video_id, v.window_start, v.split, v.entry_index))
        target = index if index is not None else _create_index(index_dir, dataset, spec, trained, run_dir, index_type,
                                                                overwrite, pca_source)
        built.append(target)
        fresh, refused = against_index(target, pieces)
        new_videos = len({p.video_id for p in fresh} - target.live_video_ids(among={p.video_id for p in fresh}))
        for i in range(0, len(fresh), PART_PIECES):
            target.append(fresh[i:i + PART_PIECES])
            LOG.info("%s: appended %d/%d pieces to %s", JOB, min(i + PART_PIECES, len(fresh)), len(fresh), index_dir)
        for piece, _ in refused:
            counts[piece.split].added -= 1
            counts[piece.split].dead_lettered += 1
            for split, _ in piece.merged:
                counts[split].merged -= 1
                counts[split].dead_lettered += 1
        _publish_dead_letters(staging_dir, index_dir, shards, refused)
        total = sum(c.read for c in counts.values())
        return {"job": JOB, "index": os.path.abspath(index_dir), "relocalizer": target.relocalizer,
                "counts": {s: dataclasses.asdict(c) for s, c in counts.items()},
                "added": {"videos": new_videos, "pieces": len(fresh),
                          "windows": int(sum(len(p.spans) for p in fresh))},
                "videos": target.live_videos, "pieces": target.live_pieces, "windows": target.live_windows,
                "seconds": round(time.time() - t0, 2), "job_seconds": round(t_job, 2),
                "records_per_second": round(total / max(t_job, 1e-9), 1)}

    built: List[LibraryIndex] = []
    summary = staged_sink.run_job(
        JOB, options.pipeline_options(runner, beam_args), index_dir,
        lambda pipeline, staging_dir: build(pipeline, staging_dir, shards, dataset.feature_dim, spec,
                                            trained if spec.kind == "encoder" else None),
        append_staged)
    return IndexBuild(Index(built[0].path, built[0].manifest, built[0].format_on_disk), summary)


def _create_index(index_dir: str, dataset, spec: EmbeddingSpec, trained: Optional[Run], run_dir: Optional[str],
                  index_type: str, overwrite: bool, pca_source: Optional[str]) -> LibraryIndex:
    """A new, empty index for ``index build`` (once the job's counts reconcile); ``trained``: the run
    whose model re-localizes (None: the frame-level method)."""
    encoder_dim, model_info = None, None
    if trained is not None:
        if spec.kind == "encoder":
            encoder_dim = int(Relocalizer.from_run(trained).encoder().units)
        model_info = {"run": run_dir, "model_sha256": file_sha256(trained.model_file),
                      "feature_dim": int(trained.manifest.feature_dim), "decode": trained.manifest.decode}
    return LibraryIndex.create(index_dir, dataset.feature_dim, spec, encoder_dim or dataset.feature_dim,
                               model_info, index_type, overwrite=overwrite, features=dataset.feature_spec,
                               pca_file=pca_source, relocalizer="model" if trained is not None else "frame-level")


def _publish_dead_letters(staging_dir: str, index_dir: str, shards, refused) -> None:
    """The job's dead letters and the append's refusals (one per record of a refused piece) to
    ``INDEX/dead_letter/<split>.jsonl`` (appended)."""
    lines: Dict[str, List[str]] = {split: [] for split in shards}
    for split in shards:
        for path in _staged_dead_letters(staging_dir, split):
            with open(path) as fh:
                lines[split].extend(line.rstrip("\n") for line in fh if line.strip())
    for piece, reason in refused:
        for split, entry in ((piece.split, piece.entry_index),) + tuple(piece.merged):
            lines.setdefault(split, []).append(staged_sink.DeadLetter(
                split, reason, {"video_id": piece.video_id, "entry_index": int(entry)}, int(entry)).to_json())
    folder = os.path.join(index_dir, staged_sink.DEAD_LETTER_DIR)
    for split, found in lines.items():
        if found:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{split}.jsonl"), "a") as fh:
                fh.write("\n".join(found) + "\n")


def report(summary: dict) -> str:
    """The lines `vreloc index build|add` prints: per split the records' fates, then what the index holds."""
    lines = [f"{JOB}: {s}: read {c['read']} records: added {c['added']}, merged into another record's piece "
             f"{c['merged']}, dead-lettered {c['dead_lettered']}" for s, c in summary["counts"].items()]
    added = summary["added"]
    lines.append(f"{JOB}: added {added['videos']} new videos in {added['pieces']} pieces ({added['windows']} windows); "
                 f"the index {summary['index']} holds {summary['videos']} videos in {summary['pieces']} pieces, "
                 f"{summary['windows']} windows, re-localized by {summary['relocalizer']}; {summary['seconds']} s "
                 f"({summary['records_per_second']} records/s in the Beam job)")
    return "\n".join(lines)
