"""Export a trained run as one TF Serving SavedModel version: ``BASE/NAME/<version>/``.

Why this shape: it is exactly what ``tensorflow/serving`` loads (and what
serving/server.py loads) --

::

    BASE/NAME/<version>/saved_model.pb          signature serving_default, method tensorflow/serving/predict
                        variables/
                        assets.extra/tf_serving_warmup_requests   PredictionLog TFRecords, replayed at load
                        assets.extra/vreloc.json                  feature_dim, frames_per_feature, decode rule,
                                                                  the features' spec (backbone, weights, PCA)
                        assets.extra/pca.npz                      the training data's PCA (raw-video runs only;
                                                                  pca.hdf5 for ActivityNet's published PCA)

The signature takes padded batches (query [B, Lq, D], query_length [B],
reference [B, Lr, D], reference_length [B]) and returns the probabilities and
the decoded segment (start, end exclusive, score): decoding runs inside the
graph, so a client needs nothing of this package. The rule is the run's own
(``cfg.decode_rule``, limit ``cfg.decode.max_length(rule)``); ``decode="full"`` /
``"weak"`` / ``"feng"`` exports that rule instead. `vreloc export` runs
:func:`export_model` and gets an :class:`vreloc_tf.data.artifacts.Export` back.

The version appears atomically: it is written into a hidden ``.tmp-<version>-<uuid>``
folder beside the versions, then renamed to its integer name, so a server
polling the base path never sees a half-written version.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Optional

import numpy as np

from serving import signature as sig
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, INT64_MAX, TEMP_PREFIX, WARMUP_FILE, existing_versions, next_version
from vreloc_tf.data.artifacts import Export, ExportInfo, Run
from vreloc_tf.contract import DECODE_RULES, MAX_GROUNDTRUTH, MAX_WINDOW
from vreloc_tf.errors import InputError

# (B, Lq, Lr): a typical pair (a 16-feature query in a full window), and a small batch of the longest queries
WARMUP_SHAPES = ((1, MAX_GROUNDTRUTH // 2, MAX_WINDOW), (4, MAX_GROUNDTRUTH, MAX_WINDOW))
CONFIG_LIMIT = -1  # max_length: the run config's limit for the chosen rule
PCA_ASSET = "pca.npz"  # in assets.extra/: the training data's PCA, which `vreloc locate` applies to new videos


def pca_asset_name(pca_file: str) -> str:
    """``pca`` + the PCA file's own extension (``pca.npz``, or ``pca.hdf5`` for ActivityNet's)."""
    return "pca" + (os.path.splitext(pca_file)[1] or ".npz")


def serving_module(model, feature_dim: int, decode_mode: str, max_length: Optional[int], jit_compile: bool = True):
    """A tf.Module holding the Keras model and the ``serving_default`` tf.function.

    ``jit_compile``: the model call is compiled with XLA (2-3x faster on a CPU,
    measured in serving/README.md); the decoding's loops stay in the graph. XLA
    compiles once per input shape, and the real TF Serving needs
    ``--xla_cpu_compilation_enabled=true`` to run it (serving/docker-compose.yaml).
    """
    import tensorflow as tf

    # heavy: TensorFlow (keras.ops), loaded when a model is exported, not by vreloc export --help
    from vreloc_tf.model.decoding import decode

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__(name="vreloc_serving")
            self.model = model

        @tf.function(jit_compile=jit_compile)
        def probabilities(self, query, query_length, reference, reference_length):
            outputs = self.model({sig.QUERY: query, sig.QUERY_LENGTH: query_length,
                                  sig.REFERENCE: reference, sig.REFERENCE_LENGTH: reference_length}, training=False)
            return tf.cast(outputs[sig.PROBABILITIES], tf.float32)

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, feature_dim], tf.float32, name=sig.QUERY),
            tf.TensorSpec([None], tf.int32, name=sig.QUERY_LENGTH),
            tf.TensorSpec([None, None, feature_dim], tf.float32, name=sig.REFERENCE),
            tf.TensorSpec([None], tf.int32, name=sig.REFERENCE_LENGTH),
        ])
        def serve(self, query, query_length, reference, reference_length):
            probabilities = self.probabilities(query, query_length, reference, reference_length)
            start, end, score = decode(probabilities, reference_length, decode_mode, max_length)
            return {sig.PROBABILITIES: probabilities, sig.START: tf.cast(start, tf.int32),
                    sig.END: tf.cast(end, tf.int32), sig.SCORE: tf.cast(score, tf.float32)}

    return ServingModule()


def warmup_requests(model_name: str, feature_dim: int, seed: int = 0):
    """PredictRequests TF Serving replays at load, so the first real request is not slow."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    rng = np.random.default_rng(seed)
    requests = []
    for batch, lq, lr in WARMUP_SHAPES:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = sig.SIGNATURE_NAME
        arrays = {
            sig.QUERY: rng.standard_normal((batch, lq, feature_dim)).astype(np.float32),
            sig.QUERY_LENGTH: np.full((batch,), lq, np.int32),
            sig.REFERENCE: rng.standard_normal((batch, lr, feature_dim)).astype(np.float32),
            sig.REFERENCE_LENGTH: np.full((batch,), lr, np.int32),
        }
        for name, value in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        requests.append(request)
    return requests


def write_warmup_file(path: str, requests) -> None:
    """TF Serving's warm-up format: a TFRecord file of PredictionLog{predict_log{request}}."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(entry.SerializeToString())


def export_model(run: Run, out: str, version: Optional[int] = None, decode: Optional[str] = None,
                 max_length: Optional[int] = CONFIG_LIMIT, model=None, jit_compile: bool = True) -> Export:
    """Export ``run`` (opened by the caller) as version ``version`` (default: next free) of model folder
    ``out`` (BASE/NAME); returns the :class:`Export`, its :class:`ExportInfo` included.

    ``decode``: 'full' | 'weak' | 'feng' (default: the run's own rule); ``max_length``:
    the rule's segment-length limit (default CONFIG_LIMIT = the config's limit for that
    rule; None = unlimited). ``model``: an already loaded Keras model of this run (else
    loaded from the run). ``jit_compile``: see :func:`serving_module`.
    Raises FileExistsError if the version exists.
    """
    import tensorflow as tf

    cfg, manifest = run.config, run.manifest
    if model is None:
        model = run.load_model()
    decode = decode or cfg.decode_rule
    if decode not in DECODE_RULES:
        raise InputError(f"--decode must be one of {', '.join(DECODE_RULES)}, got {decode!r}")
    if max_length == CONFIG_LIMIT:
        max_length = cfg.decode.max_length(decode)
    feature_dim = int(manifest.feature_dim)
    model_dim = model.input[sig.QUERY].shape[-1] if isinstance(model.input, dict) else None
    if model_dim is not None and int(model_dim) != feature_dim:
        raise InputError(f"{run.path}: run.json says feature_dim {feature_dim} but the model takes {model_dim}")

    out = os.path.normpath(out)
    model_name = os.path.basename(out)
    os.makedirs(out, exist_ok=True)
    if version is None:
        version = next_version(out)
    elif not 1 <= version <= INT64_MAX:
        raise InputError(f"--version must be a positive integer up to {INT64_MAX} (int64), got {version}")
    final = os.path.join(out, str(version))
    taken = existing_versions(out)  # by number: version 7 is taken by a folder 007 too
    if version in taken or os.path.exists(final):
        raise FileExistsError(f"{final}: version {version} of {model_name} was already exported "
                              f"(versions: {taken}); pick another --version or omit it")

    tmp = os.path.join(out, f"{TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        module = serving_module(model, feature_dim, decode, max_length, jit_compile)
        tf.saved_model.save(module, tmp, signatures={sig.SIGNATURE_NAME: module.serve})
        extra = os.path.join(tmp, ASSETS_EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        write_warmup_file(os.path.join(extra, WARMUP_FILE), warmup_requests(model_name, feature_dim))
        info = ExportInfo(
            model_name=model_name, version=version, signature_name=sig.SIGNATURE_NAME, feature_dim=feature_dim,
            frames_per_feature=manifest.frames_per_feature,
            fps=manifest.extra.get("fps"),  # None: per video; pass --fps to vreloc query
            supervision=cfg.supervision, decode=decode, decode_max_length=max_length, jit_compile=jit_compile,
            max_window=cfg.data.max_window,  # the reference window `vreloc locate` uses with this model
            config_digest=cfg.digest(), run_dir=run.path, best_step=manifest.best_step,
            code_version=manifest.code_version, exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        asset = None
        if manifest.pca_file:
            # The PCA of the training features travels with the model, so `vreloc locate` can
            # turn a new video's backbone features into the model's input space.
            asset = pca_asset_name(manifest.pca_file)
            shutil.copyfile(manifest.pca_file, os.path.join(extra, asset))
            info.pca = asset
        spec = run.feature_spec
        if spec is not None:  # what made the training features; the PCA path relative to assets.extra/
            info.features = spec.with_pca_path(asset if spec.pca_file else None).to_json()
        info.write(tmp)
        try:
            os.rename(tmp, final)  # atomic; fails if another exporter took this version meanwhile
        except OSError as exc:
            raise FileExistsError(f"{final}: could not publish version {version} ({exc}); "
                                  f"another export may have taken it") from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return Export(base_path=out, model_name=model_name, version=version, path=final, info=info)
