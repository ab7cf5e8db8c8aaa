"""Tiny run folders and their exports for the serving, export and locate tests; random padded batches.

A run folder is built directly (build_model + Run.create), not by ``vreloc train``, so
these tests depend only on the model contract. Each distinct run and its export are
made once per test session, under the session's temporary folder (set by the
``_runs_root`` fixture in conftest.py), and copied where a test needs its own base path
(copying is cheaper than exporting again).
"""
from __future__ import annotations

import functools
import os
import shutil
from typing import Optional

import numpy as np

FEATURE_DIM = 8
MODEL_NAME = "vreloc"

_root: Optional[str] = None


def set_root(path: str) -> None:
    """Where this session's runs and exports go (conftest.py sets it from tmp_path_factory)."""
    global _root
    _root = path


def _folder(name: str) -> str:
    assert _root is not None, "helpers.runs is used outside a pytest session (conftest.py sets its root)"
    return os.path.join(_root, name)


def _tag(overrides: tuple) -> str:
    """A short folder-name suffix for a set of config overrides ('' for none)."""
    import hashlib

    return f"-{hashlib.sha1(repr(overrides).encode()).hexdigest()[:8]}" if overrides else ""


def make_run(seed: int = 0, supervision: str = "full", overrides: tuple = ()) -> str:
    """A tiny untrained run folder (model.keras, config.yaml, run.json); weights depend on ``seed``;
    ``overrides``: more config overrides (e.g. vreloc_tf.config.CGBM_METHOD for Feng et al.'s CGBM)."""
    return _make_run(seed, supervision, tuple(overrides))


@functools.lru_cache(maxsize=None)
def _make_run(seed: int, supervision: str, overrides: tuple = ()) -> str:
    import keras

    from vreloc_tf.data.artifacts import Run, RunManifest
    from vreloc_tf.config import load_config
    from vreloc_tf.model.functional import build_model

    cfg = load_config("tiny", [f"supervision={supervision}", f"seed={seed}", f"data.feature_dim={FEATURE_DIM}",
                               *overrides])
    keras.utils.set_random_seed(seed)
    manifest = RunManifest(data_dir="(built by the test)", feature_dim=FEATURE_DIM, supervision=supervision)
    return Run.create(_folder(f"run-{supervision}-{seed}{_tag(overrides)}"), cfg, manifest,
                      model=build_model(cfg, feature_dim=FEATURE_DIM)).path


@functools.lru_cache(maxsize=None)
def _cached_export(seed: int, supervision: str, overrides: tuple = (), xla: bool = True) -> str:
    from serving.export import export_model
    from vreloc_tf.data.artifacts import Run

    name = f"export-{supervision}-{seed}{_tag(overrides)}{'' if xla else '-noxla'}/{MODEL_NAME}"
    return export_model(Run.open(make_run(seed, supervision, overrides)), _folder(name), jit_compile=xla).base_path


def export_copy(dest_root: str, seed: int = 0, supervision: str = "full", version: int = 1,
                overrides: tuple = (), xla: bool = True) -> str:
    """BASE/NAME under ``dest_root`` holding the export of run ``seed`` (+ ``overrides``) as ``version``;
    returns BASE/NAME.

    ``xla=False``: the signature without XLA. Loading it takes ~2 s instead of ~9 s (no XLA
    compilation of the warm-up shapes), so tests of what does not depend on the compiled
    signature (version loading, TLS, binding, the client, REST, CGBM serving) use it; the served-model,
    batching, export and plain-TensorFlow tests keep the default XLA export the product ships.
    """
    base = os.path.join(dest_root, MODEL_NAME)
    os.makedirs(base, exist_ok=True)
    shutil.copytree(os.path.join(_cached_export(seed, supervision, tuple(overrides), xla), "1"),
                    os.path.join(base, str(version)))
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
