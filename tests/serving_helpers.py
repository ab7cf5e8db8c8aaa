"""Shared set-up for the serving tests: tiny run folders, cached exports, random padded batches.

A run folder is built directly (build_model + run_dir.write_run_manifest), not
by ``vreloc train``, so these tests depend only on the model contract. Each
distinct run and its export are made once per test process and copied where a
test needs its own base path (copying is cheaper than exporting again).
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np

FEATURE_DIM = 8
MODEL_NAME = "vreloc"

_ROOT = tempfile.mkdtemp(prefix="vreloc-serving-tests-")
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def make_run(seed: int = 0, supervision: str = "full") -> str:
    """A tiny untrained run folder (model.keras, config.yaml, run.json); weights depend on ``seed``."""
    return _make_run(seed, supervision)


@functools.lru_cache(maxsize=None)
def _make_run(seed: int, supervision: str) -> str:
    import keras

    from vreloc_tf.config import load_config, save_config
    from vreloc_tf.model import build_model
    from vreloc_tf.run_dir import CONFIG_FILE, MODEL_FILE, RunManifest, write_run_manifest

    run_dir = os.path.join(_ROOT, f"run-{supervision}-{seed}")
    os.makedirs(run_dir)
    cfg = load_config("tiny", [f"supervision={supervision}", f"seed={seed}"])
    keras.utils.set_random_seed(seed)
    model = build_model(cfg, feature_dim=FEATURE_DIM)
    model.save(os.path.join(run_dir, MODEL_FILE))
    save_config(cfg, os.path.join(run_dir, CONFIG_FILE))
    write_run_manifest(run_dir, RunManifest(data_dir="(built by the test)", feature_dim=FEATURE_DIM,
                                            supervision=supervision, frames_per_feature=16))
    return run_dir


@functools.lru_cache(maxsize=None)
def _cached_export(seed: int, supervision: str) -> str:
    from serving.export import export_model

    base = os.path.join(_ROOT, f"export-{supervision}-{seed}", MODEL_NAME)
    export_model(make_run(seed, supervision), base)
    return base


def export_copy(dest_root: str, seed: int = 0, supervision: str = "full", version: int = 1) -> str:
    """BASE/NAME under ``dest_root`` holding the export of run ``seed`` as ``version``; returns BASE/NAME."""
    base = os.path.join(dest_root, MODEL_NAME)
    os.makedirs(base, exist_ok=True)
    shutil.copytree(os.path.join(_cached_export(seed, supervision), "1"), os.path.join(base, str(version)))
    return base


def random_batch(rng: np.random.Generator, lq=(5, 3), lr=(40, 23), pad_q: int = 2, pad_r: int = 7,
                 feature_dim: int = FEATURE_DIM) -> dict:
    """A padded batch: row i has lq[i] / lr[i] valid steps; padding is random junk (not zeros)."""
    batch = len(lq)
    tq, tr = max(lq) + pad_q, max(lr) + pad_r
    return {
        "query": rng.standard_normal((batch, tq, feature_dim)).astype(np.float32),
        "query_length": np.asarray(lq, np.int32),
        "reference": rng.standard_normal((batch, tr, feature_dim)).astype(np.float32),
        "reference_length": np.asarray(lr, np.int32),
    }


@functools.lru_cache(maxsize=None)
def load_saved_model(path: str):
    """The serving_default function of a SavedModel, loaded once per process."""
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def saved_model_outputs(path: str, arrays: dict) -> dict:
    """In-process outputs of a SavedModel version for NumPy inputs."""
    import tensorflow as tf

    fn = load_saved_model(path)
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in arrays.items()}).items()}
