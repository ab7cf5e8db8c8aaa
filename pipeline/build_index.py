"""The index job: TFRecords of ingest/extract-video -> window embeddings -> a library index (``vreloc index``).

Beam does the per-video work (decode the record, check it, embed its windows at every scale; with
``encoder`` embeddings a model call per video), so the build scales out with the runner; the
launcher then appends what the job staged to the FAISS index and the metadata parts
(vreloc_tf.search.library), which FAISS needs in one process anyway.

    (split, shard path) --ReadShards--> (split, serialized record)
        --EmbedVideos--> VideoEmbedding, or a dead letter (undecodable record, another feature dim,
                          empty or non-finite features) with the reason
        --WriteEmbedded / WriteDeadLetters--> INDEX/.staging-<uuid>/   (pipeline.staged_sink's writers)

The launcher counts the shards' records before the run and the staged outputs after it: read =
embedded + dead-lettered per split, or nothing is appended (:class:`staged_sink.ReconciliationError`).
A video already in the index (same video id, split and entry) is dead-lettered at append time, not
added twice. Dead letters land in ``INDEX/dead_letter/<split>.jsonl``; Beam counters
``vreloc:written_<split>`` / ``dead_lettered_<split>`` are cross-checked with the counted files.
"""
from __future__ import annotations

import logging
import os
import struct
import time
import uuid
from typing import Dict, List, Optional, Sequence

from pipeline import options, staged_sink  # options first: it quiets Beam's import-time warning

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from vreloc_tf.errors import InputError
from vreloc_tf.search.embedding import DEFAULT_KIND, DEFAULT_SCALES, Embedder, EmbeddingSpec
from vreloc_tf.search.library import LibraryIndex, VideoEmbedding

LOG = logging.getLogger(__name__)

JOB = "index-build"
EMBEDDED = "embedded"  # staging kind of the embedded videos
PART_VIDEOS = 50_000  # videos per index part (bounds the launcher's memory while appending)
PROGRESS_EVERY = 500


# --------------------------------------------------------------------------- inputs


def count_records(path: str) -> int:
    """Records in a local TFRecord file, from the length headers only (no data read)."""
    n = 0
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        while fh.tell() < size:
            header = fh.read(12)
            if len(header) < 12:
                break
            (length,) = struct.unpack("<Q", header[:8])
            fh.seek(length + 4, os.SEEK_CUR)
            n += 1
    return n


def shards_of(data_dir: str, splits: Optional[Sequence[str]]) -> Dict[str, List[str]]:
    """Shard files per split (every split of the data folder when ``splits`` is None)."""
    from vreloc_tf import schema
    from vreloc_tf.artifacts import Dataset

    dataset = Dataset.open(data_dir)

    def files(split):
        try:
            return schema.shard_files(data_dir, split)
        except (InputError, FileNotFoundError):
            return []

    names = list(splits) if splits else (list(dataset.splits) or [s for s in schema.SPLITS if files(s)])
    found = {s: files(s) for s in names}
    missing = [s for s, paths in found.items() if not paths]
    if missing or not found:
        raise InputError(f"--data {data_dir}: no shards of split(s) {', '.join(missing) or 'any'} "
                         f"(expected <split>-SSSSS-of-NNNNN.tfrecord)")
    return found


# --------------------------------------------------------------------------- transforms


class ReadShardFn(beam.DoFn):
    """(split, shard path) -> (split, serialized record); a truncated tail -> one dead letter."""

    def process(self, element):
        from vreloc_tf.entry_index import iter_framed
        from vreloc_tf.schema import SchemaError

        split, path = element
        try:
            for _, data in iter_framed(path):
                yield split, data
        except SchemaError as exc:
            yield staged_sink.dead_letter(split, f"unreadable shard: {exc}", {"shard": path}, -1, path)


class EmbedVideoFn(beam.DoFn):
    """(split, serialized record) -> VideoEmbedding, or a dead letter with the reason.

    ``run_dir`` (kind ``encoder`` only): the model is loaded once per worker in ``setup``.
    """

    def __init__(self, feature_dim: int, spec: EmbeddingSpec, run_dir: Optional[str] = None):
        self.feature_dim, self.spec, self.run_dir = int(feature_dim), spec, run_dir
        self._embedder = None
        self._seen = 0

    def setup(self):
        encoder = None
        if self.spec.kind == "encoder":
            from vreloc_tf.artifacts import Run
            from vreloc_tf.search.embedding import encoder_of

            encoder = encoder_of(Run.open(self.run_dir).load_model())
        self._embedder = Embedder(self.spec, self.feature_dim, encoder)

    def process(self, element):
        from google.protobuf.message import DecodeError

        from vreloc_tf.schema import SchemaError, decode_record

        if self._embedder is None:
            self.setup()
        split, data = element
        try:
            rec = decode_record(data)
            rec.validate()
        except (SchemaError, DecodeError, IndexError, KeyError, ValueError) as exc:
            yield staged_sink.dead_letter(split, f"undecodable record: {exc}", {"bytes": len(data)})
            return
        entry = {"video_id": rec.video_id, "entry_index": rec.entry_index}
        if rec.feature_dim != self.feature_dim:
            yield staged_sink.dead_letter(split, f"{rec.feature_dim}-d features, the index holds "
                                          f"{self.feature_dim}-d features", entry, rec.entry_index)
            return
        spans, vectors = self._embedder.windows(rec.features)
        Metrics.counter("vreloc", f"written_{split}").inc()
        self._seen += 1
        if self._seen % PROGRESS_EVERY == 0:
            LOG.info("%s: embedded %d videos in this worker", JOB, self._seen)
        yield VideoEmbedding(rec.video_id, split, rec.entry_index, rec.label, int(rec.window[0]),
                             rec.features, spans, vectors, float(rec.fps), int(rec.frames_per_feature))


class EmbedVideos(beam.PTransform):
    """(split, shard path) -> (VideoEmbedding, dead letters)."""

    def __init__(self, feature_dim: int, spec: EmbeddingSpec, run_dir: Optional[str] = None):
        super().__init__()
        self.feature_dim, self.spec, self.run_dir = feature_dim, spec, run_dir

    def expand(self, shards):
        read = (shards | "ReadShards" >> beam.ParDo(ReadShardFn()).with_outputs(staged_sink.DEAD_LETTER))
        records, bad_shards = staged_sink.split_dead_letters(read, "ReadShards")
        embedded = (records
                    | "Reshuffle" >> beam.Reshuffle()
                    | "Embed" >> beam.ParDo(EmbedVideoFn(self.feature_dim, self.spec, self.run_dir)).with_outputs(
                        staged_sink.DEAD_LETTER))
        videos, bad_records = staged_sink.split_dead_letters(embedded, "Embed")
        dead = (bad_shards, bad_records) | "AllDeadLetters" >> beam.Flatten()
        return videos, dead


class WriteEmbedded(beam.PTransform):
    """VideoEmbedding elements -> staged files (TFRecord framing, .npz payloads); (split, 1) tokens."""

    def __init__(self, staging_dir: str):
        super().__init__()
        self.staging_dir = staging_dir

    def expand(self, videos):
        return (videos
                | "Encode" >> beam.Map(lambda v: (v.split, v.to_bytes()))
                | "WriteFiles" >> beam.ParDo(staged_sink.WriteBundleFilesFn(self.staging_dir, EMBEDDED, ".tfrecord",
                                                                            "tfrecord")))


def build(pipeline, staging_dir: str, shards: Dict[str, List[str]], feature_dim: int, spec: EmbeddingSpec,
          run_dir: Optional[str]):
    """The job graph; returns the writers' token PCollections."""
    pairs = sorted((split, path) for split, paths in shards.items() for path in paths)
    videos, dead = (pipeline | "Shards" >> beam.Create(pairs)
                    | "EmbedVideos" >> EmbedVideos(feature_dim, spec, run_dir))
    return [videos | "WriteEmbedded" >> WriteEmbedded(staging_dir),
            dead | "WriteDeadLetters" >> staged_sink.WriteDeadLetters(staging_dir)]


# --------------------------------------------------------------------------- the launcher


def _staged_videos(staging_dir: str, split: str) -> List[str]:
    return staged_sink.match_files(os.path.join(staging_sink_path(staging_dir, split), "*.tfrecord"))


def staging_sink_path(staging_dir: str, split: str) -> str:
    return staged_sink.staging_path(staging_dir, EMBEDDED, split)


def run(index_dir: str, data_dir: str, model: str, splits: Optional[Sequence[str]] = None, add: bool = False,
        kind: str = DEFAULT_KIND, scales: Sequence[int] = DEFAULT_SCALES, index_type: str = "auto",
        runner: str = options.DEFAULT_RUNNER, beam_args: Sequence[str] = (), overwrite: bool = False) -> dict:
    """Build a new index in ``index_dir`` (``add=False``) or append to the one there (``add=True``)
    from the TFRecords of ``data_dir``; returns the summary (counts per split, seconds, records/s)."""
    from vreloc_tf.artifacts import Dataset, RunManifest
    from vreloc_tf.entry_index import iter_framed
    from vreloc_tf.files import file_sha256

    t0 = time.time()
    dataset = Dataset.open(data_dir)
    shards = shards_of(data_dir, splits)
    run_manifest = RunManifest.read(model)
    if run_manifest.feature_dim != dataset.feature_dim:
        raise InputError(f"--model {model} takes {run_manifest.feature_dim}-d features but --data {data_dir} "
                         f"holds {dataset.feature_dim}-d features")
    if add:
        index = LibraryIndex.open(index_dir)
        if index.feature_dim != dataset.feature_dim:
            raise InputError(f"--data {data_dir} holds {dataset.feature_dim}-d features but the index {index_dir} "
                             f"holds {index.feature_dim}-d features")
        spec = index.embedding
    else:
        spec = EmbeddingSpec(kind, tuple(int(s) for s in scales))
        if os.path.exists(os.path.join(index_dir, "manifest.json")) and not overwrite:
            raise InputError(f"--out {index_dir}: already holds an index; add videos with `vreloc index add`, "
                             f"or rebuild with --overwrite")
    run_dir = os.path.abspath(model)
    read_counts = {s: sum(count_records(p) for p in paths) for s, paths in shards.items()}
    LOG.info("%s: %d records of %s from %s, %s embeddings at scales %s, runner %s", JOB,
             sum(read_counts.values()), "/".join(shards), data_dir, spec.kind, list(spec.scales), runner)
    os.makedirs(index_dir, exist_ok=True)
    staging_dir = os.path.join(index_dir, f".staging-{uuid.uuid4().hex[:12]}")
    try:
        pipeline = beam.Pipeline(options=options.pipeline_options(runner, beam_args))
        tokens = build(pipeline, staging_dir, shards, dataset.feature_dim, spec, run_dir)
        _ = (tuple(tokens) | "AllOutputs" >> beam.Flatten()
             | "CountPerSplit" >> beam.combiners.Count.PerKey()
             | "LogCounts" >> beam.Map(lambda kv: LOG.info("%s: %s: %s elements through the writers", JOB, *kv)))
        result = pipeline.run()
        result.wait_until_finish()
        t_job = time.time() - t0
        counts = {}
        for split, read in read_counts.items():
            embedded = sum(staged_sink.count_tfrecords(p) for p in _staged_videos(staging_dir, split))
            dead = sum(staged_sink.count_lines(p) for p in staged_sink.match_files(os.path.join(
                staged_sink.staging_path(staging_dir, staged_sink.DEAD_LETTER_DIR, split), "*.jsonl")))
            counts[split] = staged_sink.SplitCounts(read, embedded, dead)
        staged_sink.compare_with_metrics(JOB, result, {s: c for s, c in counts.items()})
        bad = {s: c for s, c in counts.items() if not c.reconciles()}
        if bad:
            raise staged_sink.ReconciliationError(
                f"{JOB}: counts do not reconcile (read != embedded + dead_lettered): "
                + "; ".join(f"{s}: {c}" for s, c in bad.items()) + f"; the index in {index_dir} is unchanged")
        videos = []
        for split in shards:
            for path in _staged_videos(staging_dir, split):
                videos.extend(VideoEmbedding.from_bytes(data) for _, data in iter_framed(path))
        videos.sort(key=lambda v: (v.split, v.entry_index, v.video_id))
        if not add:
            encoder_dim = None
            if spec.kind == "encoder":
                from vreloc_tf.search.relocalize import Relocalizer

                encoder_dim = int(Relocalizer.from_run(run_dir).encoder().units)
            model_info = {"run": run_dir, "model_sha256": file_sha256(os.path.join(run_dir, "model.keras")),
                          "feature_dim": int(run_manifest.feature_dim), "decode": run_manifest.decode}
            pca_file = dataset.pca_file
            pca = {"file": pca_file, "sha256": file_sha256(pca_file) if pca_file and os.path.exists(pca_file) else None}
            index = LibraryIndex.create(index_dir, dataset.feature_dim, spec, encoder_dim or dataset.feature_dim,
                                        model_info, pca, index_type, overwrite=overwrite)
        live = index.live_keys()
        duplicates = [v for v in videos if v.key in live]
        fresh = [v for v in videos if v.key not in live]
        for i in range(0, len(fresh), PART_VIDEOS):
            index.append(fresh[i:i + PART_VIDEOS])
            LOG.info("%s: appended %d/%d videos to %s", JOB, min(i + PART_VIDEOS, len(fresh)), len(fresh), index_dir)
        _publish_dead_letters(staging_dir, index_dir, shards, duplicates)
        for v in duplicates:
            counts[v.split].written -= 1
            counts[v.split].dead_lettered += 1
    finally:
        import shutil

        shutil.rmtree(staging_dir, ignore_errors=True)
    seconds = time.time() - t0
    total = sum(c.read for c in counts.values())
    return {"job": JOB, "index": os.path.abspath(index_dir),
            "counts": {s: {"read": c.read, "added": c.written, "dead_lettered": c.dead_lettered} for s, c in counts.items()},
            "videos": index.live_videos, "windows": index.live_windows, "seconds": round(seconds, 2),
            "job_seconds": round(t_job, 2), "records_per_second": round(total / max(t_job, 1e-9), 1)}


def _publish_dead_letters(staging_dir: str, index_dir: str, shards, duplicates: Sequence[VideoEmbedding]) -> None:
    import json

    folder = os.path.join(index_dir, staged_sink.DEAD_LETTER_DIR)
    for split in shards:
        lines = []
        for path in staged_sink.match_files(os.path.join(
                staged_sink.staging_path(staging_dir, staged_sink.DEAD_LETTER_DIR, split), "*.jsonl")):
            with open(path) as fh:
                lines.extend(line.rstrip("\n") for line in fh if line.strip())
        lines.extend(staged_sink.DeadLetter(split, "already in the index (remove it first to replace it)",
                                            {"video_id": v.video_id, "entry_index": v.entry_index},
                                            v.entry_index).to_json() for v in duplicates if v.split == split)
        if lines:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{split}.jsonl"), "a") as fh:
                fh.write("\n".join(lines) + "\n")


def report(summary: dict) -> str:
    lines = [f"{JOB}: {s}: read {c['read']}, added {c['added']}, dead-lettered {c['dead_lettered']}"
             for s, c in summary["counts"].items()]
    lines.append(f"{JOB}: index {summary['index']} holds {summary['videos']} videos, {summary['windows']} windows; "
                 f"{summary['seconds']} s ({summary['records_per_second']} records/s in the Beam job)")
    return "\n".join(lines)
