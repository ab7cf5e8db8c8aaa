"""Library search over TF Serving's gRPC API: a PredictionService whose one model answers top-k tensors.

Why TF Serving's API and not a proto of our own: any stock client (``PredictionServiceStub`` from
tensorflow-serving-api, in any language) can search with a plain ``PredictRequest``:

=====================  ========  ==========  ==========================================================
tensor                 dtype     shape       meaning
=====================  ========  ==========  ==========================================================
in  ``query``          float32   [Lq, D]     the query clip's features (or [1, Lq, D])
in  ``top_k``          int32     []          optional, default 5 (at most ``MAX_TOP_K``)
out ``video_id``       string    [K]         best first
out ``start_index``    int64     [K]         [start, end) in the source video's feature steps
out ``end_index``      int64     [K]
out ``start_seconds``  float32   [K]         NaN where the video's frame rate is unknown
out ``end_seconds``    float32   [K]
out ``score``          float32   [K]         the model's score (Eq. 20 value of the segment)
=====================  ========  ==========  ==========================================================

The model name is ``search`` (``--model-name``), the signature ``serving_default``. A query of
another feature dim, an empty or too long one, or an unknown input is INVALID_ARGUMENT; an
unknown model NOT_FOUND. The index is opened (and checked) once at start-up: a corrupt index
never starts serving. Searches run one at a time (the model call uses all cores anyway).
"""
from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Optional

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from vreloc_tf.errors import InputError

log = logging.getLogger("serving.search_service")

MODEL_NAME = "search"
SIGNATURE = "serving_default"
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
MAX_QUERY_LENGTH = 2048


class SearchService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict = search the index; see the module docstring for the tensors."""

    def __init__(self, index, relocalizer, embedder, model_name: str = MODEL_NAME):
        self.index, self.relocalizer, self.embedder, self.model_name = index, relocalizer, embedder, model_name
        self._lock = threading.Lock()

    def answer(self, request) -> "predict_pb2.PredictResponse":
        """The response, or (grpc.StatusCode, message) raised as a ValueError pair via _Refused."""
        import tensorflow as tf

        from vreloc_tf.search.search import search

        if request.model_spec.name != self.model_name:
            raise _Refused(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: model "
                           f"{request.model_spec.name!r} is not served (served: {self.model_name})")
        if request.model_spec.signature_name not in ("", SIGNATURE):
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION,
                           f'Serving signature key "{request.model_spec.signature_name}" not found.')
        unknown = sorted(set(request.inputs) - {"query", "top_k"})
        if unknown or "query" not in request.inputs:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                           f"inputs: expected 'query' [Lq, D] (and optionally 'top_k'), got {sorted(request.inputs)}")
        proto = request.inputs["query"]
        dims = [d.size for d in proto.tensor_shape.dim]
        if len(dims) == 3 and dims[0] == 1:
            dims = dims[1:]
        if len(dims) != 2 or not 1 <= dims[0] <= MAX_QUERY_LENGTH:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"query: expected shape [Lq, D] with 1 <= Lq <= "
                           f"{MAX_QUERY_LENGTH}, got {dims}")
        if dims[1] != self.index.feature_dim:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"query: {dims[1]}-d features but the index holds "
                           f"{self.index.feature_dim}-d features")
        try:
            query = tf.make_ndarray(proto).astype(np.float32).reshape(dims)
            top_k = int(tf.make_ndarray(request.inputs["top_k"])) if "top_k" in request.inputs else DEFAULT_TOP_K
        except (TypeError, ValueError) as exc:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"inputs: cannot decode ({exc})") from None
        if not 1 <= top_k <= MAX_TOP_K:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"top_k: expected 1..{MAX_TOP_K}, got {top_k}")
        try:
            with self._lock:
                hits = search(self.index, self.relocalizer, self.embedder, query, top_k=top_k,
                              rerank=max(top_k, 10))
        except InputError as exc:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        nan = float("nan")
        out = {
            "video_id": np.array([h.video_id.encode() for h in hits], dtype=object),
            "start_index": np.array([h.start_index for h in hits], np.int64),
            "end_index": np.array([h.end_index for h in hits], np.int64),
            "start_seconds": np.array([nan if h.start_seconds is None else h.start_seconds for h in hits], np.float32),
            "end_seconds": np.array([nan if h.end_seconds is None else h.end_seconds for h in hits], np.float32),
            "score": np.array([h.score for h in hits], np.float32),
        }
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model_name
        response.model_spec.signature_name = SIGNATURE
        for name, value in out.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value, shape=[len(hits)]))
        return response

    def Predict(self, request, context):
        try:
            return self.answer(request)
        except _Refused as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - answer INTERNAL, keep serving
            log.exception("search Predict failed")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


class _Refused(Exception):
    def __init__(self, code, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def start_search_server(index_dir: str, model: Optional[str] = None, port: int = 0, host: str = "127.0.0.1",
                        model_name: str = MODEL_NAME, max_workers: int = 4):
    """(grpc.Server started, bound port). The index and model are opened and checked first."""
    from vreloc_tf.search.search import open_search

    index, relocalizer, embedder = open_search(index_dir, model)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        SearchService(index, relocalizer, embedder, model_name), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise InputError(f"--port {port}: cannot bind {host}:{port} (in use?)")
    server.start()
    log.info("search: serving %s (%d videos) as model %r on %s:%d", index_dir, index.live_videos, model_name,
             host, bound)
    return server, bound
