"""Video backbones behind one interface: a video file (or a cut of it) -> raw features, plus what made them.

Why one interface: `extract-video`, `locate`, `features`, `index build` and `search` all turn
video into features, and a model only understands features made exactly like its training
features. Each of them builds a backbone from :class:`BackboneOptions` (plain, picklable: a
Beam worker rebuilds the same network in ``setup``), and records the
:class:`vreloc_tf.data.feature_spec.FeatureSpec` that :func:`resolve` and :func:`feature_spec`
derive from the options (weights checksum, frame rate) and the PCA.

==========  ==========================================  ======================  ===============
backbone    network, weights                            index space             raw dim, cost
==========  ==========================================  ======================  ===============
``c3d``     Sports-1M C3D fc7 (pipeline/c3d.py), Keras  one feature per 16      4096-d, 77.1
            HDF5 weights loaded by layer name with      frames (the video's     GFLOP per clip
            every shape checked                         own rate)
``clip``    keras-hub CLIP image encoder                one frame every         512-d (ViT-B/32),
            (pipeline/clip.py), a preset handle or      ``1 / sample_fps`` s    8.8 GFLOP per
            folder; L2-normalized embeddings            (default 0.5 fps)       frame
==========  ==========================================  ======================  ===============

Either way, feature ``k`` covers seconds ``[k * frames_per_feature / fps, (k + 1) * ...)``
(``fps`` = the video's rate for C3D, the sampling rate for CLIP, with one frame per feature),
so records, hits and `locate` convert indices to seconds with one rule. FLOPs count a
multiply-add as two operations (`vreloc bench` compares them with a matmul's FLOP rate).

Weights checks: the file (or the preset's ``model.weights.h5``) is hashed (SHA-256, recorded
in every manifest); ``--weights-sha256`` pins it (a mismatch is an error); a C3D file whose
name is one of :data:`PUBLISHED_FILES` is compared with the checksum its publisher states
(MD5, the only one published) and a mismatch is logged. ``random_seed`` builds the same
architecture with seeded random weights: meaningless features, for tests and offline demos.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import logging
import os
from typing import Dict, Optional, Tuple

import numpy as np

from pipeline import c3d, clip, video
from pipeline.c3d import load_mean
from vreloc_tf import progress
from vreloc_tf.contract import FC7_DIM, FRAMES_PER_FEATURE
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureSpec
from vreloc_tf.suggest import closest

log = logging.getLogger("vreloc.backbones")

BACKBONES = ("c3d", "clip")
DEFAULT_BACKBONE = "c3d"
DEFAULT_CLIP_FPS = 0.5  # one frame every 2 s, as MATR (ICCV 2025) samples CLIP frames
C3D_PER_CHANNEL_MEAN = "per-channel BGR mean (104, 117, 128)"

# Files whose publisher states a checksum: name -> (algorithm, hex digest, where it is published).
PUBLISHED_FILES: Dict[str, Tuple[str, str, str]] = {
    "sports1M_weights_tf.h5": (
        "md5", "b7a93b2f9156ccbebe3ca24b41fc5402",
        "https://github.com/adamcasson/c3d/releases/download/v0.1/sports1M_weights_tf.h5 "
        "(md5_hash in adamcasson/c3d's c3d.py)"),
    "c3d_mean.npy": (
        "md5", "08a07d9761e76097985124d9e8b2fe34",
        "https://github.com/adamcasson/c3d/releases/download/v0.1/c3d_mean.npy "
        "(md5_hash in adamcasson/c3d's sports1M_utils.py)"),
}


class BackboneError(InputError):
    """Bad backbone options or weights; the message names the option or file."""


@dataclasses.dataclass(frozen=True)
class BackboneOptions:
    """Everything needed to rebuild a backbone in another process (Beam workers, a later search)."""

    name: str = DEFAULT_BACKBONE
    weights: Optional[str] = None  # c3d: HDF5 file; clip: preset handle or folder
    random_seed: Optional[int] = None  # set: seeded random weights instead of ``weights``
    sample_fps: Optional[float] = None  # clip: frames per second sampled (default 0.5); c3d: None
    c3d_mean: Optional[str] = None  # c3d: a mean cube .npy (default: the per-channel BGR mean)
    weights_sha256: Optional[str] = None  # expected SHA-256 of the weights file (checked by resolve)
    batch_size: int = 0  # clips / frames per forward pass (0: the backbone's default)

    def check(self) -> "BackboneOptions":
        """The options with defaults filled in; BackboneError for an impossible combination."""
        if self.name not in BACKBONES:
            close = closest(self.name, BACKBONES)
            raise BackboneError(f"--backbone {self.name!r}: unknown backbone; choose one of {', '.join(BACKBONES)}"
                                + (f" (did you mean {close}?)" if close else ""))
        if (self.weights is None) == (self.random_seed is None):
            what = "a Sports-1M C3D weights file (HDF5)" if self.name == "c3d" else \
                "a keras-hub preset handle or folder, e.g. clip_vit_base_patch32"
            raise BackboneError(f"--backbone {self.name}: give exactly one of --weights ({what}) or --random-weights "
                                f"(meaningless features, for tests and offline demos)")
        if self.batch_size < 0:
            raise BackboneError(f"--backbone-batch must be >= 0, got {self.batch_size}")
        if self.name == "c3d":
            if self.sample_fps is not None:
                raise BackboneError("--fps applies to frame backbones (clip); c3d reads every frame in 16-frame clips")
            return self
        if self.c3d_mean is not None:
            raise BackboneError("--c3d-mean applies to the c3d backbone only")
        fps = DEFAULT_CLIP_FPS if self.sample_fps is None else float(self.sample_fps)
        if not np.isfinite(fps) or fps <= 0:
            raise BackboneError(f"--fps must be a positive number of frames per second, got {self.sample_fps}")
        return dataclasses.replace(self, sample_fps=fps)

    def key(self) -> tuple:
        return dataclasses.astuple(self)


@dataclasses.dataclass
class Extracted:
    """Raw features of one video (or cut), with what maps their indices to seconds."""

    features: np.ndarray  # float32 [n, raw_dim]
    fps: float  # rate of the index space (video fps for C3D, the sampling rate for frame backbones)
    frames_per_feature: int
    video_fps: float  # the source video's own frame rate
    n_frames: int  # frames of the source video (or of the cut) that were decoded
    start_seconds: float = 0.0  # where feature 0 begins in the source video

    @property
    def seconds_per_feature(self) -> float:
        return self.frames_per_feature / self.fps


class Backbone(abc.ABC):
    """A video -> raw features network (see the module docstring)."""

    name: str
    raw_dim: int
    frames_per_feature: int
    gflops_per_feature: float

    def __init__(self, options: BackboneOptions):
        self.options = options

    @abc.abstractmethod
    def index_fps(self, video_fps: float) -> float:
        """The rate of the feature index space for a video of ``video_fps``."""

    def features_per_minute(self, video_fps: float) -> float:
        return 60.0 * self.index_fps(video_fps) / self.frames_per_feature

    def gflops_per_minute(self, video_fps: float = 25.0) -> float:
        """Backbone compute per minute of video (the figure `vreloc bench` compares across backbones)."""
        return self.features_per_minute(video_fps) * self.gflops_per_feature

    @abc.abstractmethod
    def extract(self, path: str, start: Optional[float] = None, end: Optional[float] = None,
                desc: Optional[str] = None) -> Extracted:
        """Raw features of ``path`` (or of seconds ``[start, end)`` of it); VideoError if unreadable.

        ``desc`` labels the progress bar (shown on a terminal; see vreloc_tf.progress).
        """


def _cut_frames(info, start: Optional[float], end: Optional[float]) -> Tuple[int, Optional[int]]:
    """Frame range [first, stop) of seconds [start, end): frames shown from ``start`` on, up to ``end``."""
    first = 0 if start is None else int(np.ceil(max(0.0, float(start)) * info.fps - 1e-9))
    stop = None if end is None else int(np.floor(float(end) * info.fps + 1e-9))
    return first, stop


def check_cut(start: Optional[float], end: Optional[float]) -> None:
    for name, value in (("--start", start), ("--end", end)):
        if value is not None and (not np.isfinite(value) or value < 0):
            raise BackboneError(f"{name} must be a non-negative number of seconds, got {value}")
    if start is not None and end is not None and end <= start:
        raise BackboneError(f"--end ({end} s) must be after --start ({start} s)")


class C3DBackbone(Backbone):
    """C3D fc7 of every whole 16-frame clip (pipeline/c3d.py)."""

    name = "c3d"
    raw_dim = FC7_DIM
    frames_per_feature = FRAMES_PER_FEATURE

    def __init__(self, options: BackboneOptions):
        super().__init__(options)

        self.gflops_per_feature = c3d.GFLOPS_PER_CLIP
        batch = options.batch_size or 8
        mean = options.c3d_mean
        if options.random_seed is not None:  # resolve() has said the features are meaningless
            self.extractor = c3d.C3DExtractor(c3d.build_c3d(seed=options.random_seed), batch_size=batch, mean=mean)
        else:
            self.extractor = c3d.C3DExtractor.from_weights(options.weights, batch_size=batch, mean=mean)

    def index_fps(self, video_fps: float) -> float:
        return float(video_fps)

    def extract(self, path, start=None, end=None, desc=None) -> Extracted:
        check_cut(start, end)
        info = video.probe(path)
        first, stop = _cut_frames(info, start, end)
        expected = max(0, ((min(stop, info.n_frames) if stop is not None else info.n_frames) - first)) // 16
        counts: dict = {}
        feats = []
        cut = start is not None or end is not None
        try:
            with progress.bar(total=expected, desc=desc or os.path.basename(path), unit="clip") as bar:
                for batch in video.iter_clips(path, counts=counts, frames=(first, stop)):
                    feats.append(self.extractor(batch))
                    bar.update(len(batch))
        except video.VideoError as exc:
            if cut and exc.reason.startswith("video has"):  # say it of the cut, not of the whole video
                raise video.VideoError(path, exc.reason.replace("video has", f"the cut [{start}, {end}) s has", 1)) \
                    from None
            raise
        return Extracted(np.concatenate(feats), float(info.fps), FRAMES_PER_FEATURE, float(info.fps),
                         int(counts["frames"]), first / info.fps)


class ClipBackbone(Backbone):
    """One frame every ``1 / sample_fps`` seconds through a keras-hub CLIP image encoder (pipeline/clip.py)."""

    name = "clip"
    frames_per_feature = 1

    def __init__(self, options: BackboneOptions):
        super().__init__(options)

        if options.random_seed is not None:
            model, converter = clip.random_clip(options.random_seed)
        else:
            model, converter = clip.load_preset(options.weights)
        self.encoder = clip.ClipEncoder(model, converter, batch_size=options.batch_size or 16)
        self.raw_dim = self.encoder.dim
        self.sample_fps = float(options.sample_fps or DEFAULT_CLIP_FPS)
        self.gflops_per_feature = _vit_gflops(model)

    def index_fps(self, video_fps: float) -> float:
        return self.sample_fps

    def extract(self, path, start=None, end=None, desc=None) -> Extracted:
        check_cut(start, end)
        info = video.probe(path)
        t0 = 0.0 if start is None else float(start)
        numbers = video.sample_times(info.n_frames, info.fps, self.sample_fps, t0, end)
        if len(numbers) == 0:
            length = info.n_frames / info.fps
            raise video.VideoError(path, f"{'the cut' if start or end else 'the video'} is shorter than one sampling "
                                         f"interval ({1 / self.sample_fps:g} s at {self.sample_fps:g} frames/s; "
                                         f"video length {length:.2f} s)")
        counts: dict = {}
        feats = []
        with progress.bar(total=len(numbers), desc=desc or os.path.basename(path), unit="frame") as bar:
            for frames in video.iter_sampled_frames(path, numbers, batch=self.encoder.batch_size, counts=counts):
                feats.append(self.encoder(frames))
                bar.update(len(frames))
        # Decoding stops at the last sampled frame: the video's length is the header's.
        return Extracted(np.concatenate(feats), self.sample_fps, 1, float(info.fps),
                         max(int(counts["frames"]), int(info.n_frames)) if end is None else int(counts["frames"]), t0)


def _vit_gflops(model) -> float:
    """Multiply-adds x2 of one image through a ViT image encoder and its projection."""
    enc = model.vision_encoder
    h, _ = enc.image_shape[:2]
    tokens = (h // enc.patch_size) ** 2 + 1
    d, f, layers = enc.hidden_dim, enc.intermediate_dim, enc.num_layers
    per_layer = tokens * (4 * d * d + 2 * d * f) + 2 * tokens * tokens * d
    patch = (tokens - 1) * enc.patch_size ** 2 * 3 * d
    proj = d * int(model.vision_projection.units)
    return 2.0 * (layers * per_layer + patch + proj) / 1e9


_BUILT: Dict[tuple, Backbone] = {}


def open_backbone(options: BackboneOptions) -> Backbone:
    """The backbone of ``options``, built once per process (building one costs seconds)."""
    options = options.check()
    key = options.key()
    if key not in _BUILT:
        _BUILT[key] = (C3DBackbone if options.name == "c3d" else ClipBackbone)(options)
    return _BUILT[key]


# --------------------------------------------------------------------------- checksums and specs

_HASHES: Dict[tuple, Tuple[str, str]] = {}


def file_digests(path: str) -> Tuple[str, str]:
    """(sha256, md5) of a local file, read once per process per (path, size, mtime)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        sha, md5 = hashlib.sha256(), hashlib.md5()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                sha.update(chunk)
                md5.update(chunk)
        _HASHES[key] = (sha.hexdigest(), md5.hexdigest())
    return _HASHES[key]


def check_published(path: str, what: str) -> None:
    """Compare a file named like a published one with the checksum its publisher states (logged)."""
    known = PUBLISHED_FILES.get(os.path.basename(path))
    if known is None:
        return
    algorithm, digest, where = known
    sha, md5 = file_digests(path)
    found = md5 if algorithm == "md5" else sha
    if found == digest:
        log.info("%s %s: %s %s matches the published file %s", what, path, algorithm, found, where)
    else:
        log.warning("%s %s: %s %s differs from the published file's %s (%s): another conversion or a corrupt "
                    "download; its layers and shapes are still checked", what, path, algorithm, found, digest, where)


def _local(path: str) -> bool:
    return "://" not in path


def resolve(options: BackboneOptions) -> Tuple[BackboneOptions, FeatureSpec]:
    """Check the options' files and hash the weights, before any job starts.

    Returns the options (local paths made absolute, the weights' SHA-256 filled in) and the
    spec of the raw features (no PCA yet: :func:`feature_spec` adds it).
    """
    options = options.check()
    weights, sha = options.weights, None
    if options.random_seed is not None:
        log.warning("%s with RANDOM weights (seed %d): the features are meaningless (for tests and demos only)",
                    options.name, options.random_seed)
    elif options.name == "c3d":
        if _local(weights):
            if not os.path.isfile(weights):
                raise BackboneError(f"--weights {weights}: no such file (Sports-1M C3D weights, HDF5; "
                                    f"see docs/YOUR_VIDEOS.md)")
            weights = os.path.abspath(weights)
            sha = file_digests(weights)[0]
            check_published(weights, "C3D weights")
    else:
        if os.path.isdir(weights):
            weights = os.path.abspath(weights)
        local = clip.preset_weights_file(weights)
        sha = file_digests(local)[0]
    raw_dim: Optional[int] = FC7_DIM
    if options.name == "clip":
        raw_dim = clip.VIT_B32["projection_dim"] if options.random_seed is not None else \
            clip.preset_embedding_dim(weights)
    if options.weights_sha256 and sha and options.weights_sha256.lower() != sha:
        raise BackboneError(f"--weights {weights}: sha256 {sha} differs from --weights-sha256 "
                            f"{options.weights_sha256}: another file, or a corrupt download")
    mean, mean_sha = None, None
    if options.name == "c3d":
        mean = C3D_PER_CHANNEL_MEAN
        if options.c3d_mean:
            if not os.path.isfile(options.c3d_mean):
                raise BackboneError(f"--c3d-mean {options.c3d_mean}: no such file")
            mean = os.path.abspath(options.c3d_mean)
            mean_sha = file_digests(mean)[0]
            check_published(mean, "C3D mean")

            try:
                load_mean(mean)
            except ValueError as exc:
                raise BackboneError(f"--c3d-mean {options.c3d_mean}: {exc}") from None
    options = dataclasses.replace(options, weights=weights, weights_sha256=sha,
                                  c3d_mean=mean if options.c3d_mean else None)
    spec = FeatureSpec(backbone=options.name, feature_dim=raw_dim or 0, raw_dim=raw_dim, weights=weights,
                       weights_sha256=sha, random_seed=options.random_seed, sample_fps=options.sample_fps,
                       frames_per_feature=FRAMES_PER_FEATURE if options.name == "c3d" else 1,
                       mean=mean, mean_sha256=mean_sha)
    return options, spec


def feature_spec(raw: FeatureSpec, raw_dim: int, pca_file: Optional[str] = None, pca=None,
                 pca_sha256: Optional[str] = None) -> FeatureSpec:
    """The spec of features made by ``raw``'s backbone (raw width ``raw_dim``) and then the PCA, if any."""
    if pca is None:
        return dataclasses.replace(raw, raw_dim=raw_dim, feature_dim=raw_dim, pca_file=None, pca_sha256=None,
                                   pca_components=None)
    if pca_sha256 is None and pca_file and _local(pca_file) and os.path.isfile(pca_file):
        pca_sha256 = file_digests(pca_file)[0]
    return dataclasses.replace(raw, raw_dim=raw_dim, feature_dim=pca.n_components, pca_file=pca_file,
                               pca_sha256=pca_sha256, pca_components=pca.n_components)


def options_like(spec: FeatureSpec, batch_size: int = 0) -> BackboneOptions:
    """Options that rebuild the backbone that made ``spec``'s features (for `features --like`, search)."""
    if not spec.extractable:
        raise BackboneError(f"the features are {spec.summary()}: no video backbone makes more of them")
    if spec.backbone not in BACKBONES:
        raise BackboneError(f"the features were made by backbone {spec.backbone!r}, which this version does not have")
    if spec.random_seed is None and not spec.weights:
        raise BackboneError(f"the features are {spec.summary()} but the weights file is not recorded; "
                            f"give --weights")
    mean = spec.mean if spec.mean and spec.mean != C3D_PER_CHANNEL_MEAN else None
    return BackboneOptions(name=spec.backbone, weights=None if spec.random_seed is not None else spec.weights,
                           random_seed=spec.random_seed, sample_fps=spec.sample_fps, c3d_mean=mean,
                           weights_sha256=spec.weights_sha256, batch_size=batch_size)
