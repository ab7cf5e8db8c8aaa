"""Library search as a servable of ``vreloc serve``: model ``search`` beside the re-localization model.

Why a servable and not a server of its own: search requests then get what model requests
get -- the same gRPC and REST ports, TLS, cost checks on what a request declares before
anything is allocated, deadlines, metrics and logs (serving/model_servable.py has the
interface). Any stock TF Serving client searches with a plain ``PredictRequest``:

=====================  ========  ==========  ==========================================================
tensor                 dtype     shape       meaning
=====================  ========  ==========  ==========================================================
in  ``query``          float32   [Lq, D]     the query clip's features (or [1, Lq, D]); Lq <= --max-query-length
in  ``top_k``          int32     []          optional, default 5, at most ``MAX_TOP_K`` (or [1])
out ``video_id``       string    [K]         best first
out ``start_index``    int64     [K]         [start, end) in the source video's feature steps
out ``end_index``      int64     [K]
out ``start_seconds``  float32   [K]         NaN where the video's frame rate is unknown
out ``end_seconds``    float32   [K]
out ``score``          float32   [K]         the re-localizer's score of the segment
=====================  ========  ==========  ==========================================================

The model name is ``search`` (``--search-model-name``), version 1, signature ``serving_default``.
The index is opened and checked once at start-up: a corrupt index never starts serving.
Searches run one at a time (one search already uses every core).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, List, Mapping, Optional

import grpc
import numpy as np

from serving import signature as sig
from serving.batching import Abandoned
from serving.status import ServingError
from serving.tensor_codec import check_value_count, declared_shape, decode_inputs, dtype_name_of
from serving.validation import InvalidRequest, RequestLimits
from vreloc_tf.contract import QUERY
from vreloc_tf.data.artifacts import Run
from vreloc_tf.errors import InputError
from vreloc_tf.finite import first_non_finite
from vreloc_tf.search.library import Index
from vreloc_tf.search.search import open_search, search

log = logging.getLogger("serving.search_servable")

MODEL_NAME = "search"
VERSION = 1
TOP_K = "top_k"  # beside QUERY (vreloc_tf.contract): the query clip's features
DEFAULT_TOP_K = 5
MAX_TOP_K = 100
INPUT_DTYPES = {QUERY: "float32", TOP_K: "int32"}
OUTPUT_DTYPES = {"video_id": "string", "start_index": "int64", "end_index": "int64", "start_seconds": "float32",
                 "end_seconds": "float32", "score": "float32"}


class SearchServable:
    """Search of one opened index with its re-localizer and embedder (``vreloc_tf.search.search``)."""

    batched = False

    def __init__(self, index, relocalizer, embedder, model_name: str = MODEL_NAME,
                 limits: RequestLimits = RequestLimits()):
        self.index, self.relocalizer, self.embedder = index, relocalizer, embedder
        self.model_name, self.version, self.limits = model_name, VERSION, limits
        self.feature_dim = int(index.feature_dim)
        self.signatures = {sig.SIGNATURE_NAME: None}
        self.signature_defs = {sig.SIGNATURE_NAME: _signature_def(self.feature_dim)}
        self.in_flight = 0
        self._lock = threading.Lock()

    # -- the servable interface --------------------------------------------------------
    def input_dtypes(self, signature_name: str) -> Dict[str, str]:
        return dict(INPUT_DTYPES)

    def check_shapes(self, signature_name: str, shapes: Mapping[str, List[int]]) -> None:
        """Names, ranks and sizes of a search request: refused before anything is allocated."""
        unknown = sorted(set(shapes) - set(INPUT_DTYPES))
        if unknown or QUERY not in shapes:
            raise InvalidRequest(f"inputs: expected '{QUERY}' [Lq, D] (and optionally '{TOP_K}' []), "
                                 f"got {sorted(shapes)}")
        dims = list(shapes[QUERY])
        if len(dims) == 3 and dims[0] == 1:
            dims = dims[1:]
        limit = self.limits.max_query_length
        if len(dims) != 2 or not 1 <= dims[0] <= limit:
            raise InvalidRequest(f"input '{QUERY}': expected shape [Lq, D] (or [1, Lq, D]) with 1 <= Lq <= {limit} "
                                 f"(--max-query-length), got {list(shapes[QUERY])}")
        if dims[1] != self.feature_dim:
            raise InvalidRequest(f"input '{QUERY}': {dims[1]}-d features but the index holds "
                                 f"{self.feature_dim}-d features")
        if TOP_K in shapes and list(shapes[TOP_K]) not in ([], [1]):
            raise InvalidRequest(f"input '{TOP_K}': expected a scalar (shape [] or [1]), got {list(shapes[TOP_K])}")

    def max_request_elements(self) -> int:
        return self.limits.max_query_length * self.feature_dim + 1

    def predict(self, signature_name: str, inputs: Mapping[str, "object"], output_filter: List[str],
                is_active: Callable[[], bool] = lambda: True,
                deadline: Optional[float] = None) -> Dict[str, np.ndarray]:
        """The top-k tensors; every declared shape and value count is checked before a value is read."""
        if signature_name not in self.signatures:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        shapes = {name: declared_shape(name, proto) for name, proto in inputs.items()}
        self.check_shapes(signature_name, shapes)
        for name, proto in inputs.items():
            got = dtype_name_of(proto.dtype)
            if got != INPUT_DTYPES[name]:
                raise InvalidRequest(f"input '{name}': dtype must be {INPUT_DTYPES[name]}, got {got}")
            check_value_count(name, proto, shapes[name])
        unknown = [n for n in output_filter if n not in OUTPUT_DTYPES]
        if unknown:
            raise InvalidRequest(f"output_filter: unknown output(s) {unknown}; the signature has "
                                 f"{', '.join(OUTPUT_DTYPES)}")
        arrays = decode_inputs(inputs)
        query = np.asarray(arrays[QUERY], np.float32).reshape(shapes[QUERY][-2:])
        where = first_non_finite(query)
        if where is not None:
            raise InvalidRequest(f"input '{QUERY}': NaN or Inf at step {where[0]}")
        top_k = int(arrays[TOP_K].reshape(())) if TOP_K in arrays else DEFAULT_TOP_K
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequest(f"input '{TOP_K}': expected 1..{MAX_TOP_K}, got {top_k}")
        outputs = self.search(query, top_k, is_active)
        return {name: outputs[name] for name in (output_filter or OUTPUT_DTYPES)}

    def search(self, query: np.ndarray, top_k: int, is_active: Callable[[], bool] = lambda: True) -> Dict[str, np.ndarray]:
        """Run one search (one at a time); the top-k tensors."""
        with self._lock:
            if not is_active():  # gave up while waiting for the search before it: do not start this one
                raise Abandoned()
            try:
                hits = search(self.index, self.relocalizer, self.embedder, query, top_k=top_k,
                              rerank=max(top_k, 10))
            except InputError as exc:
                raise InvalidRequest(str(exc)) from None
        nan = float("nan")
        return {
            "video_id": np.array([h.video_id.encode() for h in hits], dtype=object),
            "start_index": np.array([h.start_index for h in hits], np.int64),
            "end_index": np.array([h.end_index for h in hits], np.int64),
            "start_seconds": np.array([nan if h.start_seconds is None else h.start_seconds for h in hits], np.float32),
            "end_seconds": np.array([nan if h.end_seconds is None else h.end_seconds for h in hits], np.float32),
            "score": np.array([h.score for h in hits], np.float32),
        }

    def warm_up(self) -> int:
        """One search with a query of the index's own features, so the first request pays no tracing."""
        steps = min(16, self.limits.max_query_length)
        query = np.zeros((steps, self.feature_dim), np.float32)
        if self.index.live_pieces:
            feats = np.asarray(self.index.video(int(self.index.live_piece_numbers()[0])).features)
            query[:min(steps, len(feats))] = feats[:steps]
        self.search(query, 1)
        return 1

    def close(self) -> None:
        self.index = self.relocalizer = self.embedder = None


class SearchModel:
    """The one version of the search servable, behind the model manager's interface (acquire/release/status)."""

    def __init__(self, servable: SearchServable, index_dir: str):
        self.name = servable.model_name
        self.base_path = index_dir
        self.servable = servable
        self._lock = threading.Lock()

    @property
    def versions(self) -> List[int]:
        return [self.servable.version]

    def acquire(self, model_spec) -> SearchServable:
        if model_spec.HasField("version") and model_spec.version.value != self.servable.version:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {model_spec.version.value} of "
                               f"model {self.name} (loaded: [{self.servable.version}])")
        if model_spec.version_label:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {model_spec.version_label}")
        with self._lock:
            self.servable.in_flight += 1
        return self.servable

    def release(self, servable: SearchServable) -> None:
        with self._lock:
            servable.in_flight -= 1

    def in_flight(self) -> int:
        with self._lock:
            return self.servable.in_flight

    def status(self, version: Optional[int] = None):
        if version is not None and version != self.servable.version:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {self.name}")
        return [(self.servable.version, "AVAILABLE", "")]

    def close(self) -> None:
        self.servable.close()


def open_search_model(index_dir: str, run_dir: Optional[str] = None, model_name: str = MODEL_NAME,
                      limits: RequestLimits = RequestLimits()) -> SearchModel:
    """The index (checked on open) and its re-localizer, warmed up, as a servable model; ``index_dir`` and
    ``run_dir`` come from `vreloc serve --index/--search-model` and are opened here, once."""
    index, relocalizer, embedder = open_search(Index.open(index_dir), Run.open(run_dir) if run_dir else None)
    servable = SearchServable(index, relocalizer, embedder, model_name, limits)
    servable.warm_up()
    log.info("model %s: serving library search of %s (%d videos, %d-d features)", model_name, index_dir,
             index.live_videos, servable.feature_dim)
    return SearchModel(servable, index_dir)


def _signature_def(feature_dim: int):
    """The SignatureDef GetModelMetadata answers for search (what a SavedModel would declare)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    signature = meta_graph_pb2.SignatureDef(method_name=sig.METHOD_NAME)
    shapes = {QUERY: [-1, feature_dim], TOP_K: []}
    for name, dtype in INPUT_DTYPES.items():
        _tensor_info(signature.inputs[name], name, tf.as_dtype(dtype), shapes[name])
    for name, dtype in OUTPUT_DTYPES.items():
        _tensor_info(signature.outputs[name], name, tf.as_dtype(dtype), [-1])
    return signature


def _tensor_info(info, name: str, dtype, shape) -> None:
    info.name = f"{name}:0"
    info.dtype = dtype.as_datatype_enum
    for size in shape:
        info.tensor_shape.dim.add().size = size
