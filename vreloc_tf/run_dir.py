"""The layout of a training run folder — the contract between training, evaluation, export and locate.

::

    RUN_DIR/
      config.yaml          resolved Config the run trained with (every value, after --set)
      run.json             run manifest: data dir, feature_dim, supervision, pca file, best step/score,
                           code version, timings (see RunManifest)
      model.keras          the best inference model (functional, loads with keras.saving.load_model)
      checkpoints/         periodic checkpoints (step-NNNNNN.keras)
      backup/              BackupAndRestore state, so a killed run resumes
      logs/                TensorBoard event files

Writers call :func:`write_run_manifest`; readers call :func:`load_run`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from vreloc_tf import __version__
from vreloc_tf.config import Config, load_config

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "run.json"
MODEL_FILE = "model.keras"
CHECKPOINT_DIR = "checkpoints"
BACKUP_DIR = "backup"
LOG_DIR = "logs"


@dataclasses.dataclass
class RunManifest:
    data_dir: str
    feature_dim: int
    supervision: str
    pca_file: Optional[str] = None  # PCA artifact of the training data (raw videos), for locate
    frames_per_feature: int = 16
    steps: int = 0
    best_step: Optional[int] = None
    best_val_average: Optional[float] = None
    train_seconds: Optional[float] = None
    code_version: str = __version__
    extra: dict = dataclasses.field(default_factory=dict)


def write_run_manifest(run_dir: str, manifest: RunManifest) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, MANIFEST_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(dataclasses.asdict(manifest), fh, indent=2)
    os.replace(tmp, path)
    return path


def read_run_manifest(run_dir: str) -> RunManifest:
    path = os.path.join(run_dir, MANIFEST_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: not a training run folder (no {MANIFEST_FILE}); train one with `vreloc train`")
    with open(path) as fh:
        data = json.load(fh)
    known = {f.name for f in dataclasses.fields(RunManifest)}
    return RunManifest(**{k: v for k, v in data.items() if k in known})


def load_run_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no {CONFIG_FILE}")
    return load_config(path)


def load_run(run_dir: str, compile: bool = False):
    """(inference model, Config, RunManifest) of a run folder."""
    import keras

    import vreloc_tf.model  # noqa: F401  (registers the custom layers)

    path = os.path.join(run_dir, MODEL_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir}: no {MODEL_FILE}; has the run finished?")
    model = keras.saving.load_model(path, compile=compile)
    return model, load_run_config(run_dir), read_run_manifest(run_dir)
