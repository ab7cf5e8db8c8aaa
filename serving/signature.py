"""The serving contract, defined once: signature names, dtypes, shapes, ports, limits.

Why a module of constants: the exporter writes these names, the server checks
requests against them, the client fills them, and the deployment-file test
compares the compose/Kubernetes/models.config files with them. Keeping them in
one place means a rename cannot silently break one of the four.

The tensor names themselves come from vreloc_tf/contract.py, where the model and the input
pipeline read them too. Nothing here imports TensorFlow, so the CLI and the deployment test stay light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from vreloc_tf.contract import (END, MAX_WINDOW, PROBABILITIES, QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH,
                                SCORE, START)

# -- SignatureDef ---------------------------------------------------------------
SIGNATURE_NAME = "serving_default"  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
METHOD_NAME = "tensorflow/serving/predict"  # tf.saved_model.PREDICT_METHOD_NAME
# NumPy dtype name -> (TensorProto DataType enum value, its name), tensorflow/core/framework/types.proto.
# Here, below serving.tensor_codec (which converts with them) and serving.validation, so that every
# serving module can read them without an import circle.
DTYPES = {"float32": (1, "DT_FLOAT"), "int32": (3, "DT_INT32")}


@dataclass(frozen=True)
class TensorSpec:
    """Name, NumPy dtype name and shape of one signature tensor (None = any size, "D" = the feature dim)."""

    name: str
    dtype: str  # numpy / tf dtype name: "float32", "int32"
    shape: Tuple[Optional[object], ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def datatype(self) -> str:
        """The TensorProto DataType enum name, as saved_model_cli prints it (DT_FLOAT, DT_INT32)."""
        return DTYPES[self.dtype][1]


# Inputs: batch B, query length Lq, reference length Lr, feature dim D (names: vreloc_tf.contract).
INPUTS = (
    TensorSpec(QUERY, "float32", (None, None, "D")),  # [B, Lq, D]
    TensorSpec(QUERY_LENGTH, "int32", (None,)),  # [B] valid steps of each query
    TensorSpec(REFERENCE, "float32", (None, None, "D")),  # [B, Lr, D]
    TensorSpec(REFERENCE_LENGTH, "int32", (None,)),  # [B] valid steps of each reference
)

# Outputs: per-step probabilities and the decoded segment [start, end) in feature indices.
OUTPUTS = (
    TensorSpec(PROBABILITIES, "float32", (None, None, 4)),  # [B, Lr, 4] softmax over (start, end, action, background)
    TensorSpec(START, "int32", (None,)),  # [B] first feature index of the segment
    TensorSpec(END, "int32", (None,)),  # [B] one past the last feature index (exclusive)
    TensorSpec(SCORE, "float32", (None,)),  # [B] decoding score of the segment
)

INPUT_NAMES = tuple(s.name for s in INPUTS)  # = vreloc_tf.contract.INPUT_NAMES
OUTPUT_NAMES = tuple(s.name for s in OUTPUTS)  # = vreloc_tf.contract.SIGNATURE_OUTPUT_NAMES


def output_spec(name: str) -> TensorSpec:
    return {s.name: s for s in OUTPUTS}[name]


# -- export layout: BASE/NAME/<version>/{saved_model.pb, variables/, assets.extra/} and its file names are
# defined once in vreloc_tf/data/versions.py (the library opens exports too); import them from there

# -- deployment ----------------------------------------------------------------
DEFAULT_MODEL_NAME = "vreloc"
GRPC_PORT = 8500  # TF Serving's --port
REST_PORT = 8501  # TF Serving's --rest_api_port
CONTAINER_MODEL_ROOT = "/models"  # the official image serves /models/<MODEL_NAME>
VERSION_LABELS = ("stable", "canary")


def container_base_path(model_name: str = DEFAULT_MODEL_NAME) -> str:
    return f"{CONTAINER_MODEL_ROOT}/{model_name}"


# -- request limits (server defaults; `vreloc serve --max-*` changes them) ---------
# Sized so that one request at every limit takes at most a few seconds and a fraction of
# a 2-core, 24 GB machine (serving/README.md, "Limits", has the measurements and how to raise them).
MAX_QUERY_LENGTH = 128  # features; the paper's queries are <= 32, so 4x headroom
MAX_REFERENCE_LENGTH = 1024  # features = 16,384 frames (~9 min at 30 fps, 16 frames/feature)
MAX_BATCH_SIZE = 16  # pairs per request, and per model call when batching
# gRPC receive limit: a request at every limit for D = 500 (16 x (128 + 1024) x 500 float32 = 37 MB) fits,
# and so does one with raised limits up to 256 MB; declared shapes are checked before any conversion.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

VERSION_SETTLE_SECONDS = 2.0  # a version folder loads once nothing in it changed for this long (model_manager)
REST_MAX_CONNECTIONS = 64  # REST connections served at once (one thread each); more are answered 503
REST_TIMEOUT_SECONDS = 30.0  # a REST predict stops after this long (TF Serving's --rest_api_timeout_in_ms)

# -- how requests run (serving/batching.py) --------------------------------------------
INTRA_OP_THREADS = 1  # threads one model call uses (vreloc serve; serving.server.set_tensorflow_threads says why)
BATCH_TIMEOUT_MICROS = 0  # wait for more requests once one is queued (0: batch what is already queued)
# A request with a deadline is not started on a shape not compiled yet when less than this (or the longest
# compile measured, if longer) is left: an XLA compile cannot be stopped once started (serving/batching.py).
MIN_COMPILE_SECONDS = 2.0
MAX_BATCH_STEPS = 4800  # padded pairs x Lr per model call (16 pairs at Lr 300): the unit between deadline checks
# Shapes a model call is padded to (an XLA signature compiles once per shape): the smallest that fits.
QUERY_BUCKETS = (8, 16, 32, 64, 128, 256, 512)
REFERENCE_BUCKETS = (64, 128, 192, MAX_WINDOW, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)  # the splits' window
