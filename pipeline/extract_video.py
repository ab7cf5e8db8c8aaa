"""``vreloc extract-video``: raw annotated videos -> C3D fc7 -> PCA -> sharded TFRecords.

So that any folder of annotated videos becomes a dataset in the same contract
as the benchmark (``vreloc_tf.schema``). Composed of the library pieces
``pipeline.video`` (PyAV decode into 16-frame 112x112 clips),
``pipeline.c3d`` (Keras C3D, fc7 per clip) and ``pipeline.pca`` (mergeable PCA
statistics), plus the shared Beam plumbing of ``pipeline.options`` and
``pipeline.staged_sink``. :func:`run` is the launcher (the command line and the
orchestrator call it); bad inputs it can see before the job starts raise
``InputError``.

The graph::

    video tasks (launcher: file -> id -> annotation) --DecodeAndExtractC3D--> fc7 per video | dead letters
      train fc7 --CombineGlobally(PCAStatsCombineFn)--> fit_pca --> pca.npz   (unless --pca FILE)
      fc7 + PCA (side input) --ToRecords--> one record per annotated action instance | dead letters

Rules (documented here because they define the data):

* Video id: the file name without extension; ``v_<id>`` files match the
  annotation id ``<id>`` too (ActivityNet's naming).
* Annotations: ActivityNet JSON, ``database.<id>.annotations[].segment``
  ([start, end] seconds) and ``.label``, ``.subset`` (``training`` -> train,
  ``validation`` -> val, ``testing`` -> test; other names are used as is).
  Labels map to ints through the file's ``taxonomy`` (``nodeName`` ->
  ``nodeId``) when it has one, else to their index in the sorted list of all
  label names of the file (stable across runs on the same file); the manifest
  records the mapping.
* Seconds -> features with the video's real frame rate: feature ``k`` covers
  frames ``[16k, 16k + 16)``, i.e. seconds ``[16k / fps, 16(k+1) / fps)``; a
  segment ``[s, e]`` becomes ``[floor(s fps / 16), ceil(e fps / 16))`` clipped
  to the video's ``n_frames // 16`` whole clips.
* Window: the whole video when it has at most 300 features, else the 300
  features centred on the instance (shifted to stay inside the video);
  instances longer than 300 features are dead-lettered.
* Entry indices: per split, in the order (video id, instance position in the
  annotation file), over the videos matched by ``--videos``.
* PCA: fitted over the training split's clips (all of them, not only the
  windows) unless ``--pca FILE`` is given; saved as ``OUT/pca.npz``. With
  fewer training clips than components, the components beyond the data's rank
  are zero (``pipeline.pca`` warns), so even a small folder runs end to end.

Dead letters (with the reason; the job continues, counts reconcile per split):
unreadable or corrupt files and videos shorter than 16 frames (each of the
video's instances), videos without an annotation (pseudo-split
``unannotated``), annotated videos without action instances, and instances
outside the video or longer than the window.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from pipeline import options, staged_sink  # options first: it quiets Beam's import-time warning

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from vreloc_tf.contract import FC7_DIM, FRAMES_PER_FEATURE, MAX_WINDOW
from vreloc_tf.errors import InputError

LOG = logging.getLogger(__name__)

JOB = "extract-video"
UNANNOTATED = "unannotated"
SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
PCA_NAME = "pca.npz"
VIDEO_INFO = "video_info"


# --------------------------------------------------------------------------- annotations


@dataclasses.dataclass(frozen=True)
class Instance:
    """One annotated action instance: where it sits in its split and in the video (seconds)."""

    entry_index: int
    label: int
    label_name: str
    segment: Tuple[float, float]  # seconds


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """What the launcher knows about a video file before decoding it."""

    path: str
    video_id: str
    split: str  # UNANNOTATED when the annotation file has no entry for it
    instances: Tuple[Instance, ...]
    problem: str = ""  # non-empty: dead-letter the video without decoding it


def load_annotations(path: str) -> Tuple[dict, Dict[str, int]]:
    """(database, label name -> id) of an ActivityNet-style annotation JSON; InputError naming the file otherwise."""
    if not FileSystems.exists(path):
        raise InputError(f"--annotations {path}: no such file")
    with FileSystems.open(path) as fh:
        try:
            doc = json.loads(fh.read().decode("utf-8"))
        except ValueError as exc:
            raise InputError(f"--annotations {path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("database"), dict):
        raise InputError(f"--annotations {path}: expected an object with a 'database' mapping (ActivityNet format)")
    database = doc["database"]
    taxonomy = {t["nodeName"]: int(t["nodeId"]) for t in doc.get("taxonomy", []) if "nodeName" in t and "nodeId" in t}
    names = sorted({str(a.get("label")) for v in database.values() if isinstance(v, dict)
                    for a in v.get("annotations", []) if isinstance(a, dict)})
    if taxonomy:
        missing = [n for n in names if n not in taxonomy]
        if missing:
            raise InputError(f"--annotations {path}: labels {missing[:5]} are not in the file's taxonomy")
        labels = {n: taxonomy[n] for n in names}
    else:
        labels = {n: i for i, n in enumerate(names)}
    return database, labels


def video_id_of(path: str, database: dict) -> str:
    name = os.path.splitext(os.path.basename(path))[0]
    if name not in database and name.startswith("v_") and name[2:] in database:
        return name[2:]
    return name


def plan_tasks(paths: List[str], database: dict, labels: Dict[str, int], annotations_path: str) -> List[VideoTask]:
    """One task per video file, with per-split entry indices (see the module docstring)."""
    per_video, seen = [], {}
    for path in sorted(paths):
        vid = video_id_of(path, database)
        item = database.get(vid)
        if vid in seen:
            per_video.append((vid, path, UNANNOTATED, [], f"duplicate video id '{vid}' (also {seen[vid]})"))
            continue
        seen[vid] = path
        if not isinstance(item, dict):
            per_video.append((vid, path, UNANNOTATED, [], f"no annotation for video id '{vid}' in {annotations_path}"))
            continue
        split = SUBSETS.get(str(item.get("subset", "")), str(item.get("subset") or UNANNOTATED))
        anns = [a for a in item.get("annotations", []) if isinstance(a, dict)]
        per_video.append((vid, path, split, anns, "" if anns else "no annotated action instances"))
    next_index: Dict[str, int] = {}
    tasks = []
    for vid, path, split, anns, problem in sorted(per_video):
        instances = []
        for a in anns:
            name = str(a.get("label"))
            instances.append(Instance(next_index.get(split, 0), labels.get(name, -1), name, _segment(a)))
            next_index[split] = next_index.get(split, 0) + 1
        if not anns:  # the video itself is the unit that is read and dead-lettered
            instances.append(Instance(next_index.get(split, 0), -1, "", (math.nan, math.nan)))
            next_index[split] = next_index.get(split, 0) + 1
        tasks.append(VideoTask(path, vid, split, tuple(instances), problem))
    return tasks


def _segment(annotation: dict) -> Tuple[float, float]:
    """The annotation's [start, end] seconds; NaNs (dead-lettered later, with the reason) when malformed."""
    try:
        start, end = annotation["segment"]
        return float(start), float(end)
    except (KeyError, TypeError, ValueError):
        return math.nan, math.nan


def read_counts_of(tasks: List[VideoTask]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for t in tasks:
        counts[t.split] = counts.get(t.split, 0) + len(t.instances)
    return counts


# --------------------------------------------------------------------------- geometry


def segment_to_features(segment: Tuple[float, float], fps: float, n_features: int) -> Tuple[int, int]:
    """Seconds [s, e] -> feature indices [start, end) (module docstring), clipped to the video."""
    s, e = segment
    start = max(0, int(math.floor(s * fps / FRAMES_PER_FEATURE)))
    end = min(n_features, int(math.ceil(e * fps / FRAMES_PER_FEATURE)))
    return start, end


def window_around(start: int, end: int, n_features: int, max_window: int = MAX_WINDOW) -> Tuple[int, int]:
    """The whole video if short enough, else ``max_window`` features centred on [start, end)."""
    if n_features <= max_window:
        return 0, n_features
    lo = max(0, start - (max_window - (end - start)) // 2)
    lo = min(lo, n_features - max_window)
    return lo, lo + max_window


def instance_problem(segment: Tuple[float, float], start: int, end: int, n_features: int) -> str:
    s, e = segment
    if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
        return f"segment {list(segment)} is not a [start, end] pair of seconds with end > start"
    if end <= start:
        return (f"segment {list(segment)} s lies outside the video's {n_features} whole "
                f"{FRAMES_PER_FEATURE}-frame clips")
    if end - start > MAX_WINDOW:
        return f"segment {list(segment)} s spans {end - start} features, more than the {MAX_WINDOW}-feature window"
    return ""


# --------------------------------------------------------------------------- transforms


@dataclasses.dataclass
class VideoFeatures:
    """fc7 features of every whole clip of a video, with what maps them back to seconds."""

    task: VideoTask
    features: np.ndarray  # float32 [n_clips, FC7_DIM]
    fps: float
    n_frames: int


@contextlib.contextmanager
def local_copy(path: str):
    """A local file for PyAV/h5py: the path itself, or a temporary copy of a remote (gs://...) file."""
    if "://" not in path:
        yield path
        return
    suffix = os.path.splitext(path)[1]
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as tmp:
        with FileSystems.open(path) as src:
            shutil.copyfileobj(src, tmp, 1 << 20)
    try:
        yield tmp.name
    finally:
        os.unlink(tmp.name)


class DecodeAndExtractC3DFn(beam.DoFn):
    """VideoTask -> VideoFeatures (fc7 of every clip), or a dead letter per instance with the reason.

    The C3D network is built once per worker (``setup``); clips are decoded
    and pushed through it batch by batch, so memory stays bounded.
    """

    def __init__(self, c3d_weights: Optional[str], random_seed: Optional[int], c3d_batch: int = 8,
                 batch_clips: int = 32):
        if (c3d_weights is None) == (random_seed is None):
            raise ValueError("exactly one of c3d_weights or random_seed (--random-c3d) is needed")
        self.c3d_weights, self.random_seed = c3d_weights, random_seed
        self.c3d_batch, self.batch_clips = c3d_batch, batch_clips
        self._extractor = None

    def setup(self):
        from pipeline import c3d

        if self.random_seed is not None:
            self._extractor = c3d.C3DExtractor.random(seed=self.random_seed, batch_size=self.c3d_batch)
        else:
            with local_copy(self.c3d_weights) as path:
                self._extractor = c3d.C3DExtractor.from_weights(path, batch_size=self.c3d_batch)

    def process(self, task: VideoTask):
        from pipeline.video import VideoError

        if task.problem:
            for inst in task.instances:
                yield staged_sink.dead_letter(task.split, task.problem, _entry(task, inst), inst.entry_index, task.path)
            return
        if self._extractor is None:
            self.setup()
        t0 = time.time()
        try:
            with local_copy(task.path) as path:
                feats, info = self._extractor.extract_video(path, batch_clips=self.batch_clips)
        except VideoError as exc:
            LOG.warning("extract-video: %s: %s", task.video_id, exc.reason)
            for inst in task.instances:
                yield staged_sink.dead_letter(task.split, exc.reason, _entry(task, inst), inst.entry_index, task.path)
            return
        LOG.info("extract-video: %s (%s): %d clips of %d frames at %.3f fps in %.1f s",
                 task.video_id, task.split, len(feats), info.n_frames, info.fps, time.time() - t0)
        beam.metrics.Metrics.counter("vreloc", "videos_decoded").inc()
        yield VideoFeatures(task, feats, float(info.fps), int(info.n_frames))


def _entry(task: VideoTask, inst: Instance) -> dict:
    return {"video_id": task.video_id, "path": task.path, "label": inst.label_name,
            "segment": [None if math.isnan(v) else v for v in inst.segment]}


class ToRecordsFn(beam.DoFn):
    """VideoFeatures -> PCA-reduced features -> one Record per instance, or dead letters.

    The PCA comes as a side input (fitted in this job) or from a file loaded once per worker.
    """

    def __init__(self, pca_path: Optional[str] = None):
        self.pca_path = pca_path
        self._pca = None

    def setup(self):
        if self.pca_path:
            from pipeline.pca import PCA

            self._pca = PCA.load(self.pca_path)

    def process(self, video: VideoFeatures, pca=None):
        from vreloc_tf.schema import Record, SchemaError

        pca = pca if pca is not None else self._pca
        if pca is None:
            self.setup()
            pca = self._pca
        task = video.task
        reduced = pca.transform(video.features)
        n = len(reduced)
        for inst in task.instances:
            start, end = segment_to_features(inst.segment, video.fps, n)
            reason = instance_problem(inst.segment, start, end, n)
            if reason:
                yield staged_sink.dead_letter(task.split, reason, _entry(task, inst), inst.entry_index, task.path)
                continue
            lo, hi = window_around(start, end, n)
            record = Record(video_id=task.video_id, split=task.split, entry_index=inst.entry_index,
                            label=inst.label, window=(lo, hi), groundtruth=(start - lo, end - lo),
                            features=np.ascontiguousarray(reduced[lo:hi]), fps=video.fps,
                            frames_per_feature=FRAMES_PER_FEATURE)
            try:
                record.validate()
            except SchemaError as exc:
                yield staged_sink.dead_letter(task.split, f"invalid record: {exc}", _entry(task, inst),
                                              inst.entry_index, task.path)
                continue
            yield record


class FitPCA(beam.PTransform):
    """Training fc7 -> mergeable statistics (``PCAStatsCombineFn``) -> one PCA, eigen-decomposed once."""

    def __init__(self, n_components: int):
        super().__init__()
        self.n_components = n_components

    def expand(self, videos):
        from pipeline.pca import PCAStatsCombineFn, fit_pca

        n_components = self.n_components
        return (videos
                | "TrainingOnly" >> beam.Filter(lambda v: v.task.split == "train")
                | "Clips" >> beam.Map(lambda v: v.features)
                | "Statistics" >> beam.CombineGlobally(PCAStatsCombineFn())
                | "Eigendecompose" >> beam.Map(lambda stats: fit_pca(stats, n_components)))


def _save_pca(pca, path: str):
    pca.save(path)
    LOG.info("extract-video: PCA (%d -> %d dims) saved to %s", pca.dim, pca.n_components, path)
    return "pca", 1


def _video_info_line(v: VideoFeatures):
    return v.task.split, json.dumps({"video_id": v.task.video_id, "fps": v.fps, "n_frames": v.n_frames,
                                     "n_features": int(len(v.features)), "path": v.task.path}, sort_keys=True)


def build(pipeline: beam.Pipeline, staging_dir: str, tasks: List[VideoTask], c3d_weights: Optional[str],
          random_seed: Optional[int], pca_path: Optional[str], n_components: int, c3d_batch: int):
    """The extract-video graph; returns the writers' token PCollections."""
    outputs = (pipeline
               | "VideoTasks" >> beam.Create(tasks)
               | "DecodeAndExtractC3D" >> beam.ParDo(DecodeAndExtractC3DFn(c3d_weights, random_seed, c3d_batch))
               .with_outputs(staged_sink.DEAD_LETTER))
    videos, bad_videos = staged_sink.split_dead_letters(outputs, "DecodeAndExtractC3D")
    tokens = []
    if pca_path:
        records_out = videos | "ToRecords" >> beam.ParDo(ToRecordsFn(pca_path)).with_outputs(staged_sink.DEAD_LETTER)
    else:
        pca = videos | "FitPCA" >> FitPCA(n_components)
        tokens.append(pca | "SavePCA" >> beam.Map(_save_pca, FileSystems.join(staging_dir, PCA_NAME)))
        records_out = videos | "ToRecords" >> beam.ParDo(ToRecordsFn(), pca=beam.pvalue.AsSingleton(pca)).with_outputs(
            staged_sink.DEAD_LETTER)
    records, bad_instances = staged_sink.split_dead_letters(records_out, "ToRecords")
    dead = (bad_videos, bad_instances) | "AllDeadLetters" >> beam.Flatten()
    tokens += [records | "WriteRecords" >> staged_sink.WriteRecords(staging_dir),
               dead | "WriteDeadLetters" >> staged_sink.WriteDeadLetters(staging_dir),
               videos | "VideoInfo" >> beam.Map(_video_info_line)
               | "WriteVideoInfo" >> beam.ParDo(staged_sink.WriteBundleFilesFn(staging_dir, VIDEO_INFO, ".jsonl", "lines"))]
    return tokens


# --------------------------------------------------------------------------- launcher


def match_videos(pattern: str) -> List[str]:
    try:
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # BeamIOError: nothing matched on some file systems
        paths = []
    if not paths:
        raise InputError(f"--videos {pattern}: no file matches")
    return paths


def run(videos: str, annotations: str, out: str, c3d_weights: Optional[str] = None, random_c3d: bool = False,
        pca: Optional[str] = None, n_components: int = 500, c3d_seed: int = 0, c3d_batch: int = 8,
        runner: str = options.DEFAULT_RUNNER, beam_args: Sequence[str] = (),
        overwrite: bool = False) -> staged_sink.JobSummary:
    """Extract the videos matching ``videos`` (annotated in ``annotations``) into the data folder ``out``.

    Exactly one of ``c3d_weights`` (Sports-1M C3D, HDF5) or ``random_c3d``;
    ``pca``: reuse a fitted ``pca.npz`` instead of fitting ``n_components``
    dims on the training split. ``runner``/``beam_args``: see
    ``pipeline.options``; ``overwrite``: see ``pipeline.staged_sink``.
    Returns the per-split counts and the manifest written.
    """
    if bool(c3d_weights) == bool(random_c3d):
        raise InputError("give exactly one of --c3d-weights FILE or --random-c3d")
    if random_c3d:
        LOG.warning("%s: --random-c3d: C3D has RANDOM weights (seed %d); the features are meaningless "
                    "(for tests and demos only)", JOB, c3d_seed)
    elif not FileSystems.exists(c3d_weights):
        raise InputError(f"--c3d-weights {c3d_weights}: no such file")
    paths = match_videos(videos)
    database, labels = load_annotations(annotations)
    tasks = plan_tasks(paths, database, labels, annotations)
    read_counts = read_counts_of(tasks)
    if pca:
        from pipeline.pca import PCA

        if not FileSystems.exists(pca):
            raise InputError(f"--pca {pca}: no such file")
        loaded = PCA.load(pca)
        if loaded.dim != FC7_DIM:
            raise InputError(f"--pca {pca}: fitted on {loaded.dim}-d inputs, C3D fc7 is {FC7_DIM}-d")
        feature_dim = loaded.n_components
    else:
        if not any(t.split == "train" and not t.problem for t in tasks):
            raise InputError(f"--videos {videos}: no annotated training video to fit the PCA on; "
                             "pass --pca FILE (e.g. OUT/pca.npz of an earlier run)")
        feature_dim = n_components
    LOG.info("%s: %d videos, entries per split %s, %d labels", JOB, len(tasks), read_counts, len(labels))
    pipeline_options = options.pipeline_options(runner, beam_args, multiprocess=False)
    pca_file = pca or FileSystems.join(out, PCA_NAME)
    source = {"job": JOB, "videos": videos, "annotations": annotations,
              "c3d_weights": c3d_weights or f"RANDOM (seed {c3d_seed})", "pca": pca_file}
    manifest_fields = {
        "feature_dim": feature_dim,
        "frames_per_feature": FRAMES_PER_FEATURE,
        "labels": labels,
        "max_window": MAX_WINDOW,
        # Read by `vreloc train` into the run's manifest, so export and `vreloc locate` find the PCA.
        "pca_file": pca_file,
    }

    def on_success(staging_dir: str) -> dict:
        staged_pca = FileSystems.join(staging_dir, PCA_NAME)
        if not pca:
            final = FileSystems.join(out, PCA_NAME)
            if FileSystems.exists(final):
                FileSystems.delete([final])
            FileSystems.rename([staged_pca], [final])
        infos = {}
        for part in staged_sink.match_files(FileSystems.join(staging_dir, VIDEO_INFO, "*", "*.jsonl")):
            with FileSystems.open(part) as fh:
                for line in fh.read().decode("utf-8").splitlines():
                    if line.strip():
                        info = json.loads(line)
                        infos[info.pop("video_id")] = info
        rates = {round(v["fps"], 6) for v in infos.values()}
        return {"fps": rates.pop() if len(rates) == 1 else None, "videos": infos}

    return staged_sink.run_and_publish(
        JOB, pipeline_options, out, read_counts,
        lambda p, staging: build(p, staging, tasks, c3d_weights, c3d_seed if random_c3d else None, pca,
                                 n_components, c3d_batch),
        manifest_fields, source, shardless=(UNANNOTATED,), on_success=on_success, overwrite=overwrite)
