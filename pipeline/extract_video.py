"""``vreloc extract-video``: raw videos -> a backbone -> PCA -> sharded TFRecords.

So that any folder of videos becomes a dataset in the same contract as the benchmark
(``vreloc_tf.data.schema``): with annotations, a training set; without, a library to search.
Composed of the library pieces ``pipeline.video`` (PyAV decode), ``pipeline.backbones``
(``c3d``: Sports-1M C3D fc7 per 16-frame clip, the paper's; ``clip``: a keras-hub CLIP
image encoder on one frame every ``1 / fps`` seconds) and ``pipeline.pca`` (mergeable PCA
statistics), plus the shared Beam plumbing of ``pipeline.options`` and
``pipeline.staged_sink``. :func:`run` is the launcher (the command line and the
orchestrator call it); bad inputs it can see before the job starts raise ``InputError``.

The graph::

    video tasks (launcher: file -> id -> annotation) --ExtractFeatures--> raw features per video | dead letters
      fitting videos' features --CombineGlobally(PCAStatsCombineFn)--> fit_pca --> pca.npz   (unless --pca FILE)
      features + PCA (side input) --ToRecords--> records | dead letters

Rules (documented here because they define the data):

* Video id: the file name without extension; ``v_<id>`` files match the
  annotation id ``<id>`` too (ActivityNet's naming).
* Annotations (optional): ActivityNet JSON, ``database.<id>.annotations[].segment``
  ([start, end] seconds) and ``.label``, ``.subset`` (``training`` -> train,
  ``validation`` -> val, ``testing`` -> test; other names are used as is).
  Labels map to ints through the file's ``taxonomy`` (``nodeName`` ->
  ``nodeId``) when it has one, else to their index in the sorted list of all
  label names of the file (stable across runs on the same file); the manifest
  records the mapping.
* Library: every video without annotated action instances (all of them when no
  annotation file is given; with one, those it does not list or lists without
  instances) becomes one entry of split ``library``: the whole video, label -1,
  no ground truth, its frame rate recorded. ``vreloc index build --split library``
  makes it searchable.
* Index space: feature ``k`` covers seconds ``[k * frames_per_feature / fps,
  (k + 1) * frames_per_feature / fps)``, where for ``c3d`` ``fps`` is the video's
  real frame rate and ``frames_per_feature`` 16 (clip ``k`` = frames ``[16k, 16k + 16)``),
  and for ``clip`` ``fps`` is the sampling rate and ``frames_per_feature`` 1 (feature
  ``k`` = the frame shown at ``(k + 0.5) / fps`` s). A segment ``[s, e]`` becomes
  ``[floor(s fps / fpf), ceil(e fps / fpf))`` clipped to the video's features.
* Window: the whole video when it has at most 300 features, else the 300
  features centred on the instance (shifted to stay inside the video);
  instances longer than 300 features are dead-lettered. Library entries are
  never cut.
* Entry indices: per split, in the order (video id, instance position in the
  annotation file), over the videos matched by ``--videos``.
* PCA: fitted over the training split's features (all of them, not only the
  windows), or over every video when no annotation file is given, unless
  ``--pca FILE`` is given (our ``pca.npz`` or ActivityNet's published PCA);
  saved as ``OUT/pca.npz``. With fewer samples than components, the components
  beyond the data's rank are zero (``pipeline.pca`` warns), so even a small
  folder runs end to end.
* The manifest records the :class:`vreloc_tf.data.feature_spec.FeatureSpec` (backbone,
  weights SHA-256, sampling rate, PCA SHA-256) under ``features``; every consumer
  (train, locate, features, index, search) checks it.

Dead letters (with the reason; the job continues, counts reconcile per split):
unreadable or corrupt files, videos too short for one feature (each of the
video's instances), duplicate video ids, and instances outside the video or
longer than the window.
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

from pipeline import backbones
from pipeline.backbones import BackboneOptions, open_backbone
from pipeline.pca import PCA, PCAStatsCombineFn, fit_pca
from pipeline.video import VideoError
from vreloc_tf.contract import FEATURE_DIM, FRAMES_PER_FEATURE, MAX_WINDOW
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import MANIFEST_KEY
from vreloc_tf.data.schema import UNKNOWN, Record, SchemaError

LOG = logging.getLogger(__name__)

JOB = "extract-video"
LIBRARY = "library"  # the split of videos without annotated action instances (a plain folder: all of them)
SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
PCA_NAME = "pca.npz"
VIDEO_INFO = "video_info"


# --------------------------------------------------------------------------- annotations


@dataclasses.dataclass(frozen=True)
class Instance:
    """One entry: an annotated action instance (seconds), or a whole library video (``segment`` None)."""

    entry_index: int
    label: int
    label_name: str
    segment: Optional[Tuple[float, float]]  # seconds; None: the whole video, no ground truth (library)


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """What the launcher knows about a video file before decoding it."""

    path: str
    video_id: str
    split: str  # LIBRARY for videos without annotated instances
    instances: Tuple[Instance, ...]
    problem: str = ""  # non-empty: dead-letter the video without decoding it
    number: int = 0  # 1-based position among the job's videos (progress)
    total: int = 0


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


def plan_tasks(paths: List[str], database: dict, labels: Dict[str, int]) -> List[VideoTask]:
    """One task per video file, with per-split entry indices (see the module docstring).

    ``database`` is the annotation file's (empty without one): videos it does not list, or
    lists without action instances, go to :data:`LIBRARY` as one whole-video entry each.
    """
    per_video, seen = [], {}
    for path in sorted(paths):
        vid = video_id_of(path, database)
        item = database.get(vid)
        if vid in seen:
            per_video.append((vid, path, LIBRARY, None, f"duplicate video id '{vid}' (also {seen[vid]})"))
            continue
        seen[vid] = path
        anns = [a for a in item.get("annotations", []) if isinstance(a, dict)] if isinstance(item, dict) else []
        if not anns:
            per_video.append((vid, path, LIBRARY, None, ""))
            continue
        split = SUBSETS.get(str(item.get("subset", "")), str(item.get("subset") or LIBRARY))
        per_video.append((vid, path, split, anns, ""))
    next_index: Dict[str, int] = {}
    tasks = []
    for number, (vid, path, split, anns, problem) in enumerate(sorted(per_video, key=lambda t: t[:3]), 1):
        instances = []
        for a in anns if anns is not None else [None]:
            if a is None:  # the whole video is the one entry
                instances.append(Instance(next_index.get(split, 0), -1, "", None))
            else:
                name = str(a.get("label"))
                instances.append(Instance(next_index.get(split, 0), labels.get(name, -1), name, _segment(a)))
            next_index[split] = next_index.get(split, 0) + 1
        tasks.append(VideoTask(path, vid, split, tuple(instances), problem, number, len(per_video)))
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


def segment_to_features(segment: Tuple[float, float], fps: float, n_features: int,
                        frames_per_feature: int = FRAMES_PER_FEATURE) -> Tuple[int, int]:
    """Seconds [s, e] -> feature indices [start, end) (module docstring), clipped to the video."""
    s, e = segment
    start = max(0, int(math.floor(s * fps / frames_per_feature)))
    end = min(n_features, int(math.ceil(e * fps / frames_per_feature)))
    return start, end


def window_around(start: int, end: int, n_features: int, max_window: int = MAX_WINDOW) -> Tuple[int, int]:
    """The whole video if short enough, else ``max_window`` features centred on [start, end)."""
    if n_features <= max_window:
        return 0, n_features
    lo = max(0, start - (max_window - (end - start)) // 2)
    lo = min(lo, n_features - max_window)
    return lo, lo + max_window


def instance_problem(segment: Tuple[float, float], start: int, end: int, n_features: int,
                     unit: str = f"whole {FRAMES_PER_FEATURE}-frame clips") -> str:
    s, e = segment
    if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
        return f"segment {list(segment)} is not a [start, end] pair of seconds with end > start"
    if end <= start:
        return f"segment {list(segment)} s lies outside the video's {n_features} {unit}"
    if end - start > MAX_WINDOW:
        return f"segment {list(segment)} s spans {end - start} features, more than the {MAX_WINDOW}-feature window"
    return ""


# --------------------------------------------------------------------------- transforms


@dataclasses.dataclass
class VideoFeatures:
    """Raw backbone features of a whole video, with what maps them back to seconds."""

    task: VideoTask
    features: np.ndarray  # float32 [n, raw_dim]
    fps: float  # rate of the index space (module docstring)
    n_frames: int
    frames_per_feature: int = FRAMES_PER_FEATURE
    video_fps: Optional[float] = None  # the file's own frame rate (= fps for c3d)

    @property
    def unit(self) -> str:
        return (f"whole {self.frames_per_feature}-frame clips" if self.frames_per_feature > 1
                else f"frames sampled at {self.fps:g} per second")


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


@contextlib.contextmanager
def local_options(opts: BackboneOptions):
    """The options with remote weight files (gs://...) copied to this worker for the time of the build."""
    if opts.weights and "://" in opts.weights and not opts.weights.startswith("kaggle://"):
        with local_copy(opts.weights) as path:
            yield dataclasses.replace(opts, weights=path)
    else:
        yield opts


class ExtractFeaturesFn(beam.DoFn):
    """VideoTask -> VideoFeatures (raw features of the whole video), or a dead letter per entry with the reason.

    The backbone is built once per worker (``setup``); frames are decoded and pushed
    through it batch by batch, so memory stays bounded.
    """

    def __init__(self, backbone: BackboneOptions):
        self.backbone = backbone
        self._net = None

    def setup(self):
        with local_options(self.backbone) as opts:
            self._net = open_backbone(opts)

    def process(self, task: VideoTask):
        if task.problem:
            for inst in task.instances:
                yield staged_sink.dead_letter(task.split, task.problem, _entry(task, inst), inst.entry_index, task.path)
            return
        if self._net is None:
            self.setup()
        t0 = time.time()
        try:
            with local_copy(task.path) as path:
                got = self._net.extract(path, desc=f"[{task.number}/{task.total}] {task.video_id}")
        except VideoError as exc:
            LOG.warning("%s: [%d/%d] %s: %s", JOB, task.number, task.total, task.video_id, exc.reason)
            for inst in task.instances:
                yield staged_sink.dead_letter(task.split, exc.reason, _entry(task, inst), inst.entry_index, task.path)
            return
        seconds = time.time() - t0
        LOG.info("%s: [%d/%d] %s (%s): %d features from %d frames at %.3f fps (%.1f s of video) in %.1f s",
                 JOB, task.number, task.total, task.video_id, task.split, len(got.features), got.n_frames,
                 got.video_fps, got.n_frames / got.video_fps, seconds)
        beam.metrics.Metrics.counter("vreloc", "videos_decoded").inc()
        yield VideoFeatures(task, got.features, float(got.fps), int(got.n_frames), int(got.frames_per_feature),
                            float(got.video_fps))


def _entry(task: VideoTask, inst: Instance) -> dict:
    segment = None if inst.segment is None else [None if math.isnan(v) else v for v in inst.segment]
    return {"video_id": task.video_id, "path": task.path, "label": inst.label_name, "segment": segment}


class ToRecordsFn(beam.DoFn):
    """VideoFeatures -> PCA-reduced features -> one Record per entry, or dead letters.

    The PCA comes as a side input (fitted in this job) or from a file loaded once per
    worker; ``pca_path=""`` with no side input keeps the raw features.
    """

    def __init__(self, pca_path: Optional[str] = None):
        self.pca_path = pca_path
        self._pca = None

    def setup(self):
        if self.pca_path:
            with local_copy(self.pca_path) as path:
                self._pca = PCA.load(path)

    def process(self, video: VideoFeatures, pca=None):
        pca = pca if pca is not None else self._pca
        if pca is None and self.pca_path:
            self.setup()
            pca = self._pca
        task = video.task
        reduced = pca.transform(video.features) if pca is not None else np.asarray(video.features, np.float32)
        n = len(reduced)
        for inst in task.instances:
            if inst.segment is None:  # a library video: the whole of it, no ground truth
                lo, hi, gt = 0, n, (UNKNOWN, UNKNOWN)
            else:
                start, end = segment_to_features(inst.segment, video.fps, n, video.frames_per_feature)
                reason = instance_problem(inst.segment, start, end, n, video.unit)
                if reason:
                    yield staged_sink.dead_letter(task.split, reason, _entry(task, inst), inst.entry_index, task.path)
                    continue
                lo, hi = window_around(start, end, n)
                gt = (start - lo, end - lo)
            record = Record(video_id=task.video_id, split=task.split, entry_index=inst.entry_index,
                            label=inst.label, window=(lo, hi), groundtruth=gt,
                            features=np.ascontiguousarray(reduced[lo:hi]), fps=video.fps,
                            frames_per_feature=video.frames_per_feature)
            try:
                record.validate()
            except SchemaError as exc:
                yield staged_sink.dead_letter(task.split, f"invalid record: {exc}", _entry(task, inst),
                                              inst.entry_index, task.path)
                continue
            yield record


class FitPCA(beam.PTransform):
    """The fitting videos' features -> mergeable statistics (``PCAStatsCombineFn``) -> one PCA, eigen-decomposed once.

    ``split``: fit on that split's videos (``train``); None: on every video (a plain folder).
    """

    def __init__(self, n_components: int, split: Optional[str] = "train"):
        super().__init__()
        self.n_components, self.split = n_components, split

    def expand(self, videos):
        n_components, split = self.n_components, self.split
        return (videos
                | "FittingVideos" >> beam.Filter(lambda v: split is None or v.task.split == split)
                | "Features" >> beam.Map(lambda v: v.features)
                | "Statistics" >> beam.CombineGlobally(PCAStatsCombineFn())
                | "Eigendecompose" >> beam.Map(lambda stats: fit_pca(stats, n_components)))


def _save_pca(pca, path: str):
    pca.save(path)
    LOG.info("%s: PCA (%d -> %d dims) saved to %s", JOB, pca.dim, pca.n_components, path)
    return "pca", 1


def _video_info_line(v: VideoFeatures):
    duration = round(v.n_frames / v.video_fps, 3) if v.video_fps else None
    return v.task.split, json.dumps({"video_id": v.task.video_id, "fps": v.fps, "video_fps": v.video_fps,
                                     "n_frames": v.n_frames, "duration": duration, "n_features": int(len(v.features)),
                                     "frames_per_feature": v.frames_per_feature, "path": v.task.path},
                                    sort_keys=True)


def build(pipeline: beam.Pipeline, staging_dir: str, tasks: List[VideoTask], backbone: BackboneOptions,
          pca_path: Optional[str], n_components: int, pca_split: Optional[str] = "train"):
    """The extract-video graph; returns the writers' token PCollections."""
    outputs = (pipeline
               | "VideoTasks" >> beam.Create(tasks)
               | "ExtractFeatures" >> beam.ParDo(ExtractFeaturesFn(backbone)).with_outputs(staged_sink.DEAD_LETTER))
    videos, bad_videos = staged_sink.split_dead_letters(outputs, "ExtractFeatures")
    tokens = []
    if pca_path:
        records_out = videos | "ToRecords" >> beam.ParDo(ToRecordsFn(pca_path)).with_outputs(staged_sink.DEAD_LETTER)
    else:
        pca = videos | "FitPCA" >> FitPCA(n_components, pca_split)
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
        paths = sorted(_local_abs(m.path) for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # BeamIOError: nothing matched on some file systems
        paths = []
    if not paths:
        raise InputError(f"--videos {pattern}: no file matches")
    return paths


def _local_abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def run(videos: str, out: str, annotations: Optional[str] = None, backbone: Optional[BackboneOptions] = None,
        pca: Optional[str] = None, n_components: int = FEATURE_DIM, runner: str = options.DEFAULT_RUNNER,
        beam_args: Sequence[str] = (), overwrite: bool = False) -> staged_sink.JobSummary:
    """Extract the videos matching ``videos`` into the data folder ``out``.

    ``annotations``: an ActivityNet-style JSON (None: a plain folder, every video goes to
    the ``library`` split); ``backbone``: how frames become features (default ``c3d``,
    which needs weights or ``random_seed``); ``pca``: reuse a PCA file (ours or
    ActivityNet's) instead of fitting ``n_components`` dims. ``runner``/``beam_args``: see
    ``pipeline.options``; ``overwrite``: see ``pipeline.staged_sink``. Returns the
    per-split counts and the manifest written.
    """
    t_start = time.time()
    backbone, raw_spec = backbones.resolve(backbone or BackboneOptions())
    paths = match_videos(videos)
    database, labels = load_annotations(annotations) if annotations else ({}, {})
    tasks = plan_tasks(paths, database, labels)
    read_counts = read_counts_of(tasks)
    if pca:
        if not FileSystems.exists(pca):
            raise InputError(f"--pca {pca}: no such file")
        with local_copy(pca) as local:
            loaded = PCA.load(local)
        if raw_spec.raw_dim is not None and loaded.dim != raw_spec.raw_dim:
            raise InputError(f"--pca {pca}: fitted on {loaded.dim}-d inputs, the {backbone.name} backbone makes "
                             f"{raw_spec.raw_dim}-d features")
        feature_dim, pca_split = loaded.n_components, None
    else:
        if n_components < 1:
            raise InputError(f"--pca-components must be >= 1, got {n_components}")
        if annotations:
            pca_split = "train"
            if not any(t.split == "train" and not t.problem for t in tasks):
                raise InputError(f"--videos {videos}: no annotated training video to fit the PCA on; "
                                 "pass --pca FILE (e.g. OUT/pca.npz of an earlier run)")
        else:
            pca_split = None  # a plain folder: fit on every video
        if raw_spec.raw_dim is not None and n_components > raw_spec.raw_dim:
            raise InputError(f"--pca-components {n_components}: more than the {raw_spec.raw_dim} dims the "
                             f"{backbone.name} backbone makes")
        feature_dim, loaded = n_components, None
    LOG.info("%s: %d videos, entries per split %s, %d labels; backbone %s", JOB, len(tasks), read_counts,
             len(labels), raw_spec.summary())
    pipeline_options = options.pipeline_options(runner, beam_args, multiprocess=False)
    local_out = "://" not in out
    pca_file = _local_abs(pca) if pca else (PCA_NAME if local_out else FileSystems.join(out, PCA_NAME))
    source = {"job": JOB, "videos": videos, "annotations": annotations, "backbone": backbone.name,
              "weights": "RANDOM (seed %d)" % backbone.random_seed if backbone.random_seed is not None
              else backbone.weights, "weights_sha256": backbone.weights_sha256, "sample_fps": backbone.sample_fps,
              "pca": pca_file if pca else "fitted in the job"}
    manifest_fields = {
        "feature_dim": feature_dim,
        "frames_per_feature": raw_spec.frames_per_feature,
        "labels": labels,
        "max_window": MAX_WINDOW,
        # Read by `vreloc train` into the run's manifest, so export and `vreloc locate` find the PCA;
        # relative to the data folder when it lives there.
        "pca_file": pca_file,
    }

    def on_success(staging_dir: str) -> dict:
        staged_pca = FileSystems.join(staging_dir, PCA_NAME)
        final = FileSystems.join(out, PCA_NAME)
        if not pca:
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
        with local_copy(pca or final) as local:
            fitted = PCA.load(local)
            pca_sha = backbones.file_digests(local)[0]
        spec = backbones.feature_spec(raw_spec, raw_dim=raw_spec.raw_dim or fitted.dim, pca_file=pca_file,
                                      pca=fitted, pca_sha256=pca_sha)
        return {"fps": rates.pop() if len(rates) == 1 else None, "videos": infos, MANIFEST_KEY: spec.to_json()}

    summary = staged_sink.run_and_publish(
        JOB, pipeline_options, out, read_counts,
        lambda p, staging: build(p, staging, tasks, backbone, _local_abs(pca) if pca else None, n_components,
                                 pca_split),
        manifest_fields, source, on_success=on_success, overwrite=overwrite)
    decoded = summary.manifest.get("videos") or {}
    video_seconds = sum(v["n_frames"] / v["video_fps"] for v in decoded.values() if v.get("video_fps"))
    LOG.info("%s: %d of %d videos decoded (%.1f s of video) in %.1f s", JOB, len(decoded), len(tasks),
             video_seconds, time.time() - t_start)
    return summary
