"""Typed artifacts that pass between stages: a dataset, a training run, an export.

Why: a stage hands the next one a folder, and every reader used to re-derive what is in
it (feature dim from one JSON key here, the run's config from a file there). These small
frozen dataclasses open a folder once, check it, and carry what later stages need, so a
wrong folder fails at the door with one line (an :class:`InputError`) and stages call
library functions with values instead of strings.

Layouts::

    DATA_DIR/   manifest.json, <split>-SSSSS-of-NNNNN.tfrecord, dead_letter/   (the Beam jobs)
    RUN_DIR/    config.yaml          resolved Config the run trained with (every value, after --set)
                run.json             RunManifest: data folder, feature dim, data source, data content
                                     fingerprint, pca file, best step and score, code version, timings
                data.json            DataRecord: the content fingerprint of the data the run started on
                                     (written before its first step; a resume on other data is refused)
                model.keras          the best inference model (loads with keras.saving.load_model)
                checkpoints/         periodic checkpoints (step-NNNNNN.keras)
                backup/              BackupAndRestore state, so a killed run resumes
                logs/                TensorBoard event files
    BASE/NAME/<version>/             a TF Serving SavedModel (serving/export.py; names and versions:
                                     vreloc_tf/data/versions.py), assets.extra/vreloc.json = ExportInfo
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Sequence

from vreloc_tf import __version__, contract
from vreloc_tf.data import schema
from vreloc_tf.config import Config, load_config, save_config
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureSpec
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.files import read_json, write_json_atomic
from vreloc_tf.data.fingerprint import content_fingerprint
from vreloc_tf.data import versions

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "run.json"
DATA_FILE = "data.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
LOG_DIR = "logs"
TRAINING_SPLITS = ("train", "val")  # what `vreloc train` reads: its data source is theirs


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A data folder written by a Beam job: TFRecord shards per split and ``manifest.json``."""

    path: str
    feature_dim: int
    manifest: DataManifest = dataclasses.field(compare=False, repr=False)  # its manifest.json, typed

    @classmethod
    def open(cls, path: str) -> "Dataset":
        if not os.path.isdir(path):
            raise InputError(f"{path}: no such data folder; write one with `vreloc ingest-activitynet` "
                             f"or `vreloc extract-video`")
        manifest_path = os.path.join(path, schema.MANIFEST_NAME)
        if not os.path.exists(manifest_path):
            raise InputError(f"{path}: not a data folder (no {schema.MANIFEST_NAME}); write one with "
                             f"`vreloc ingest-activitynet` or `vreloc extract-video`")
        manifest = DataManifest.read(path)
        dim = manifest.feature_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"{manifest_path}: no valid 'feature_dim' (got {dim!r}); rewrite the folder "
                             f"with its Beam job")
        return cls(os.path.abspath(path), dim, manifest)

    @property
    def frames_per_feature(self) -> int:
        return self.manifest.frames_per_feature

    @property
    def pca_file(self) -> Optional[str]:
        """The PCA that made raw-video features (extract-video), for locate and export.

        A relative path in the manifest is relative to the data folder, so the folder can move.
        """
        path = self.manifest.pca_file
        if path and "://" not in path and not os.path.isabs(path):
            return os.path.normpath(os.path.join(self.path, path))
        return path

    @property
    def feature_spec(self) -> Optional[FeatureSpec]:
        """What made the features (backbone, weights, frame rate, PCA); None for folders written before
        specs were recorded. Its PCA path is resolved against the data folder."""
        spec = FeatureSpec.of_manifest(self.manifest.fields, os.path.join(self.path, schema.MANIFEST_NAME))
        return spec.with_pca_path(spec.resolved_pca(self.path)) if spec else None

    @property
    def splits(self) -> Sequence[str]:
        return tuple(self.manifest.splits or ())

    def source(self, split: str) -> Any:
        """Where ``split`` came from: the split's own ``source`` (newer manifests), else the folder's.

        A folder whose manifest names no source at all is identified by its own path.
        """
        entry = self.manifest.split(split)
        if isinstance(entry, dict) and entry.get("source") is not None:
            return entry["source"]
        if self.manifest.source is not None:
            return self.manifest.source
        return {"data_dir": self.path}

    def training_source(self) -> Dict[str, Any]:
        """The sources of the splits training reads (recorded in run.json, compared on resume)."""
        return {split: self.source(split) for split in TRAINING_SPLITS}

    def record_files(self, splits: Sequence[str] = TRAINING_SPLITS) -> List[str]:
        """The TFRecord shards of ``splits`` (an error naming the folder and split if one has none)."""
        return [path for split in splits for path in schema.shard_files(self.path, split)]

    def content_fingerprint(self, splits: Sequence[str] = TRAINING_SPLITS) -> str:
        """SHA-256 of the record files of ``splits`` (default: those training reads), by content and
        names relative to the folder, so a moved or copied folder keeps it (vreloc_tf.data.fingerprint)."""
        return content_fingerprint(self.record_files(splits), root=self.path)

    def check_feature_dim(self, expected: Optional[int], what: str = "data.feature_dim") -> int:
        """The data's feature dim; InputError if ``expected`` (a config value, None = any) differs."""
        if expected is not None and int(expected) != self.feature_dim:
            raise InputError(f"{what} is {expected} but {self.path} holds {self.feature_dim}-d features; "
                             f"use --set data.feature_dim={self.feature_dim} (or null to take the data's)")
        return self.feature_dim


@dataclasses.dataclass
class RunManifest:
    """run.json: what a run was trained on and how it went."""

    data_dir: str
    feature_dim: int
    supervision: str
    pca_file: Optional[str] = None  # PCA artifact of the training data (raw videos), for locate
    frames_per_feature: int = contract.FRAMES_PER_FEATURE
    data_source: Optional[dict] = None  # Dataset.training_source() of the data it was trained on
    data_fingerprint: Optional[str] = None  # Dataset.content_fingerprint() of that data (None: older runs)
    features: Optional[dict] = None  # FeatureSpec.to_json() of the training features (PCA path absolute)
    steps: int = 0
    best_step: Optional[int] = None
    best_val_average: Optional[float] = None  # val mAP@1 of the selected checkpoint (logged, not a criterion for weak)
    selection: Optional[str] = None  # the checkpoint-selection rule used: last | val_map | label_free
    decode: Optional[str] = None  # the decoding rule of the run (Config.decode_rule): full (Eq. 20) | weak
    train_seconds: Optional[float] = None
    code_version: str = __version__
    extra: dict = dataclasses.field(default_factory=dict)

    def write(self, run_dir: str) -> str:
        return write_json_atomic(os.path.join(run_dir, MANIFEST_FILE), dataclasses.asdict(self))

    @classmethod
    def read(cls, run_dir: str) -> "RunManifest":
        path = os.path.join(run_dir, MANIFEST_FILE)
        if not os.path.exists(path):
            raise InputError(f"{run_dir}: not a finished training run folder (no {MANIFEST_FILE}); "
                             f"train one with `vreloc train`")
        data = read_json(path, "run manifest")
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a run manifest (expected a JSON object)")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclasses.dataclass(frozen=True)
class DataRecord:
    """data.json: the data a run started on, by content (``fingerprint``) and, for people, by path.

    Written before the run's first step, so an interrupted run knows what its steps were trained
    on; run.json is written only at the end, too late for that.
    """

    fingerprint: str  # Dataset.content_fingerprint(TRAINING_SPLITS)
    data_dir: str  # where the data was (information only: the fingerprint decides)
    splits: Sequence[str] = TRAINING_SPLITS

    @classmethod
    def of(cls, dataset: Dataset, fingerprint: Optional[str] = None) -> "DataRecord":
        return cls(fingerprint or dataset.content_fingerprint(), dataset.path, tuple(TRAINING_SPLITS))

    def write(self, run_dir: str) -> str:
        data = dict(dataclasses.asdict(self), splits=list(self.splits), hash="sha256 over the record files of "
                    "the splits, sorted by name; per file its name, length and bytes (vreloc_tf.data.fingerprint)")
        return write_json_atomic(os.path.join(run_dir, DATA_FILE), data)

    @classmethod
    def read(cls, run_dir: str) -> Optional["DataRecord"]:
        """The run's record, or None if it has none (a fresh folder, or a run from before data.json)."""
        path = os.path.join(run_dir, DATA_FILE)
        if not os.path.exists(path):
            return None
        data = read_json(path, "run data record")
        if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
            raise InputError(f"{path}: not a run data record (no 'fingerprint'); the run folder is damaged: "
                             f"train it again with --overwrite")
        return cls(data["fingerprint"], str(data.get("data_dir")), tuple(data.get("splits") or TRAINING_SPLITS))


@dataclasses.dataclass(frozen=True)
class Run:
    """A training run folder (see the module docstring for its layout)."""

    path: str
    config: Config
    manifest: RunManifest

    def __post_init__(self):
        # absolute however it was made (opened, created, trained): a Beam worker or a served export's
        # metadata elsewhere reads the same folder
        object.__setattr__(self, "path", os.path.abspath(self.path))

    @classmethod
    def open(cls, path: str) -> "Run":
        manifest = RunManifest.read(path)
        config_path = os.path.join(path, CONFIG_FILE)
        if not os.path.exists(config_path):
            raise InputError(f"{path}: no {CONFIG_FILE}; the run folder is incomplete, train it again")
        return cls(path, load_config(config_path), manifest)

    @classmethod
    def create(cls, path: str, config: Config, manifest: RunManifest, model=None) -> "Run":
        """Write a run folder from its parts (tools and tests that build a model without training)."""
        os.makedirs(path, exist_ok=True)
        save_config(config, os.path.join(path, CONFIG_FILE))
        if model is not None:
            model.save(os.path.join(path, MODEL_FILE))
        manifest.write(path)
        return cls(path, config, manifest)

    @property
    def feature_spec(self) -> Optional[FeatureSpec]:
        """What made the features the run was trained on; None for runs from before specs were recorded."""
        if self.manifest.features is None:
            return None
        return FeatureSpec.from_json(self.manifest.features, f"{os.path.join(self.path, MANIFEST_FILE)}: 'features'")

    @property
    def model_file(self) -> str:
        return os.path.join(self.path, MODEL_FILE)

    def checkpoint_file(self, checkpoint: Optional[str] = None) -> str:
        """``model.keras`` (None: the selected model), ``checkpoints/step-N.keras`` (a step number),
        or the last checkpoint (``"last"``)."""
        if checkpoint is None:
            if not os.path.exists(self.model_file):
                raise InputError(f"{self.path}: no {MODEL_FILE}; has the run finished?")
            return self.model_file
        folder = os.path.join(self.path, CHECKPOINT_DIR)
        steps = sorted(int(n[5:-6]) for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                       if n.startswith("step-") and n.endswith(".keras") and n[5:-6].isdigit())
        if str(checkpoint) == "last":
            if not steps:
                raise InputError(f"{self.path}: no checkpoints in {folder}")
            checkpoint = steps[-1]
        if not str(checkpoint).isdigit() or int(checkpoint) not in steps:
            raise InputError(f"{self.path}: no checkpoint of step {checkpoint!r} (steps: {steps}); "
                             f"use 'last' or one of them")
        return os.path.join(folder, f"step-{int(checkpoint):06d}.keras")

    def load_model(self, compile: bool = False, checkpoint: Optional[str] = None):
        """The selected inference model of the run (or a checkpoint, see :meth:`checkpoint_file`)."""
        import keras

        # heavy: TensorFlow; importing vreloc_tf.model.functional registers the custom layers a load needs
        import vreloc_tf.model.functional  # noqa: F401  (registers the custom layers)

        return keras.saving.load_model(self.checkpoint_file(checkpoint), compile=compile)

    def dataset(self, dataset: Optional[Dataset] = None) -> Dataset:
        """The data to score this run on, checked to have the run's feature dim and feature spec:
        ``dataset`` (opened by the caller), or, if None, the run's own data (run.json's ``data_dir``)."""
        dataset = dataset if dataset is not None else Dataset.open(self.manifest.data_dir)
        if dataset.feature_dim != self.manifest.feature_dim:
            raise InputError(f"{dataset.path} holds {dataset.feature_dim}-d features but the run in {self.path} "
                             f"was trained on {self.manifest.feature_dim}-d features ({self.manifest.data_dir})")
        if self.feature_spec is not None:  # same dim is not enough: same backbone, weights, rate and PCA
            self.feature_spec.check_same(dataset.feature_spec, f"the run {self.path}", f"the data {dataset.path}")
        return dataset


@dataclasses.dataclass
class ExportInfo:
    """``assets.extra/vreloc.json`` of an export version: what a client, ``locate`` and the server need
    to know of the model without loading it (serving/export.py writes it, :meth:`Export.open` reads it).

    Written in this key order (the file's bytes are those of the dict before this class existed);
    ``pca`` and ``features`` only when the run had them; keys of newer versions are kept in ``extra``
    and written back, keys older exports lack read as None.
    """

    model_name: Optional[str] = None
    version: Optional[int] = None
    signature_name: Optional[str] = None
    feature_dim: Optional[int] = None
    frames_per_feature: Optional[int] = None
    fps: Optional[float] = None  # None: per video; pass --fps to vreloc query
    supervision: Optional[str] = None
    decode: Optional[str] = None
    decode_max_length: Optional[int] = None
    jit_compile: Optional[bool] = None
    max_window: Optional[int] = None  # the reference window `vreloc locate` uses with this model
    config_digest: Optional[str] = None
    run_dir: Optional[str] = None
    best_step: Optional[int] = None
    code_version: Optional[str] = None
    exported_at: Optional[str] = None
    pca: Optional[str] = None  # the PCA's file name in assets.extra/ (raw-video runs only)
    features: Optional[dict] = None  # FeatureSpec.to_json(), its PCA path relative to assets.extra/
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    OPTIONAL = ("pca", "features")  # left out of the file when None, as export_model always did

    def to_json(self) -> Dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for key in self.OPTIONAL:
            if doc[key] is None:
                del doc[key]
        return {**doc, **self.extra}

    def write(self, version_dir: str) -> str:
        """Write ``version_dir/assets.extra/vreloc.json`` (atomically)."""
        return write_json_atomic(os.path.join(version_dir, versions.ASSETS_EXTRA_DIR, versions.METADATA_FILE),
                                 self.to_json())

    @classmethod
    def from_json(cls, doc: Any, where: str) -> "ExportInfo":
        if not isinstance(doc, dict):
            raise InputError(f"{where}: not export metadata (expected a JSON object); export the run again")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in doc.items() if k in known},
                   extra={k: v for k, v in doc.items() if k not in known})

    @classmethod
    def read(cls, version_dir: str) -> Optional["ExportInfo"]:
        """The version's metadata, or None for an export without ``vreloc.json`` (e.g. made by other tools)."""
        path = os.path.join(version_dir, versions.ASSETS_EXTRA_DIR, versions.METADATA_FILE)
        if not os.path.exists(path):
            return None
        return cls.from_json(read_json(path, "export metadata"), path)


def find_version_dir(path: str) -> Optional[str]:
    """The version folder an export path names: the path itself if it holds a SavedModel, else the
    highest complete version of BASE/NAME (by its folder name: version 7 may live in 007/), else None."""
    if os.path.isfile(os.path.join(path, versions.SAVED_MODEL_FILE)):
        return path
    return versions.latest_version_dir(path)


@dataclasses.dataclass(frozen=True)
class Export:
    """One exported SavedModel version, as TF Serving sees it (``BASE/NAME/<version>/``).

    ``info``: its ``vreloc.json`` (None: an export without one). Returned by
    ``serving.export.export_model``; :meth:`open` reads one from disk (a version folder, or
    BASE/NAME for its highest complete version), so ``locate`` and ``features --like`` no longer
    work out the layout themselves.
    """

    base_path: str  # BASE/NAME
    model_name: str  # NAME, the served model name
    version: int
    path: str  # BASE/NAME/<version> (the folder's own name: 007 for version 7)
    info: Optional[ExportInfo] = dataclasses.field(default=None, compare=False, repr=False)

    @classmethod
    def open(cls, path: str) -> "Export":
        """The export at ``path``: a version folder, or BASE/NAME (its highest complete version)."""
        if not os.path.isdir(path):
            raise InputError(f"{path}: no such export folder; export a run with `vreloc export`")
        version_dir = find_version_dir(path)
        if version_dir is None:
            raise InputError(f"{path}: no exported versions (expected {path}/<version>/{versions.SAVED_MODEL_FILE})")
        base = os.path.dirname(os.path.normpath(version_dir))
        version = versions.parse_version(os.path.basename(os.path.normpath(version_dir)))
        info = ExportInfo.read(version_dir)
        if version is None:  # a SavedModel folder not named as a version: its metadata says which it is
            version = int(info.version) if info is not None and info.version is not None else 0
        return cls(base, os.path.basename(base), version, version_dir, info)

    def to_json(self) -> Dict[str, Any]:
        """Where the export is (what a pipeline stage records; :meth:`open` of ``path`` reads it back)."""
        return {"base_path": self.base_path, "model_name": self.model_name, "version": self.version,
                "path": self.path}

    @property
    def assets_extra(self) -> str:
        return os.path.join(self.path, versions.ASSETS_EXTRA_DIR)

    @property
    def pca_file(self) -> Optional[str]:
        """The training data's PCA that travels in ``assets.extra/`` (None: the run had none, or an
        older export did not copy it)."""
        return os.path.join(self.assets_extra, self.info.pca) if self.info is not None and self.info.pca else None

    @property
    def feature_spec(self) -> Optional[FeatureSpec]:
        """What made the training features (its PCA path resolved against assets.extra/); None if not recorded."""
        if self.info is None or not self.info.features:
            return None
        spec = FeatureSpec.from_json(self.info.features, f"{self.path}: vreloc.json 'features'")
        return spec.with_pca_path(spec.resolved_pca(self.assets_extra))
