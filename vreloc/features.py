"""Features of a video file made exactly like an artifact's: `vreloc features`, search queries and `locate`.

Why: a model, a data folder or a library index only understands features made the way
its own were made (backbone, weights, frame rate, PCA: a :class:`FeatureSpec`). Given an
artifact, :func:`spec_of` reads its spec; :func:`recipe_like` rebuilds the backbone and
PCA that made it -- flags may stand in for what the spec cannot name, e.g. the weights
behind the published ActivityNet features -- and refuses, before decoding anything, a
combination that would make other features. :func:`extract` then turns a file (or a cut
of it) into float32 ``[L, D]`` features, ready for `vreloc query`, `search --query` or REST.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional, Tuple

import numpy as np

from pipeline import backbones
from pipeline.backbones import BackboneOptions, Extracted
from vreloc_tf.data.artifacts import Dataset, Export, Run, find_version_dir
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureSpec
from vreloc_tf.data.schema import MANIFEST_NAME
from vreloc_tf.search.library import LibraryIndex, is_index_folder

log = logging.getLogger("vreloc.features")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


def looks_like_video(path: str) -> bool:
    """A video container by extension, or by content when PyAV opens it with a video stream."""
    if os.path.splitext(path)[1].lower() in VIDEO_EXTENSIONS:
        return True
    if path.endswith(".npy") or not os.path.isfile(path):
        return False
    try:
        import av

        with av.open(path) as container:
            return bool(container.streams.video)
    except Exception:  # not something FFmpeg can open: not a video
        return False


def spec_of(path: str) -> Tuple[Optional[FeatureSpec], str]:
    """(spec, what it is) of a data folder, run folder, export (BASE/NAME or a version) or library index."""
    if not os.path.isdir(path):
        raise InputError(f"--like {path}: no such folder (give a data folder, a run folder, an export or an index)")
    if is_index_folder(path):
        return LibraryIndex.open(path).feature_spec, f"the index {path}"
    if os.path.isfile(os.path.join(path, MANIFEST_NAME)):
        return Dataset.open(path).feature_spec, f"the data folder {path}"
    if os.path.isfile(os.path.join(path, "run.json")):
        return Run.open(path).feature_spec, f"the run {path}"
    version_dir = find_version_dir(path)
    if version_dir:
        return Export.open(version_dir).feature_spec, f"the export {version_dir}"
    raise InputError(f"--like {path}: not a data folder (manifest.json), run folder (run.json), export "
                     f"(<version>/saved_model.pb) or library index")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to make features like an artifact's: the backbone options, the PCA, and the spec they make."""

    options: BackboneOptions
    pca_file: Optional[str]
    spec: FeatureSpec  # what these options and this PCA make
    loaded_pca: object = dataclasses.field(default=None, compare=False, repr=False)  # read once, by recipe_like

    def pca(self):
        """The PCA, cut to the spec's components (ActivityNet's file holds 4,096; its features use 500)."""
        return self.loaded_pca


def default_options(spec: Optional[FeatureSpec]) -> Optional[BackboneOptions]:
    """The options that made ``spec``'s features, as far as it names them (None: no spec)."""
    if spec is None or not spec.extractable:
        return None
    try:
        return backbones.options_like(spec)
    except InputError:  # the weights are not named (e.g. the published ActivityNet features): flags must say
        return BackboneOptions(name=spec.backbone if spec.backbone in backbones.BACKBONES else backbones.DEFAULT_BACKBONE,
                               sample_fps=spec.sample_fps)


def recipe_like(spec: Optional[FeatureSpec], where: str, options: Optional[BackboneOptions] = None,
                pca_file: Optional[str] = None) -> Recipe:
    """The recipe that makes features like ``spec``'s (described as ``where``), checked against it.

    ``options``: the backbone to use (the command line's flags over :func:`default_options`);
    None: the spec's own. ``pca_file`` overrides the spec's PCA (needed when the spec cannot
    name its file, e.g. ActivityNet's). Refuses, before any decoding, options or a PCA that
    make other features than the spec's.
    """
    if spec is not None and not spec.extractable:
        raise InputError(f"{where} holds {spec.summary()}: no video backbone makes features like them; "
                         f"train on features of real videos (vreloc extract-video or the ActivityNet release)")
    if spec is None and options is None:
        raise InputError(f"{where} does not record how its features were made (an artifact from before "
                         f"feature specs); give --backbone, --weights or --random-weights, and --pca")
    options, raw = backbones.resolve(options if options is not None else backbones.options_like(spec))
    hint = "use the backbone, weights and PCA it was made with, or make it again with these"
    if spec is not None:  # backbone, weights, rate first: the PCA would only fail later on the wrong width
        spec.check_same(dataclasses.replace(raw, feature_dim=spec.feature_dim, pca_file=spec.pca_file,
                                            pca_sha256=spec.pca_sha256, pca_components=spec.pca_components),
                        where, "this backbone", hint=hint)
    pca_path = pca_file or (spec.pca_file if spec is not None else None)
    if spec is not None and spec.pca_components and not pca_path:
        raise InputError(f"{where} holds features reduced by a PCA ({spec.summary()}) whose file is not known "
                         f"here; give it with --pca (ActivityNet's release: PCA_activitynet_v1-3.hdf5)")
    if pca_path and "://" not in pca_path and not os.path.exists(pca_path):
        raise InputError(f"the PCA file {pca_path} of {where} is missing; give it with --pca")
    pca = None
    if pca_path:
        from pipeline.pca import PCA  # heavy: Apache Beam (pipeline.pca's CombineFn), only when a PCA is applied

        pca = PCA.load(pca_path, n_components=spec.feature_dim if spec is not None and spec.pca_components else None)
        if raw.raw_dim is not None and pca.dim != raw.raw_dim:
            raise InputError(f"the PCA {pca_path} takes {pca.dim}-d inputs but the {options.name} backbone makes "
                             f"{raw.raw_dim}-d features")
    made = backbones.feature_spec(raw, raw.raw_dim or (pca.dim if pca else 0), pca_path, pca)
    if spec is not None:
        spec.check_same(made, where, "this backbone, weights and PCA", hint=hint)
    return Recipe(options, pca_path, made, pca)


def extract(recipe: Recipe, path: str, start: Optional[float] = None, end: Optional[float] = None,
            desc: Optional[str] = None, pca=None) -> Tuple[np.ndarray, Extracted]:
    """float32 [L, D] features of ``path`` (or seconds [start, end) of it) by ``recipe``; LocateError-style
    InputError (pipeline.video.VideoError) when the file cannot be decoded."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    net = backbones.open_backbone(recipe.options)
    got = net.extract(path, start, end, desc=desc)
    pca = pca if pca is not None else recipe.pca()
    feats = pca.transform(got.features) if pca is not None else np.asarray(got.features, np.float32)
    return np.ascontiguousarray(feats, dtype=np.float32), got
