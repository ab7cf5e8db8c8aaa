"""Export a trained run as one TF Serving SavedModel version: ``BASE/NAME/<version>/``.

Why this shape: it is exactly what ``tensorflow/serving`` loads (and what
serving/server.py loads) --

::

    BASE/NAME/<version>/saved_model.pb          signature serving_default, method tensorflow/serving/predict
                        variables/
                        assets.extra/tf_serving_warmup_requests   PredictionLog TFRecords, replayed at load
                        assets.extra/vreloc.json                  feature_dim, frames_per_feature, decode rule
                        assets.extra/pca.npz                      the training data's PCA (raw-video runs only)

The signature takes padded batches (query [B, Lq, D], query_length [B],
reference [B, Lr, D], reference_length [B]) and returns the probabilities and
the decoded segment (start, end exclusive, score): decoding runs inside the
graph, so a client needs nothing of this package. The rule is the one of the
run's training mode (``cfg.supervision``, limit ``cfg.decode_max_length``);
``--decode weak`` / ``--decode full`` exports the other rule instead.

The version appears atomically: it is written into a hidden ``.tmp-<version>-<uuid>``
folder beside the versions, then renamed to its integer name, so a server
polling the base path never sees a half-written version.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import numpy as np

from serving import signature as sig
from serving.versions import existing_versions, next_version

WARMUP_SHAPES = ((1, 16, 300), (4, 32, 300))  # (B, Lq, Lr): the paper's typical pair, and a small batch


@dataclass(frozen=True)
class ExportResult:
    path: str  # BASE/NAME/<version>
    version: int
    model_name: str


def decode_limit(cfg, mode: str) -> Optional[int]:
    """The segment-length limit of decoding rule ``mode`` in this config."""
    return cfg.decode.full_max_length if mode == "full" else cfg.decode.weak_max_length


def serving_module(model, feature_dim: int, decode_mode: str, max_length: Optional[int], jit_compile: bool = True):
    """A tf.Module holding the Keras model and the ``serving_default`` tf.function.

    ``jit_compile``: the model call is compiled with XLA (2-3x faster on a CPU,
    measured in serving/README.md); the decoding's loops stay in the graph. XLA
    compiles once per input shape, and the real TF Serving needs
    ``--xla_cpu_compilation_enabled=true`` to run it (serving/docker-compose.yaml).
    """
    import tensorflow as tf

    from vreloc_tf.decoding import decode

    class ServingModule(tf.Module):
        def __init__(self):
            super().__init__(name="vreloc_serving")
            self.model = model

        @tf.function(jit_compile=jit_compile)
        def probabilities(self, query, query_length, reference, reference_length):
            outputs = self.model({sig.QUERY: query, sig.QUERY_LENGTH: query_length,
                                  sig.REFERENCE: reference, sig.REFERENCE_LENGTH: reference_length}, training=False)
            return tf.cast(outputs["probabilities"], tf.float32)

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


def export_model(run_dir: str, out: str, version: Optional[int] = None, decode: Optional[str] = None,
                 max_length: Optional[int] = -1, model=None, jit_compile: bool = True) -> ExportResult:
    """Export run ``run_dir`` as version ``version`` (default: next free) of model folder ``out`` (BASE/NAME).

    ``decode``: 'full' | 'weak' (default: the run's supervision); ``max_length``:
    the rule's segment-length limit (default -1 = the config's limit for that rule;
    None = unlimited). ``model``: an already loaded Keras model of this run (else
    loaded from ``run_dir``). ``jit_compile``: see :func:`serving_module`.
    Raises FileExistsError if the version exists.
    """
    import tensorflow as tf

    from vreloc_tf.run_dir import load_run, load_run_config, read_run_manifest

    if model is None:
        model, cfg, manifest = load_run(run_dir)
    else:
        cfg, manifest = load_run_config(run_dir), read_run_manifest(run_dir)
    decode = decode or cfg.supervision
    if decode not in ("full", "weak"):
        raise ValueError(f"--decode must be 'full' or 'weak', got {decode!r}")
    if max_length == -1:
        max_length = decode_limit(cfg, decode)
    feature_dim = int(manifest.feature_dim)
    model_dim = model.input[sig.QUERY].shape[-1] if isinstance(model.input, dict) else None
    if model_dim is not None and int(model_dim) != feature_dim:
        raise ValueError(f"{run_dir}: run.json says feature_dim {feature_dim} but the model takes {model_dim}")

    out = os.path.normpath(out)
    model_name = os.path.basename(out)
    os.makedirs(out, exist_ok=True)
    if version is None:
        version = next_version(out)
    elif version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    final = os.path.join(out, str(version))
    if os.path.exists(final):
        raise FileExistsError(f"{final} exists: version {version} of {model_name} was already exported "
                              f"(versions: {existing_versions(out)}); pick another --version or omit it")

    tmp = os.path.join(out, f"{sig.TEMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        module = serving_module(model, feature_dim, decode, max_length, jit_compile)
        tf.saved_model.save(module, tmp, signatures={sig.SIGNATURE_NAME: module.serve})
        extra = os.path.join(tmp, sig.ASSETS_EXTRA_DIR)
        os.makedirs(extra, exist_ok=True)
        write_warmup_file(os.path.join(extra, sig.WARMUP_FILE), warmup_requests(model_name, feature_dim))
        info = {
            "model_name": model_name,
            "version": version,
            "signature_name": sig.SIGNATURE_NAME,
            "feature_dim": feature_dim,
            "frames_per_feature": manifest.frames_per_feature,
            "fps": manifest.extra.get("fps"),  # None: per video; pass --fps to vreloc query
            "supervision": cfg.supervision,
            "decode": decode,
            "decode_max_length": max_length,
            "jit_compile": jit_compile,
            "config_digest": cfg.digest(),
            "run_dir": os.path.abspath(run_dir),
            "best_step": manifest.best_step,
            "code_version": manifest.code_version,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if manifest.pca_file:
            # The PCA of the training features travels with the model, so `vreloc locate` can
            # turn a new video's fc7 features into the model's input space.
            shutil.copyfile(manifest.pca_file, os.path.join(extra, "pca.npz"))
            info["pca"] = "pca.npz"
        with open(os.path.join(extra, sig.METADATA_FILE), "w") as fh:
            json.dump(info, fh, indent=2)
        try:
            os.rename(tmp, final)  # atomic; fails if another exporter took this version meanwhile
        except OSError as exc:
            raise FileExistsError(f"{final}: could not publish version {version} ({exc}); "
                                  f"another export may have taken it") from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(path=final, version=version, model_name=model_name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="training run folder (vreloc train --out)")
    parser.add_argument("--out", required=True, metavar="BASE/NAME",
                        help="model folder; the version goes to BASE/NAME/<version>/ (NAME = the served model name)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    parser.add_argument("--decode", choices=("full", "weak"), default=None,
                        help="decoding rule in the graph (default: the run's training mode)")
    parser.add_argument("--max-length", default="config", metavar="N|none",
                        help="segment-length limit of the rule (default: the run config's limit for that rule)")


def main(args: argparse.Namespace) -> int:
    if args.max_length == "config":
        max_length = -1
    elif args.max_length.lower() == "none":
        max_length = None
    elif args.max_length.isdigit() and int(args.max_length) > 0:
        max_length = int(args.max_length)
    else:
        print(f"error: --max-length must be a positive integer or 'none', got {args.max_length!r}", file=sys.stderr)
        return 2
    try:
        result = export_model(args.model, args.out, args.version, args.decode, max_length)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {result.model_name} version {result.version} to {result.path}")
    return 0
