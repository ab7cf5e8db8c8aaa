"""TF Serving's REST API (``--rest-port``): model status, metadata, predict and metrics, answered by the servicers.

Why through the servicers: a JSON request is turned into the same
``PredictRequest`` a gRPC client sends and answered by
:func:`serving.servicers.predict`, so both transports share one validation, one
set of limits and one set of status codes; the gRPC code of a refusal becomes
TF Serving's HTTP status (:data:`serving.status.HTTP_STATUS`) and the body
``{"error": "..."}``. The API is generic over servables (serving/model_servable.py
has the interface): dtypes, shapes and the body bound come from the servable asked
for, so model versions and library search share it. JSON <-> tensors is
serving/rest_json.py; the HTTP transport that bounds hostile clients (body
budget, timeouts, connection limit) is serving/http_transport.py.

Paths (TF Serving's)::

    GET  /v1/models/NAME[/versions/N | /labels/L]            {"model_version_status": [...]}
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   {"model_spec": ..., "metadata": {"signature_def": ...}}
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    {"inputs": {...}} -> {"outputs": {...}}
                                                             {"instances": [...]} -> {"predictions": [...]}
    GET  METRICS_PATH (when given, e.g. /monitoring/prometheus/metrics)   Prometheus text

A predict body is bounded before ``json.loads`` builds anything:

* a body above what the largest legal request needs as JSON
  (:func:`serving.rest_json.max_body_bytes`) is refused unread (413);
* the body is scanned chunk by chunk as it arrives (serving/json_limits.py) and
  refused (400, naming the bound) once it nests deeper or holds more values,
  lists, objects or strings than a legal request, so a body of empty objects or
  one nested a million deep costs neither memory nor a ``RecursionError``;
* ``signature_name`` must be a string; a URL version must fit int64 (TF
  Serving's "Failed to convert version" 400);
* it waits for its share of the byte budget, and at most ``parse_slots`` bodies
  are parsed at once (``json.loads`` holds the GIL, so more would not be
  faster); a request's body, budget wait, parse and predict share one deadline,
  ``timeout`` after its headers arrived.

Every refusal that is the client's fault is a 4xx (or 503) with no traceback in
the log; only a fault of the server logs one (500).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Optional, Tuple

import grpc

from serving import signature as sig
from serving.http_transport import (BodyTooLarge, BoundedHTTPServer, ByteBudget, ClientGone, ClientStalled,
                                    RequestBody, RequestHandler, json_answer)
from serving.json_limits import JsonScanner
from serving.rest_json import arrays_from_json, json_limits, json_outputs, max_body_bytes, output_array
from serving.servicers import find_model, model_metadata, model_status, predict
from serving.status import ServingError, http_status
from serving.tensor_codec import fill_tensor_proto
from serving.validation import InvalidRequest
from vreloc_tf.errors import InputError

log = logging.getLogger("serving.rest")

_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)"
                   r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                   r"(?P<what>/metadata|:predict)?/?", re.IGNORECASE)
PARSE_SLOTS = 2  # bodies parsed (json.loads and conversion) at once
INT64_MAX = 2**63 - 1


def _status_name(exc: BaseException) -> str:
    """The gRPC code name a refusal is counted under in the metrics."""
    return exc.code.name if isinstance(exc, ServingError) else "INTERNAL"


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
                    return json_answer(405, {"error": f"{method} {path}: the metrics path answers GET only"})
                payload, content_type = self.metrics.exposition()
                return 200, payload, content_type
            return json_answer(200, self._route(method, path, body))
        except ServingError as exc:  # every refusal: its code says the HTTP status (413, 408, 499 where REST differs)
            if isinstance(exc, (ClientStalled, ClientGone)):
                log.debug("REST %s %s: %s", method, path, exc)
            return json_answer(exc.http_status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001 - a bug of ours: answer 500 (with a traceback in the log), keep serving
            log.exception("REST %s %s failed", method, path)
            return json_answer(http_status(grpc.StatusCode.INTERNAL), {"error": f"{type(exc).__name__}: {exc}"})

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
        outputs = {name: output_array(proto) for name, proto in response.outputs.items()}
        return json_outputs(outputs, fmt, row_steps)

    def _request(self, match, body: RequestBody):
        """(PredictRequest, format, row lengths) of a predict body, within the budget, the parse slots and the bounds."""
        from tensorflow_serving.apis import predict_pb2

        spec = self._spec(match)
        model = find_model(self.models, spec)
        servable = model.acquire(spec)  # which version answers: its limits bound the body
        model.release(servable)
        limit = max_body_bytes(servable)
        if body.length > limit:
            raise BodyTooLarge(f"request body of {body.length} bytes is above {limit}, the most a request within the "
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
                 *, metrics=None, metrics_path: Optional[str] = None, max_connections: int = sig.REST_MAX_CONNECTIONS,
                 body_budget_bytes: Optional[int] = None, parse_slots: int = PARSE_SLOTS):
        if timeout <= 0 or max_connections < 1 or parse_slots < 1:
            raise InputError(f"REST server: timeout must be > 0, max_connections and parse_slots >= 1 (got "
                             f"{timeout}, {max_connections}, {parse_slots})")
        self.api = RestApi(models, timeout, metrics, metrics_path, body_budget_bytes, parse_slots)
        handler = type("RestHandler", (RequestHandler,), {"api": self.api, "timeout": timeout})
        self.httpd = BoundedHTTPServer((host.strip("[]"), port), handler, timeout, max_connections, ssl_context)
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
