"""One loaded version of an exported re-localization model: the *servable* the server's transports call.

Why a servable interface: the server serves two kinds of thing -- versions of an
exported SavedModel (this module) and library search over an index
(serving/search_servable.py) -- through the same gRPC and REST front ends, the
same cost checks, deadlines and metrics. Both implement:

``model_name``, ``version``, ``signatures`` (names), ``signature_defs`` (protos, for GetModelMetadata),
``in_flight`` (a count the model manager keeps), ``batched`` (every input has a leading batch axis, so
REST's row format applies) and

- ``input_dtypes(signature_name) -> {input name: NumPy dtype name}`` -- how REST converts JSON;
- ``check_shapes(signature_name, shapes)`` -- the declared shapes against the signature and the
  limits, before anything is allocated (raises :class:`~serving.validation.InvalidRequest`);
- ``max_request_elements()`` -- scalar values in the largest legal request (bounds a REST body);
- ``predict(signature_name, inputs, output_filter, is_active, deadline) -> {name: ndarray}`` --
  TensorProto inputs in, NumPy outputs out: checks what the request declares, then decodes,
  validates and runs it;
- ``warm_up() -> int`` and ``close()``.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Dict, List, Mapping, Optional

from serving import signature as sig
from serving.batching import BatchingOptions, Executor, allowed_batch_sizes
from serving.status import ServingError
from serving.tensor_codec import check_declared, decode_inputs
from serving.validation import InvalidRequest, RequestLimits, check_shapes, validate_inputs
from vreloc_tf.data.artifacts import ExportInfo
from vreloc_tf.errors import InputError
from vreloc_tf.data.tfrecord import iter_records
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, SAVED_MODEL_FILE, WARMUP_FILE

log = logging.getLogger("serving.model_servable")
_NO_LIMITS = RequestLimits(2**31 - 1, 2**31 - 1, 2**31 - 1)


class LoadedVersion:
    """One SavedModel version in memory: its signatures, how its requests run, and an in-flight count."""

    batched = True

    def __init__(self, model_name: str, version: int, path: str, batching: BatchingOptions = BatchingOptions(),
                 limits: RequestLimits = RequestLimits()):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self.limits = limits
        self._saved = tf.saved_model.load(path)
        self.signatures = dict(self._saved.signatures)
        if sig.SIGNATURE_NAME not in self.signatures:
            raise InputError(f"{path}: no '{sig.SIGNATURE_NAME}' signature (found {sorted(self.signatures)})")
        # The SignatureDefs as written (method name included), for GetModelMetadata.
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as fh:
            saved_model.ParseFromString(fh.read())
        meta_graph = saved_model.meta_graphs[0]
        self.signature_defs = {key: value for key, value in meta_graph.signature_def.items() if not key.startswith("__")}
        # An XLA function compiles once per input shape: pad calls to the bucket shapes to bound them.
        self.xla = any(f.attr["_XlaMustCompile"].b for f in meta_graph.graph_def.library.function)
        query_spec = self.signatures[sig.SIGNATURE_NAME].structured_input_signature[1][sig.QUERY]
        self.feature_dim = int(query_spec.shape[-1])
        info = ExportInfo.read(path)  # assets.extra/vreloc.json, if the export has one
        self.metadata = info.to_json() if info is not None else {}
        self.batching = batching
        self.executor = Executor(lambda arrays: self._call(sig.SIGNATURE_NAME, arrays), self.batching,
                                 pad_to_buckets=self.xla, name=f"{model_name}-v{version}")
        self.in_flight = 0
        self.loaded_at = time.time()

    # -- the servable interface --------------------------------------------------------
    def input_dtypes(self, signature_name: str) -> Dict[str, str]:
        return {spec.name: spec.dtype for spec in sig.INPUTS}

    def check_shapes(self, signature_name: str, shapes: Mapping[str, List[int]]) -> None:
        check_shapes(shapes, self.feature_dim, self.limits)

    def max_request_elements(self) -> int:
        limits = self.limits
        return limits.max_batch_size * ((limits.max_query_length + limits.max_reference_length) * self.feature_dim + 2)

    def predict(self, signature_name: str, inputs: Mapping[str, "object"], output_filter: List[str],
                is_active: Callable[[], bool] = lambda: True,
                deadline: Optional[float] = None) -> Dict[str, "object"]:
        """Outputs of one PredictRequest's inputs: cost checked on what is declared, then decoded and run."""
        if signature_name not in self.signatures:
            raise ServingError(_failed_precondition(), f'Serving signature key "{signature_name}" not found.')
        check_declared(inputs, self.feature_dim, self.limits)  # cost first, nothing converted yet
        arrays = decode_inputs(inputs)
        validate_inputs(arrays, self.feature_dim, self.limits)
        wanted = list(output_filter) or list(sig.OUTPUT_NAMES)
        unknown = [n for n in wanted if n not in sig.OUTPUT_NAMES]
        if unknown:
            raise InvalidRequest(f"output_filter: unknown output(s) {unknown}; "
                                 f"the signature has {', '.join(sig.OUTPUT_NAMES)}")
        outputs = self.run(signature_name, arrays, is_active, deadline)
        return {name: outputs[name] for name in wanted}

    # -- running ------------------------------------------------------------------------
    def _call(self, signature_name: str, arrays: Dict[str, "object"]) -> Dict[str, "object"]:
        import tensorflow as tf

        outputs = self.signatures[signature_name](**{name: tf.constant(value) for name, value in arrays.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def run(self, signature_name: str, arrays: Dict[str, "object"],
            is_active: Callable[[], bool] = lambda: True, deadline: Optional[float] = None) -> Dict[str, "object"]:
        """Call one signature on validated NumPy inputs; NumPy outputs (serving_default through the executor)."""
        if signature_name == sig.SIGNATURE_NAME:
            return self.executor.run(arrays, is_active, deadline)
        return self._call(signature_name, arrays)

    def warm_up(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests, as TF Serving does at load; returns the count.

        They run the way requests run (padded to the bucket shapes), so an XLA
        signature is compiled for them before the version takes traffic -- at every
        batch size a model call may have (serving/batching.py), so that no request
        pays a compile for a shape the warm-up file covers. The exporter's own
        requests are checked against the signature but not against the
        client-facing size limits, which a server may set below the warm-up shapes.
        """
        import numpy as np
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, ASSETS_EXTRA_DIR, WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for _, record in iter_records(path):
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            request = entry.predict_log.request
            arrays = decode_inputs(request.inputs)
            validate_inputs(arrays, self.feature_dim, _NO_LIMITS)
            signature_name = request.model_spec.signature_name or sig.SIGNATURE_NAME
            self.run(signature_name, arrays)
            count += 1
            if not (self.xla and signature_name == sig.SIGNATURE_NAME):
                continue
            for size in allowed_batch_sizes(self.batching.max_batch_size):  # every batch a call may have
                rows = np.arange(size) % len(arrays[sig.QUERY_LENGTH])
                self.executor.compile({name: value[rows] for name, value in arrays.items()})
        return count

    def close(self) -> None:
        """Stop this version's batch thread and drop its graphs (it is no longer served and no request holds it)."""
        self.executor.close()
        self.signatures = {}
        self._saved = None


def _failed_precondition():
    import grpc

    return grpc.StatusCode.FAILED_PRECONDITION
