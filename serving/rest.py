"""TF Serving's REST API (``--rest-port``): model status, metadata and predict, answered by the gRPC servicers.

Why through the servicers: a JSON request is turned into the same
``PredictRequest`` a gRPC client sends and answered by
:func:`serving.servicers.predict`, so both transports share one validation, one
set of limits and one set of status codes; the gRPC code of a refusal becomes
TF Serving's HTTP status (:data:`serving.status.HTTP_STATUS`) and the body
``{"error": "..."}``.

Paths (TF Serving's)::

    GET  /v1/models/NAME[/versions/N | /labels/L]            {"model_version_status": [...]}
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   {"model_spec": ..., "metadata": {"signature_def": ...}}
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"inputs": {...}} -> {"outputs": {...}}
                                                             {"instances": [...]} -> {"predictions": [...]}

Cost is bounded before anything is converted: the body may not exceed what the
largest legal request takes as JSON, and each input's nested-list shape is
checked against the limits before it becomes an array. Rows of ``instances``
may differ in length; they are zero-padded to the longest row, which the
lengths make harmless (the model reads ``query_length``/``reference_length``).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Tuple

import grpc
import numpy as np

from serving import signature as sig
from serving.status import ServingError, http_status
from serving.validation import InvalidRequest, RequestLimits, check_shapes

log = logging.getLogger("serving.rest")

_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<what>/metadata|:predict)?/?", re.IGNORECASE)
JSON_BYTES_PER_VALUE = 24  # "-0.123456789012345678, ": the longest a float32 prints as JSON, with separator
JSON_OVERHEAD_BYTES = 64 * 1024
DRAIN_LIMIT_BYTES = 256 << 20  # a refused body up to this size is read and dropped, so the client gets the answer


def max_body_bytes(limits: RequestLimits, feature_dim: int) -> int:
    """The largest JSON body a request at every limit can need: bodies above it are refused unread."""
    values = limits.max_batch_size * (limits.max_query_length + limits.max_reference_length) * feature_dim
    return JSON_BYTES_PER_VALUE * (values + 2 * limits.max_batch_size) + JSON_OVERHEAD_BYTES


def _nested_shape(value) -> List[int]:
    """The shape a nested list declares, read along its first elements (no copy, no conversion)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _to_array(name: str, value, dtype: str) -> np.ndarray:
    """A JSON value -> a NumPy array of the signature's dtype; InvalidRequest when ragged or of the wrong kind."""
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InvalidRequest(f"input '{name}': not a rectangular array ({exc})") from None
    if array.dtype == object:
        raise InvalidRequest(f"input '{name}': not a rectangular array of numbers")
    if array.size and array.dtype.kind not in ("i", "u", "f", "b"):
        raise InvalidRequest(f"input '{name}': expected numbers, got JSON {array.dtype.kind!r} values")
    if np.dtype(dtype).kind == "i" and array.size and array.dtype.kind == "f":
        raise InvalidRequest(f"input '{name}': expected integers ({dtype}), got fractional numbers")
    return array.astype(dtype, copy=False)


def arrays_from_json(body: dict, feature_dim: int, limits: RequestLimits) -> Tuple[Dict[str, np.ndarray], str, list]:
    """(arrays, format, row lengths) of a predict body; format 'columnar' (``inputs``) or 'row' (``instances``)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object with 'inputs' or 'instances'")
    if ("inputs" in body) == ("instances" in body):
        raise InvalidRequest("the request body must have exactly one of 'inputs' (columnar) and 'instances' (rows)")
    dtypes = {spec.name: spec.dtype for spec in sig.INPUTS}
    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            raise InvalidRequest(f"'inputs' must map the input names ({', '.join(sig.INPUT_NAMES)}) to arrays")
        check_shapes({n: _nested_shape(v) for n, v in inputs.items()}, feature_dim, limits)
        return {n: _to_array(n, v, dtypes.get(n, "float32")) for n, v in inputs.items()}, "columnar", []
    rows = body["instances"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise InvalidRequest("'instances' must be a non-empty list of objects, one per query/reference pair")
    names = set(rows[0])
    for i, row in enumerate(rows):
        if set(row) != names:
            raise InvalidRequest(f"instances[{i}] has inputs {sorted(row)}, instances[0] has {sorted(names)}")
    steps = {n: max(len(r[n]) if isinstance(r[n], list) else 0 for r in rows) for n in names}
    declared = {n: [len(rows)] + ([steps[n]] + _nested_shape(rows[0][n])[1:] if isinstance(rows[0][n], list) else [])
                for n in names}
    check_shapes(declared, feature_dim, limits)
    arrays, row_steps = {}, []
    for name in names:
        per_row = [_to_array(f"{name}' of instances[{i}]", row[name], dtypes.get(name, "float32"))
                   for i, row in enumerate(rows)]
        if per_row[0].ndim == 0:
            arrays[name] = np.stack(per_row)
            continue
        for i, a in enumerate(per_row):
            if a.ndim != per_row[0].ndim or a.shape[1:] != per_row[0].shape[1:]:
                raise InvalidRequest(f"input '{name}' of instances[{i}]: shape {list(a.shape)} does not stack "
                                     f"with instances[0]'s {list(per_row[0].shape)}")
        out = np.zeros((len(rows), steps[name]) + per_row[0].shape[1:], per_row[0].dtype)
        for i, a in enumerate(per_row):
            out[i, :len(a)] = a
        arrays[name] = out
        if name == sig.REFERENCE:
            row_steps = [len(a) for a in per_row]
    for i, row in enumerate(rows):  # a length may not reach into another row's padding
        for tensor, length in ((sig.QUERY, sig.QUERY_LENGTH), (sig.REFERENCE, sig.REFERENCE_LENGTH)):
            if tensor in row and length in row and isinstance(row[tensor], list) and isinstance(row[length], int) \
                    and row[length] > len(row[tensor]):
                raise InvalidRequest(f"input '{length}': length {row[length]} at row {i} is beyond '{tensor}', "
                                     f"which has {len(row[tensor])} steps in instances[{i}]")
    return arrays, "row", row_steps


def json_outputs(outputs: Dict[str, np.ndarray], fmt: str, row_steps: list) -> dict:
    """Outputs -> TF Serving's JSON: {"outputs": {name: value}} (columnar) or {"predictions": [row, ...]} (row)."""
    if fmt == "columnar":
        return {"outputs": {name: value.tolist() for name, value in outputs.items()}}
    rows = []
    for i in range(len(next(iter(outputs.values())))):
        row = {}
        for name, value in outputs.items():
            item = value[i]
            if name == sig.PROBABILITIES and row_steps:
                item = item[:row_steps[i]]  # the row's own reference steps, not the padding of the stack
            row[name] = item.tolist()
        rows.append(row)
    return {"predictions": rows}




class RestApi:
    """The REST endpoints over the served models: ``handle(method, path, body) -> (HTTP status, JSON object)``."""

    def __init__(self, models, timeout: float = sig.REST_TIMEOUT_SECONDS):
        self.models = models
        self.timeout = timeout
        self.abandon = threading.Event()  # set when the server stops: running predicts stop at the next chunk

    def handle(self, method: str, path: str, read_body: Callable[[int], bytes], body_length: int) -> Tuple[int, dict]:
        try:
            return 200, self._route(method, path.split("?", 1)[0], read_body, body_length)
        except ServingError as exc:
            return http_status(exc.code), {"error": exc.message}
        except InvalidRequest as exc:
            return http_status(grpc.StatusCode.INVALID_ARGUMENT), {"error": str(exc)}
        except _TooLarge as exc:
            return 413, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - answer 500, keep serving
            log.exception("REST %s %s failed", method, path)
            return http_status(grpc.StatusCode.INTERNAL), {"error": f"{type(exc).__name__}: {exc}"}

    def _route(self, method: str, path: str, read_body, body_length: int) -> dict:
        match = _PATH.fullmatch(path)
        if match and method == "GET" and match["what"] in (None, "/metadata"):
            return self.status(match) if match["what"] is None else self.metadata(match)
        if match and method == "POST" and match["what"] == ":predict":
            return self.predict(match, read_body, body_length)
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")

    @staticmethod
    def _spec(match):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            spec.version.value = int(match["version"])
        elif match["label"]:
            spec.version_label = match["label"]
        return spec

    def status(self, match) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        from serving.servicers import find_model, model_status

        spec = self._spec(match)
        if spec.version_label:  # GetModelStatus takes a version: resolve the label the way Predict does
            model = find_model(self.models, spec)
            servable = model.acquire(spec)
            model.release(servable)
            spec.version.value = servable.version
        response = model_status(self.models, get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)

    def metadata(self, match) -> dict:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        from serving.servicers import model_metadata

        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._spec(match),
                                                                 metadata_field=["signature_def"])
        response = model_metadata(self.models, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": json_format.MessageToDict(response.model_spec, always_print_fields_with_no_presence=True,
                                                        preserving_proto_field_name=True),
                "metadata": {"signature_def": json_format.MessageToDict(signature_map,
                                                                        preserving_proto_field_name=True)}}

    def predict(self, match, read_body, body_length: int) -> dict:
        from tensorflow_serving.apis import predict_pb2

        from serving.servicers import find_model, predict
        from serving.tensor_codec import fill_tensor_proto, packed_array

        deadline = time.monotonic() + self.timeout
        spec = self._spec(match)
        model = find_model(self.models, spec)
        servable = model.acquire(spec)  # which version answers: its feature dim bounds the body
        model.release(servable)
        limit = max_body_bytes(model.limits, servable.feature_dim)
        if body_length > limit:
            raise _TooLarge(f"request body of {body_length} bytes is above {limit}, the most a request within the "
                            f"server limits can need (raise --max-batch-size/--max-query-length/--max-reference-length)")
        try:
            body = json.loads(read_body(body_length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not valid JSON ({exc})") from None
        arrays, fmt, row_steps = arrays_from_json(body, servable.feature_dim, model.limits)
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.model_spec.signature_name = body.get("signature_name") or sig.SIGNATURE_NAME
        for name, array in arrays.items():
            fill_tensor_proto(request.inputs[name], array)
        try:
            response = predict(self.models, request,
                               lambda: time.monotonic() < deadline and not self.abandon.is_set())
        except ServingError as exc:
            if exc.code == grpc.StatusCode.CANCELLED and time.monotonic() >= deadline:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"the request took longer than {self.timeout:g} s (--rest-timeout)") from None
            raise
        outputs = {name: packed_array(proto) for name, proto in response.outputs.items()}
        return json_outputs(outputs, fmt, row_steps)


class _TooLarge(Exception):
    """A body larger than any request within the limits: refused before it is read (HTTP 413)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vreloc-serving"
    api: RestApi  # set on the subclass made by RestServer

    def _answer(self, method: str) -> None:
        started = time.perf_counter()
        length = self.headers.get("Content-Length")
        try:
            body_length = int(length) if length is not None else 0
        except ValueError:
            body_length = -1
        read = []

        def read_body(n: int) -> bytes:
            read.append(n)
            return self.rfile.read(n)

        if body_length < 0:
            status, answer = 400, {"error": f"bad Content-Length {length!r}"}
        else:
            status, answer = self.api.handle(method, self.path, read_body, body_length)
        if body_length > 0 and not read:  # refused before reading: drain the body (no copy kept) so the client
            if body_length <= DRAIN_LIMIT_BYTES:  # reads our answer, unless it is too large to be worth it
                for _ in range(0, body_length, 1 << 16):
                    self.rfile.read(min(1 << 16, body_length))
                    body_length -= 1 << 16
            else:
                self.close_connection = True
        payload = json.dumps(answer).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        log.debug("REST %s %s status=%d %.2f ms", method, self.path, status, 1e3 * (time.perf_counter() - started))

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    def log_message(self, fmt, *args):  # requests are logged at debug level by _answer
        pass


class RestServer:
    """An HTTP (or, with TLS files, HTTPS) server of :class:`RestApi` on its own threads."""

    def __init__(self, models, host: str, port: int, timeout: float = sig.REST_TIMEOUT_SECONDS, ssl_context=None):
        self.api = RestApi(models, timeout)
        handler = type("RestHandler", (_Handler,), {"api": self.api})
        self.httpd = ThreadingHTTPServer((host.strip("[]"), port), handler)
        self.httpd.daemon_threads = True
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="vreloc-rest", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Refuse new connections; requests being answered go on (until :meth:`abandon`)."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def abandon(self) -> None:
        """Stop the predicts still running at their next chunk (the grace period is over)."""
        self.api.abandon.set()
