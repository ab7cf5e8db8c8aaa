"""TF Serving's REST API (``--rest-port``): model status, metadata, predict and metrics, answered by the servicers.

Why through the servicers: a JSON request is turned into the same
``PredictRequest`` a gRPC client sends and answered by
:func:`serving.servicers.predict`, so both transports share one validation, one
set of limits and one set of status codes; the gRPC code of a refusal becomes
TF Serving's HTTP status (:data:`serving.status.HTTP_STATUS`) and the body
``{"error": "..."}``. The API is generic over servables (serving/model_servable.py
has the interface): dtypes, shapes and the body bound come from the servable asked
for, so model versions and library search share it.

Paths (TF Serving's)::

    GET  /v1/models/NAME[/versions/N | /labels/L]            {"model_version_status": [...]}
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   {"model_spec": ..., "metadata": {"signature_def": ...}}
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"inputs": {...}} -> {"outputs": {...}}
                                                             {"instances": [...]} -> {"predictions": [...]}
    GET  METRICS_PATH (when given, e.g. /monitoring/prometheus/metrics)   Prometheus text

Why so many bounds -- REST must be as hard to knock over as gRPC, whose library
bounds message sizes and connections for us:

* a body above what the largest legal request needs as JSON
  (``JSON_BYTES_PER_VALUE * servable.max_request_elements() + JSON_OVERHEAD_BYTES``)
  is refused unread (413);
* the body is scanned chunk by chunk as it arrives (serving/json_limits.py) and
  refused (400, naming the bound) once it nests deeper or holds more values,
  lists, objects or strings than a legal request -- before ``json.loads``
  builds anything, so a body of empty objects or one nested a million deep
  costs neither memory nor a ``RecursionError``;
* integers are range-checked into the signature's dtype (2**32 + 3 is refused,
  never wrapped to 3); booleans are not numbers; ``signature_name`` must be a
  string; a URL version must fit int64 (TF Serving's "Failed to convert
  version" 400);
* memory: bodies being read or parsed at once share a byte budget
  (``body_budget_bytes``, default twice the largest legal body of the models
  asked so far), and at most ``parse_slots`` bodies are parsed at once
  (``json.loads`` holds the GIL, so more would not be faster); a request that
  cannot get its share before its deadline is answered 503;
* time: every connection has a socket timeout of ``timeout`` (``--rest-timeout``)
  and a watchdog closes one that has not finished its TLS handshake, its
  request headers or its body within ``timeout`` (or that sits idle that long
  between requests); a request's body, budget wait, parse and predict share one
  deadline, ``timeout`` after its headers arrived;
* connections: at most ``max_connections`` at once, each on its own thread.
  Beyond that a new connection is answered 503 and closed by the accepting
  thread without reading it (over TLS it is closed unanswered, since answering
  would need a handshake on the accepting thread).

Every refusal that is the client's fault is a 4xx (or 503) with no traceback in
the log; only a fault of the server logs one (500).

JSON output: float32 outputs print as JSON numbers, and NaN/Inf as the tokens
``NaN``/``Infinity``/``-Infinity`` -- what ``json.dumps`` writes and what TF
Serving writes too (RapidJSON with its NaN/Inf flag), although they are not
strict JSON (Python's ``json`` reads them; ``jq`` does not). DT_STRING outputs
print as UTF-8 text, or as ``{"b64": "..."}`` for an output whose name ends in
``_bytes`` or a value that is not UTF-8, as TF Serving writes them.

Rows of ``instances`` (only for a servable whose inputs all have a batch axis,
``servable.batched``) may differ in length; they are zero-padded to the longest
row, which the lengths make harmless (the model reads
``query_length``/``reference_length``).
"""
from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple

import grpc
import numpy as np

from serving import signature as sig
from serving.json_limits import JsonLimits, JsonScanner, JsonTooComplex
from serving.status import ServingError, http_status
from serving.validation import InvalidRequest

log = logging.getLogger("serving.rest")

_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<what>/metadata|:predict)?/?", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(r"\s*[0-9]+\s*")
JSON_BYTES_PER_VALUE = 24  # "-0.123456789012345678, ": the longest a float32 prints as JSON, with separator
JSON_OVERHEAD_BYTES = 64 * 1024
DRAIN_LIMIT_BYTES = 256 << 20  # a refused body up to this size is read and dropped, so the client gets the answer
READ_CHUNK_BYTES = 1 << 18  # a body is read (and scanned) in pieces of at most this size
MAX_CONNECTIONS = 64  # connections served at once (one thread each); more are answered 503
PARSE_SLOTS = 2  # bodies parsed (json.loads and conversion) at once
BODY_BUDGET_FACTOR = 2  # default body budget: this many times the largest legal body
WATCHDOG_BACKSTOP_SECONDS = 1.0  # past a body's deadline, before the watchdog closes a connection that missed it
FALLBACK_RANK = 8  # an input of unknown rank: the nesting allowed for it
INT64_MAX = 2**63 - 1
JSON = "application/json"


def max_body_bytes(servable) -> int:
    """The largest JSON body a request within the servable's limits can need: bodies above it are refused unread."""
    return JSON_BYTES_PER_VALUE * servable.max_request_elements() + JSON_OVERHEAD_BYTES


def json_limits(servable) -> JsonLimits:
    """What the JSON of a legal request to ``servable`` can hold, for serving/json_limits.py's scan.

    Values: every element of every input, plus the separators of the keys.
    Lists: a legal request needs at most one per value plus one per tensor (an
    innermost list holds at least one value). Objects: the body and ``inputs``,
    or the body and one per row -- a row holds every input, so there are at most
    ``elements // inputs`` rows. Depth: the highest input rank plus the body, the
    ``inputs``/``instances`` level and one to spare (search also takes [1, Lq, D]).
    """
    elements = servable.max_request_elements()
    ranks, inputs = [], 1
    defs = getattr(servable, "signature_defs", {}) or {}
    for name in servable.signatures:
        inputs = max(inputs, len(servable.input_dtypes(name)))
        signature_def = defs.get(name)
        if signature_def is None:
            ranks.append(FALLBACK_RANK)
            continue
        for info in signature_def.inputs.values():
            shape = info.tensor_shape
            ranks.append(FALLBACK_RANK if shape.unknown_rank else len(shape.dim))
    rows = elements // inputs if servable.batched else 0
    return JsonLimits(max_depth=max(ranks, default=FALLBACK_RANK) + 3,
                      max_values=elements + inputs * (rows + 1) + 16,
                      max_lists=elements + rows + 16,
                      max_objects=2 + rows,
                      max_strings=8 + inputs * (rows + 1))


def _nested_shape(value) -> List[int]:
    """The shape a nested list declares, read along its first elements (no copy, no conversion)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _first(mask: np.ndarray) -> str:
    """The position of the first True of ``mask``, as text ('' for a scalar)."""
    if mask.ndim == 0:
        return ""
    return " at " + str(list(int(i) for i in np.argwhere(mask)[0]))


def _to_array(name: str, value, dtype: str) -> np.ndarray:
    """A JSON value -> a NumPy array of the signature's dtype; InvalidRequest when it does not fit exactly.

    Integers are range-checked into an integer dtype (never wrapped); fractions are
    not integers; booleans, strings and nulls are not numbers; finite numbers beyond
    float32's range do not become Inf.
    """
    target = np.dtype(dtype)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(f"input '{name}': not a rectangular array ({exc})") from None
    if array.dtype == object:
        flat = array.ravel()
        if flat.size and all(type(v) is int for v in flat):  # integers beyond int64/uint64
            if target.kind in "iu":
                info = np.iinfo(target)
                raise InvalidRequest(f"input '{name}': integer {flat[0]} is outside the range of {target.name} "
                                     f"[{info.min}, {info.max}]")
            try:
                array = array.astype(np.float64)
            except OverflowError:
                raise InvalidRequest(f"input '{name}': integer {flat[0]} is outside the range of {target.name}") \
                    from None
        else:
            raise InvalidRequest(f"input '{name}': not a rectangular array of numbers")
    kind = array.dtype.kind
    if array.size and kind == "b":
        raise InvalidRequest(f"input '{name}': expected {target.name} numbers, got true/false (booleans are not "
                             f"numbers)")
    if array.size and kind not in ("i", "u", "f"):
        raise InvalidRequest(f"input '{name}': expected {target.name} numbers, got JSON "
                             f"{'strings' if kind in 'US' else repr(kind) + ' values'}")
    if target.kind in "iu":
        if array.size and kind == "f":
            raise InvalidRequest(f"input '{name}': expected integers ({target.name}), got fractional numbers")
        if array.size:
            info = np.iinfo(target)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                bad = (array < info.min) | (array > info.max)
                raise InvalidRequest(f"input '{name}': integer {array[bad].flat[0]}{_first(bad)} is outside the "
                                     f"range of {target.name} [{info.min}, {info.max}]")
        return array.astype(target, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        out = array.astype(target, copy=False)
        if array.size and kind == "f" and target.kind == "f" and not np.isfinite(np.add.reduce(out, axis=None)):
            bad = np.isfinite(array) & ~np.isfinite(out)
            if bad.any():
                raise InvalidRequest(f"input '{name}': {array[bad].flat[0]!r}{_first(bad)} is outside the range of "
                                     f"{target.name}")
    return out


def arrays_from_json(body, servable, signature_name: str) -> Tuple[Dict[str, np.ndarray], str, list]:
    """(arrays, format, row lengths) of a predict body; format 'columnar' (``inputs``) or 'row' (``instances``).

    The shapes the JSON declares are checked by the servable before any value is converted.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object with 'inputs' or 'instances'")
    if ("inputs" in body) == ("instances" in body):
        raise InvalidRequest("the request body must have exactly one of 'inputs' (columnar) and 'instances' (rows)")
    dtypes = servable.input_dtypes(signature_name)

    def dtype_of(name):
        if name not in dtypes:
            raise InvalidRequest(f"unknown input '{name}'; signature '{signature_name}' takes {', '.join(dtypes)}")
        return dtypes[name]

    if "inputs" in body:
        inputs = body["inputs"]
        if not isinstance(inputs, dict):
            raise InvalidRequest(f"'inputs' must map the input names ({', '.join(dtypes)}) to arrays")
        servable.check_shapes(signature_name, {n: _nested_shape(v) for n, v in inputs.items()})
        return {n: _to_array(n, v, dtype_of(n)) for n, v in inputs.items()}, "columnar", []
    if not servable.batched:
        raise InvalidRequest(f"model '{servable.model_name}' takes the columnar format only: send "
                             f"{{\"inputs\": {{...}}}}, not 'instances' (its inputs have no batch axis to put rows on)")
    rows = body["instances"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise InvalidRequest("'instances' must be a non-empty list of objects, one per row")
    names = set(rows[0])
    for i, row in enumerate(rows):
        if set(row) != names:
            raise InvalidRequest(f"instances[{i}] has inputs {sorted(row)}, instances[0] has {sorted(names)}")
    steps = {n: max(len(r[n]) if isinstance(r[n], list) else 0 for r in rows) for n in names}
    declared = {n: [len(rows)] + ([steps[n]] + _nested_shape(rows[0][n])[1:] if isinstance(rows[0][n], list) else [])
                for n in names}
    servable.check_shapes(signature_name, declared)
    arrays, row_steps = {}, []
    for name in names:
        dtype = dtype_of(name)
        per_row = [_to_array(f"{name}' of instances[{i}]", row[name], dtype) for i, row in enumerate(rows)]
        for i, a in enumerate(per_row):
            if a.ndim != per_row[0].ndim or a.shape[1:] != per_row[0].shape[1:]:
                raise InvalidRequest(f"input '{name}' of instances[{i}]: shape {list(a.shape)} does not stack "
                                     f"with instances[0]'s {list(per_row[0].shape)}")
        if per_row[0].ndim == 0:
            arrays[name] = np.stack(per_row)
            continue
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


def _json_value(name: str, array: np.ndarray):
    """One output (or one row of it) as TF Serving writes it in JSON (strings: UTF-8 text or {"b64": ...})."""
    if array.dtype != object and array.dtype.kind not in "SU":
        return array.tolist()
    as_b64 = name.endswith("_bytes")

    def text(value):
        if isinstance(value, str):
            return value
        value = bytes(value)
        if not as_b64:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}

    if array.ndim == 0:
        return text(array.item())
    out = np.empty(array.shape, object)
    for index, value in np.ndenumerate(array):
        out[index] = text(value)
    return out.tolist()


def json_outputs(outputs: Dict[str, np.ndarray], fmt: str, row_steps: list) -> dict:
    """Outputs -> TF Serving's JSON: {"outputs": {name: value}} (columnar) or {"predictions": [row, ...]} (row)."""
    if fmt == "columnar":
        return {"outputs": {name: _json_value(name, value) for name, value in outputs.items()}}
    rows = []
    for i in range(len(next(iter(outputs.values())))):
        row = {}
        for name, value in outputs.items():
            item = value[i]
            if name == sig.PROBABILITIES and row_steps:
                item = item[:row_steps[i]]  # the row's own reference steps, not the padding of the stack
            row[name] = _json_value(name, np.asarray(item))
        rows.append(row)
    return {"predictions": rows}


def _output_array(proto) -> np.ndarray:
    from serving.tensor_codec import packed_array

    array = packed_array(proto)
    if array is None:  # int64, strings, values in repeated fields
        import tensorflow as tf

        array = tf.make_ndarray(proto)
    return array


class _TooLarge(Exception):
    """A body larger than any request within the limits: refused before it is read (HTTP 413)."""


class _Stalled(Exception):
    """The client did not send its body before the request's deadline (HTTP 408; the connection is closed)."""


class _ClientGone(Exception):
    """The client closed the connection (or it failed) mid-body: nobody to answer."""


class RequestBody:
    """A request's body as it arrives: read in chunks against the request's deadline, never past ``length``.

    ``on_read`` is called once the body is all in (the connection's read deadline ends there).
    """

    def __init__(self, rfile, connection, length: int, deadline: float, timeout: float,
                 on_read: Callable[[], None] = lambda: None):
        self.rfile, self.connection = rfile, connection
        self.length, self.deadline, self.timeout = length, deadline, timeout
        self.on_read = on_read
        self.consumed = 0
        self.stalled = self.gone = False  # either way the connection cannot carry another request
        if length == 0:
            on_read()

    def _chunks(self):
        while self.consumed < self.length:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.stalled = True
                raise _Stalled(f"the request body did not arrive within --rest-timeout ({self.timeout:g} s): "
                               f"{self.consumed} of {self.length} bytes came")
            try:
                self.connection.settimeout(min(left, self.timeout))
                chunk = self.rfile.read1(min(READ_CHUNK_BYTES, self.length - self.consumed))
            except TimeoutError:
                continue  # the deadline check above answers
            except OSError as exc:
                self.gone = True
                raise _ClientGone(f"connection failed after {self.consumed} of {self.length} bytes ({exc})") from None
            finally:
                try:
                    self.connection.settimeout(self.timeout)
                except OSError:
                    pass
            if not chunk:
                self.gone = True
                raise _ClientGone(f"the client closed the connection after {self.consumed} of {self.length} bytes")
            self.consumed += len(chunk)
            if self.consumed == self.length:
                self.on_read()
            yield chunk

    def read(self, on_chunk: Optional[Callable[[bytes], None]] = None) -> bytearray:
        """The whole body; ``on_chunk`` sees each piece first (and may refuse it by raising)."""
        data = bytearray()
        for chunk in self._chunks():
            if on_chunk is not None:
                on_chunk(chunk)
            data += chunk
        return data

    def drain(self) -> bool:
        """Read and drop the rest (nothing kept); False when the client stalled or left."""
        try:
            for _ in self._chunks():
                pass
        except (_Stalled, _ClientGone):
            return False
        return True


class ByteBudget:
    """Bytes of request bodies held at once: ``hold(n, deadline)`` waits for room until ``deadline``.

    ``capacity`` None: grows to ``BODY_BUDGET_FACTOR`` times the largest legal body of
    the models asked so far (:meth:`fit`), so the default follows the limits.
    """

    def __init__(self, capacity: Optional[int] = None):
        self.fixed = capacity is not None
        self.capacity = capacity or 0
        self.used = 0
        self._cond = threading.Condition()

    def fit(self, largest_body: int) -> None:
        if not self.fixed:
            with self._cond:
                if BODY_BUDGET_FACTOR * largest_body > self.capacity:
                    self.capacity = BODY_BUDGET_FACTOR * largest_body
                    self._cond.notify_all()

    def acquire(self, n: int, deadline: float) -> None:
        with self._cond:
            if n > self.capacity:
                raise _TooLarge(f"request body of {n} bytes is above the server's body budget of {self.capacity} "
                                f"bytes (bodies being read at once)")
            while self.used + n > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"the server is busy reading other request bodies ({self.used} of "
                                       f"{self.capacity} bytes of body budget in use) and had no room for this "
                                       f"one's {n} bytes within --rest-timeout; retry later")
                self._cond.wait(left)
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


def _status_name(exc: BaseException) -> str:
    """The gRPC code name a refusal is counted under in the metrics."""
    if isinstance(exc, ServingError):
        return exc.code.name
    if isinstance(exc, (InvalidRequest, JsonTooComplex)):
        return "INVALID_ARGUMENT"
    if isinstance(exc, _TooLarge):
        return "RESOURCE_EXHAUSTED"
    if isinstance(exc, _Stalled):
        return "DEADLINE_EXCEEDED"
    if isinstance(exc, _ClientGone):
        return "CANCELLED"
    return "INTERNAL"


def _json_answer(status: int, answer: dict) -> Tuple[int, bytes, str]:
    return status, json.dumps(answer).encode("utf-8"), JSON


class RestApi:
    """The REST endpoints over the served models: ``handle(method, path, body) -> (status, payload, content type)``.

    ``body`` is a :class:`RequestBody` (``length``, ``deadline``, ``read``).
    """

    def __init__(self, models, timeout: float = sig.REST_TIMEOUT_SECONDS, metrics=None,
                 metrics_path: Optional[str] = None, body_budget_bytes: Optional[int] = None,
                 parse_slots: int = PARSE_SLOTS):
        self.models = models
        self.timeout = timeout
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.budget = ByteBudget(body_budget_bytes)
        self.parse_slots = threading.BoundedSemaphore(parse_slots)
        self.abandon = threading.Event()  # set when the server stops: running predicts stop at the next chunk

    def handle(self, method: str, path: str, body: RequestBody) -> Tuple[int, bytes, str]:
        path = path.split("?", 1)[0]
        try:
            if self.metrics_path is not None and self.metrics is not None and path == self.metrics_path:
                if method != "GET":
                    return _json_answer(405, {"error": f"{method} {path}: the metrics path answers GET only"})
                payload, content_type = self.metrics.exposition()
                return 200, payload, content_type
            return _json_answer(200, self._route(method, path, body))
        except ServingError as exc:
            return _json_answer(http_status(exc.code), {"error": exc.message})
        except (InvalidRequest, JsonTooComplex) as exc:
            return _json_answer(http_status(grpc.StatusCode.INVALID_ARGUMENT), {"error": str(exc)})
        except _TooLarge as exc:
            return _json_answer(413, {"error": str(exc)})
        except _Stalled as exc:
            log.debug("REST %s %s: %s", method, path, exc)
            return _json_answer(408, {"error": str(exc)})
        except _ClientGone as exc:
            log.debug("REST %s %s: %s", method, path, exc)
            return _json_answer(499, {"error": str(exc)})  # not sent: the connection is closed
        except Exception as exc:  # noqa: BLE001 - a bug of ours: answer 500 (with a traceback in the log), keep serving
            log.exception("REST %s %s failed", method, path)
            return _json_answer(http_status(grpc.StatusCode.INTERNAL), {"error": f"{type(exc).__name__}: {exc}"})

    def _route(self, method: str, path: str, body: RequestBody) -> dict:
        match = _PATH.fullmatch(path)
        if match and method == "GET" and match["what"] in (None, "/metadata"):
            return self.status(match) if match["what"] is None else self.metadata(match)
        if match and method == "POST" and match["what"] == ":predict":
            return self.predict(match, body)
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")

    @staticmethod
    def _spec(match):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            version = int(match["version"])
            if version > INT64_MAX:  # TF Serving's answer (absl::SimpleAtoi into an int64 fails)
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"Failed to convert version: {match['version']} to numeric.")
            spec.version.value = version
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

    def predict(self, match, body: RequestBody) -> dict:
        """Read, bound, parse and convert the body, then answer it through serving.servicers.predict."""
        from serving.servicers import predict

        started = time.perf_counter()
        reached = False
        try:
            request, fmt, row_steps = self._request(match, body)
            reached = True
            try:
                response = predict(self.models, request,
                                   lambda: time.monotonic() < body.deadline and not self.abandon.is_set(),
                                   deadline=body.deadline, metrics=self.metrics, entrypoint="REST")
            except ServingError as exc:
                if exc.code == grpc.StatusCode.CANCELLED and time.monotonic() >= body.deadline:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                       f"the request took longer than {self.timeout:g} s (--rest-timeout)") from None
                raise
        except BaseException as exc:
            if not reached and self.metrics is not None:  # refused before predict: counted here
                self.metrics.observe_request(match["name"], version=None, status=_status_name(exc), api="predict",
                                             entrypoint="REST", seconds=time.perf_counter() - started)
            raise
        outputs = {name: _output_array(proto) for name, proto in response.outputs.items()}
        return json_outputs(outputs, fmt, row_steps)

    def _request(self, match, body: RequestBody):
        """(PredictRequest, format, row lengths) of a predict body, within the budget, the parse slots and the bounds."""
        from tensorflow_serving.apis import predict_pb2

        from serving.servicers import find_model
        from serving.tensor_codec import fill_tensor_proto

        spec = self._spec(match)
        model = find_model(self.models, spec)
        servable = model.acquire(spec)  # which version answers: its limits bound the body
        model.release(servable)
        limit = max_body_bytes(servable)
        if body.length > limit:
            raise _TooLarge(f"request body of {body.length} bytes is above {limit}, the most a request within the "
                            f"server limits can need (raise --max-batch-size/--max-query-length/--max-reference-length)")
        scanner = JsonScanner(json_limits(servable))
        self.budget.fit(limit)
        self.budget.acquire(body.length, body.deadline)
        try:
            raw = body.read(scanner.feed)
            if not self.parse_slots.acquire(timeout=max(0.0, body.deadline - time.monotonic())):
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "the server is busy parsing other request bodies and had no parse slot for this "
                                   "one within --rest-timeout; retry later")
            try:
                try:
                    parsed = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise InvalidRequest(f"the request body is not UTF-8 ({exc})") from None
                except ValueError as exc:
                    raise InvalidRequest(f"the request body is not valid JSON ({exc})") from None
                del raw
                if not isinstance(parsed, dict):
                    raise InvalidRequest("the request body must be a JSON object with 'inputs' or 'instances'")
                signature_name = parsed.get("signature_name", "")
                if not isinstance(signature_name, str):
                    raise InvalidRequest(f"'signature_name' must be a string, got {json.dumps(signature_name)[:80]}")
                signature_name = signature_name or sig.SIGNATURE_NAME
                if signature_name not in servable.signatures:
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f'Serving signature key "{signature_name}" not found.')
                arrays, fmt, row_steps = arrays_from_json(parsed, servable, signature_name)
                del parsed
                request = predict_pb2.PredictRequest(model_spec=spec)
                request.model_spec.signature_name = signature_name
                for name, array in arrays.items():
                    fill_tensor_proto(request.inputs[name], array)
                return request, fmt, row_steps
            finally:
                self.parse_slots.release()
        finally:
            self.budget.release(body.length)


class _Watchdog:
    """Closes connections that outlive their deadline: a stalled TLS handshake, request headers or body, or idling.

    Why a thread of its own: a socket timeout bounds one ``recv``, not a client
    that sends a byte every few seconds; shutting the socket down wakes the
    connection's thread from whatever read it is blocked in, and it ends.
    """

    def __init__(self, timeout: float):
        self._entries: Dict[int, list] = {}  # thread id -> [socket, deadline or None]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = max(0.05, min(0.5, timeout / 8))
        self._thread = threading.Thread(target=self._run, name="vreloc-rest-watchdog", daemon=True)
        self._thread.start()

    def set(self, sock, deadline: Optional[float]) -> None:
        """The calling connection thread's socket must be done with what it reads by ``deadline`` (None: no limit)."""
        with self._lock:
            self._entries[threading.get_ident()] = [sock, deadline]

    def drop(self) -> None:
        with self._lock:
            self._entries.pop(threading.get_ident(), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                expired = [entry for entry in self._entries.values() if entry[1] is not None and entry[1] <= now]
                for entry in expired:
                    entry[1] = None
            for sock, _ in expired:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
                except OSError:
                    pass


class _HTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them; TLS handshakes on the connection's thread."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, timeout: float, max_connections: int, ssl_context=None):
        self.connection_timeout = timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.watchdog = _Watchdog(timeout)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused_connections = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused_connections += 1
            self._refuse(request)
            return
        try:
            threading.Thread(target=self._serve, args=(request, client_address), name="vreloc-rest-connection",
                             daemon=True).start()
        except RuntimeError:  # no thread to be had
            self._slots.release()
            self._refuse(request)

    def _refuse(self, sock) -> None:
        """Over the connection limit: a 503 without reading (never blocks the accepting thread), then close."""
        try:
            if self.ssl_context is None:
                sock.setblocking(False)
                try:
                    sock.recv(1 << 16)  # what already came, so closing sends FIN rather than RST
                except OSError:
                    pass
                payload = json.dumps({"error": f"too many connections: the REST server serves at most "
                                               f"{self.max_connections} at once; retry later"}).encode()
                sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        except OSError:
            pass
        finally:
            sock.close()

    def _serve(self, sock, client_address) -> None:
        connection = sock
        try:
            sock.settimeout(self.connection_timeout)
            self.watchdog.set(sock, time.monotonic() + self.connection_timeout)
            if self.ssl_context is not None:
                connection = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self.watchdog.set(connection, time.monotonic() + self.connection_timeout)
                connection.do_handshake()
            self.finish_request(connection, client_address)
        except OSError as exc:  # the client left, stalled or spoke bad TLS: its fault, nothing to log loudly
            log.debug("REST connection from %s ended: %s", client_address, exc)
        except Exception:  # noqa: BLE001 - a bug of ours
            log.exception("REST connection from %s failed", client_address)
        finally:
            self.watchdog.drop()
            self.shutdown_request(connection)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self.watchdog.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vreloc-serving"
    api: RestApi  # set on the subclass made by RestServer
    timeout: float  # the socket timeout of each connection (StreamRequestHandler.setup applies it)

    def _answer(self, method: str) -> None:
        started = time.perf_counter()
        timeout = self.api.timeout
        deadline = time.monotonic() + timeout
        watchdog = self.server.watchdog
        # The body has until the request's deadline (RequestBody answers 408 then; the watchdog, a moment later,
        # is the backstop), and no read limit once it is in.
        watchdog.set(self.connection, deadline + WATCHDOG_BACKSTOP_SECONDS)
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") is not None:
            body = RequestBody(self.rfile, self.connection, 0, deadline, timeout)
            status, payload, content_type = _json_answer(411, {"error": "send the body with a Content-Length "
                                                                        "(Transfer-Encoding is not supported)"})
            self.close_connection = True
        elif length is not None and not _CONTENT_LENGTH.fullmatch(length):
            body = RequestBody(self.rfile, self.connection, 0, deadline, timeout)
            status, payload, content_type = _json_answer(400, {"error": f"bad Content-Length {length[:40]!r}"})
            self.close_connection = True
        else:
            body = RequestBody(self.rfile, self.connection, int(length or 0), deadline, timeout,
                               on_read=lambda: watchdog.set(self.connection, None))
            status, payload, content_type = self.api.handle(method, self.path, body)
        if body.consumed < body.length and not (body.stalled or body.gone):  # refused before all was read: drop
            watchdog.set(self.connection, deadline + WATCHDOG_BACKSTOP_SECONDS)  # the rest (no copy kept) so that the
            # client reads our answer
            if body.length - body.consumed > DRAIN_LIMIT_BYTES or not body.drain():
                self.close_connection = True
        if body.gone:  # nobody to answer
            self.close_connection = True
            log.debug("REST %s %s: the client left mid-body", method, self.path)
            return
        if body.stalled:
            self.close_connection = True
        watchdog.set(self.connection, time.monotonic() + timeout)  # writing the answer, then idling for the next
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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

    def __getattr__(self, name: str):
        """Any other method (PUT, DELETE, ...): TF Serving's 400 "Malformed request", not http.server's 501."""
        if name.startswith("do_"):
            return lambda: self._answer(name[3:])
        raise AttributeError(name)

    def log_message(self, fmt, *args):  # requests are logged at debug level by _answer
        pass


class RestServer:
    """An HTTP (or, with TLS, HTTPS) server of :class:`RestApi`, one thread per connection.

    ``timeout`` (``--rest-timeout``): a connection's handshake, headers and body, and
    a request's whole answer, each get this long. ``max_connections``: connections
    served at once (more are answered 503). ``body_budget_bytes``: bytes of bodies
    read or parsed at once (None: twice the largest legal body). ``parse_slots``:
    bodies parsed at once. ``metrics`` (serving/metrics.py ``ServerMetrics``) with
    ``metrics_path``: Prometheus text on ``GET metrics_path``, and REST refusals counted.
    """

    def __init__(self, models, host: str, port: int, timeout: float = sig.REST_TIMEOUT_SECONDS, ssl_context=None,
                 *, metrics=None, metrics_path: Optional[str] = None, max_connections: int = MAX_CONNECTIONS,
                 body_budget_bytes: Optional[int] = None, parse_slots: int = PARSE_SLOTS):
        if timeout <= 0 or max_connections < 1 or parse_slots < 1:
            raise ValueError(f"REST server: timeout must be > 0, max_connections and parse_slots >= 1 (got "
                             f"{timeout}, {max_connections}, {parse_slots})")
        self.api = RestApi(models, timeout, metrics, metrics_path, body_budget_bytes, parse_slots)
        handler = type("RestHandler", (_Handler,), {"api": self.api, "timeout": timeout})
        self.httpd = _HTTPServer((host.strip("[]"), port), handler, timeout, max_connections, ssl_context)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="vreloc-rest", daemon=True)
        self._thread.start()

    @property
    def open_connections(self) -> int:
        """Connections being served now (each holds a thread)."""
        return len(self.httpd.watchdog)

    def stop_accepting(self) -> None:
        """Refuse new connections; requests being answered go on (until :meth:`abandon`)."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def abandon(self) -> None:
        """Stop the predicts still running at their next chunk (the grace period is over)."""
        self.api.abandon.set()
