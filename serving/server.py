"""A gRPC server that speaks TF Serving's API: PredictionService and ModelService.

Why our own server: the TF Serving binary cannot be installed on every machine
(no package registry ships it), yet the demo, the tests and users without
containers need to query an export over the same API. This server implements
the service definitions shipped in ``tensorflow-serving-api`` -- so the stock
``PredictionServiceStub`` / ``ModelServiceStub`` work unchanged -- and serves the
exact SavedModel layout that ``tensorflow/serving`` serves (see serving/README.md).

Behaviour follows TF Serving where the two overlap:

* versions are integer folders of ``--model-base-path``; the base path is polled
  and a new version is loaded (and warmed up from ``assets.extra``) *before*
  it takes traffic; a retired version is released only when its in-flight
  requests have finished;
* ``--version-policy`` ``latest`` (default, the highest version), ``latest:N``,
  ``all`` or ``specific:1,2``; ``model_spec.version`` / ``version_label`` pick a
  loaded version; an unknown model or version is NOT_FOUND, an unknown label
  INVALID_ARGUMENT, an unknown signature FAILED_PRECONDITION (TF Serving's codes);
* malformed requests are INVALID_ARGUMENT naming the input (serving/validation.py).

Entry points: ``vreloc serve`` (:func:`main`) and :func:`start_server`.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import grpc

from serving import signature as sig
from serving.versions import list_versions
from serving.validation import InvalidRequest, RequestLimits, decode_inputs, validate_inputs

log = logging.getLogger("serving.server")
_NO_LIMITS = RequestLimits(2**31 - 1, 2**31 - 1, 2**31 - 1)


class ServingError(Exception):
    """An error with the gRPC status code it is answered with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------
# Versions on disk
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk are served: TF Serving's model_version_policy."""

    kind: str = "latest"  # latest | all | specific
    count: int = 1  # latest:N
    versions: tuple = ()  # specific:1,2

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        kind, _, rest = text.partition(":")
        try:
            if kind == "latest":
                count = int(rest) if rest else 1
                if count < 1:
                    raise ValueError
                return cls("latest", count=count)
            if kind == "all" and not rest:
                return cls("all")
            if kind == "specific" and rest:
                return cls("specific", versions=tuple(sorted(int(v) for v in rest.split(","))))
        except ValueError:
            pass
        raise ValueError(f"--version-policy {text!r}: expected latest, latest:N (N >= 1), all or specific:V1,V2")

    def select(self, on_disk: Sequence[int]) -> List[int]:
        if self.kind == "latest":
            return sorted(on_disk)[-self.count:]
        if self.kind == "all":
            return sorted(on_disk)
        return [v for v in sorted(on_disk) if v in self.versions]


# ---------------------------------------------------------------------------
# A loaded version
# ---------------------------------------------------------------------------

class LoadedVersion:
    """One SavedModel version in memory, with its signature defs and an in-flight count."""

    def __init__(self, model_name: str, version: int, path: str):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self._saved = tf.saved_model.load(path)
        self.signatures = dict(self._saved.signatures)
        if sig.SIGNATURE_NAME not in self.signatures:
            raise ValueError(f"{path}: no '{sig.SIGNATURE_NAME}' signature (found {sorted(self.signatures)})")
        # The SignatureDefs as written (method name included), for GetModelMetadata.
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, sig.SAVED_MODEL_FILE), "rb") as fh:
            saved_model.ParseFromString(fh.read())
        self.signature_defs = {
            key: value for key, value in saved_model.meta_graphs[0].signature_def.items() if not key.startswith("__")
        }
        query_spec = self.signatures[sig.SIGNATURE_NAME].structured_input_signature[1][sig.QUERY]
        self.feature_dim = int(query_spec.shape[-1])
        metadata_path = os.path.join(path, sig.ASSETS_EXTRA_DIR, sig.METADATA_FILE)
        self.metadata = {}
        if os.path.exists(metadata_path):
            with open(metadata_path) as fh:
                self.metadata = json.load(fh)
        self.in_flight = 0
        self.loaded_at = time.time()

    def run(self, signature_name: str, arrays: Dict[str, "object"]) -> Dict[str, "object"]:
        """Call one signature on validated NumPy inputs; NumPy outputs."""
        import tensorflow as tf

        fn = self.signatures[signature_name]
        outputs = fn(**{name: tf.constant(value) for name, value in arrays.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def warm_up(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests, as TF Serving does at load; returns the count.

        The exporter's own requests are checked against the signature but not against
        the client-facing size limits, which a server may set below the warm-up shapes.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, sig.ASSETS_EXTRA_DIR, sig.WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = entry.predict_log.request
            arrays = decode_inputs(request.inputs)
            validate_inputs(arrays, self.feature_dim, _NO_LIMITS)
            self.run(request.model_spec.signature_name or sig.SIGNATURE_NAME, arrays)
            count += 1
        return count


# ---------------------------------------------------------------------------
# The model: versions served from one base path, hot-reloaded
# ---------------------------------------------------------------------------

@dataclass
class _Failure:
    version: int
    message: str
    mtime: float


class ServedModel:
    """The versions of one model that take traffic; rescanned every ``poll_interval`` seconds.

    A request takes a reference to one :class:`LoadedVersion` under the lock and
    counts itself in flight; a rescan loads new versions first, then swaps the
    served set, and keeps retired versions until their in-flight count is zero.
    """

    def __init__(self, name: str, base_path: str, policy: VersionPolicy = VersionPolicy(),
                 labels: Optional[Dict[str, int]] = None, limits: RequestLimits = RequestLimits()):
        self.name = name
        self.base_path = base_path
        self.policy = policy
        self.labels = dict(labels or {})
        self.limits = limits
        self._lock = threading.Lock()
        self._served: Dict[int, LoadedVersion] = {}
        self._retired: List[LoadedVersion] = []
        self._failed: Dict[int, _Failure] = {}
        self._scan_lock = threading.Lock()

    # -- reload ------------------------------------------------------------
    def scan(self) -> None:
        """Load versions the policy wants, then swap; release retired versions no request holds."""
        with self._scan_lock:
            wanted = self.policy.select(list_versions(self.base_path))
            current = dict(self._served)
            loaded = {}
            for version in wanted:
                if version in current:
                    continue
                path = os.path.join(self.base_path, str(version))
                mtime = os.path.getmtime(os.path.join(path, sig.SAVED_MODEL_FILE))
                failure = self._failed.get(version)
                if failure and failure.mtime == mtime:
                    continue  # failed before and unchanged on disk: do not retry every poll
                started = time.perf_counter()
                try:
                    servable = LoadedVersion(self.name, version, path)
                    warmups = servable.warm_up()
                except Exception as exc:  # a broken export must not take the server down
                    log.error("model %s version %d: failed to load from %s: %s", self.name, version, path, exc)
                    self._failed[version] = _Failure(version, f"{type(exc).__name__}: {exc}", mtime)
                    continue
                self._failed.pop(version, None)
                loaded[version] = servable
                log.info("model %s: loaded version %d from %s in %.2f s (%d warm-up requests)",
                         self.name, version, path, time.perf_counter() - started, warmups)
            with self._lock:
                new = {v: s for v, s in current.items() if v in wanted}
                new.update(loaded)
                if not new and current and wanted:
                    # Availability first (TF Serving's default policy): keep serving the old
                    # versions until one the policy wants has loaded.
                    new = current
                for version, servable in current.items():
                    if version not in new:
                        self._retired.append(servable)
                        log.info("model %s: version %d retired (%d request(s) in flight)",
                                 self.name, version, servable.in_flight)
                self._served = new
                still = []
                for servable in self._retired:
                    if servable.in_flight:
                        still.append(servable)
                    else:
                        log.info("model %s: version %d unloaded", self.name, servable.version)
                self._retired = still

    @property
    def versions(self) -> List[int]:
        """Versions taking traffic now."""
        with self._lock:
            return sorted(self._served)

    @property
    def retired_versions(self) -> List[int]:
        """Versions no longer served but still held by in-flight requests."""
        with self._lock:
            return sorted(s.version for s in self._retired)

    # -- requests ----------------------------------------------------------
    def acquire(self, model_spec) -> LoadedVersion:
        """The version a ModelSpec asks for, counted in flight; release() it when done."""
        with self._lock:
            if model_spec.HasField("version"):
                version = model_spec.version.value
                servable = self._served.get(version)
                if servable is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find version {version} of model {self.name} "
                                       f"(loaded: {sorted(self._served) or 'none'})")
            elif model_spec.version_label:
                label = model_spec.version_label
                if label not in self.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
                servable = self._served.get(self.labels[label])
                if servable is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"version label {label!r} points to version {self.labels[label]} of model "
                                       f"{self.name}, which is not loaded")
            else:
                if not self._served:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find any versions of model {self.name} in {self.base_path}")
                servable = self._served[max(self._served)]
            servable.in_flight += 1
            return servable

    def release(self, servable: LoadedVersion) -> None:
        with self._lock:
            servable.in_flight -= 1

    def in_flight(self) -> int:
        """Requests running now, on served and retired versions."""
        with self._lock:
            return sum(s.in_flight for s in list(self._served.values()) + self._retired)

    def status(self, version: Optional[int] = None):
        """[(version, state name, error message)] for GetModelStatus."""
        with self._lock:
            rows = [(v, "AVAILABLE", "") for v in sorted(self._served)]
        rows += [(f.version, "END", f.message) for f in self._failed.values()]
        if version is not None:
            rows = [r for r in rows if r[0] == version]
            if not rows:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {self.name}")
        return sorted(rows)


# ---------------------------------------------------------------------------
# gRPC services
# ---------------------------------------------------------------------------

# NumPy dtype -> TensorProto dtype enum (tensorflow/core/framework/types.proto) of the signature's outputs.
_PROTO_DTYPES = {"float32": 1, "int32": 3}


def _fill_tensor_proto(proto, array) -> None:
    """Write ``array`` into the (empty) TensorProto ``proto``: shape plus packed ``tensor_content``.

    Why not tf.make_tensor_proto: it costs more than the rest of the response
    handling together (Python dispatch per call), and a fresh proto then has to be
    copied into the response. Packed content is what tf.make_ndarray and every
    TF Serving client reads; other dtypes still take the general path.
    """
    import numpy as np

    array = np.asarray(array)
    dtype = _PROTO_DTYPES.get(array.dtype.name) if array.dtype.isnative else None
    if dtype is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = array.tobytes()


def _services():
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        """tensorflow.serving.PredictionService: Predict and GetModelMetadata (Classify etc. stay UNIMPLEMENTED)."""

        def __init__(self, models: Dict[str, ServedModel]):
            self.models = models

        def _model(self, model_spec) -> ServedModel:
            model = self.models.get(model_spec.name)
            if model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: model {model_spec.name!r} is not served "
                                   f"(served: {', '.join(sorted(self.models))})")
            return model

        def Predict(self, request, context):
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2

            started = time.perf_counter()
            shape_text, version, error = "", None, None
            try:
                model = self._model(request.model_spec)
                servable = model.acquire(request.model_spec)
                version = servable.version
                try:
                    signature_name = request.model_spec.signature_name or sig.SIGNATURE_NAME
                    if signature_name not in servable.signatures:
                        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                           f'Serving signature key "{signature_name}" not found.')
                    arrays = decode_inputs(request.inputs)
                    validate_inputs(arrays, servable.feature_dim, model.limits)
                    shape_text = "B={} Lq={} Lr={}".format(*arrays[sig.QUERY].shape[:2], arrays[sig.REFERENCE].shape[1])
                    wanted = list(request.output_filter) or list(sig.OUTPUT_NAMES)
                    unknown = [n for n in wanted if n not in sig.OUTPUT_NAMES]
                    if unknown:
                        raise InvalidRequest(f"output_filter: unknown output(s) {unknown}; "
                                             f"the signature has {', '.join(sig.OUTPUT_NAMES)}")
                    if not context.is_active():  # the client gave up (deadline, cancel): skip the work
                        raise ServingError(grpc.StatusCode.CANCELLED, "the client cancelled or its deadline passed")
                    outputs = servable.run(signature_name, arrays)
                finally:
                    model.release(servable)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = model.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = signature_name
                for name in wanted:
                    _fill_tensor_proto(response.outputs[name], outputs[name])
                return response
            except InvalidRequest as exc:
                error = ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except ServingError as exc:
                error = exc
            except tf.errors.InvalidArgumentError as exc:  # what validation did not foresee
                error = ServingError(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            except Exception as exc:  # noqa: BLE001 - answer INTERNAL, keep serving
                log.exception("Predict failed")
                error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            finally:
                log.debug("Predict model=%s version=%s %s status=%s %.2f ms", request.model_spec.name, version,
                          shape_text, error.code.name if error else "OK", 1e3 * (time.perf_counter() - started))
            context.abort(error.code, error.message)

        def GetModelMetadata(self, request, context):
            from tensorflow_serving.apis import get_model_metadata_pb2

            started = time.perf_counter()
            error = None
            try:
                fields = list(request.metadata_field)
                if not fields:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "GetModelMetadataRequest must specify at least one metadata_field")
                for name in fields:
                    if name != "signature_def":
                        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
                model = self._model(request.model_spec)
                servable = model.acquire(request.model_spec)
                model.release(servable)
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = model.name
                response.model_spec.version.value = servable.version
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for key, value in servable.signature_defs.items():
                    signature_map.signature_def[key].CopyFrom(value)
                response.metadata["signature_def"].Pack(signature_map)
                return response
            except ServingError as exc:
                error = exc
            finally:
                log.debug("GetModelMetadata model=%s status=%s %.2f ms", request.model_spec.name,
                          error.code.name if error else "OK", 1e3 * (time.perf_counter() - started))
            context.abort(error.code, error.message)

    class ModelService(model_service_pb2_grpc.ModelServiceServicer):
        """tensorflow.serving.ModelService: GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

        def __init__(self, models: Dict[str, ServedModel]):
            self.models = models

        def GetModelStatus(self, request, context):
            from tensorflow_serving.apis import get_model_status_pb2

            error = None
            try:
                model = self.models.get(request.model_spec.name)
                if model is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find any versions of model {request.model_spec.name!r}")
                version = request.model_spec.version.value if request.model_spec.HasField("version") else None
                rows = model.status(version)
                if not rows:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find any versions of model {model.name} in {model.base_path}")
                response = get_model_status_pb2.GetModelStatusResponse()
                for v, state, message in rows:
                    entry = response.model_version_status.add()
                    entry.version = v
                    entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
                    if message:
                        entry.status.error_code = 2  # tensorflow.error.Code UNKNOWN
                        entry.status.error_message = message
                return response
            except ServingError as exc:
                error = exc
            finally:
                log.debug("GetModelStatus model=%s status=%s", request.model_spec.name, error.code.name if error else "OK")
            context.abort(error.code, error.message)

    return PredictionService, ModelService, prediction_service_pb2_grpc, model_service_pb2_grpc


# ---------------------------------------------------------------------------
# Starting and stopping
# ---------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass
class ServerHandle:
    """A running server: ``port`` it listens on; ``stop(grace)`` finishes in-flight requests first."""

    server: "grpc.Server"
    host: str
    port: int
    models: Dict[str, ServedModel]
    _stop_polling: threading.Event = field(default_factory=threading.Event)
    _poller: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    def stop(self, grace: Optional[float] = 5.0) -> None:
        """Refuse new RPCs, let in-flight ones finish (up to ``grace`` seconds), stop polling."""
        self._stop_polling.set()
        self.server.stop(grace).wait()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.server.wait_for_termination(timeout)


def start_server(model_base_path: str, model_name: Optional[str] = None, port: int = 0, host: str = "127.0.0.1",
                 *, allow_remote: bool = False, tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 poll_interval: float = 1.0, version_policy: str = "latest",
                 version_labels: Optional[Dict[str, int]] = None, limits: RequestLimits = RequestLimits(),
                 max_workers: int = 8, max_message_bytes: int = sig.MAX_MESSAGE_BYTES) -> ServerHandle:
    """Load the versions under ``model_base_path`` and serve them over gRPC; returns once listening.

    ``port=0`` picks a free port (``handle.port``). A non-loopback ``host`` needs
    ``allow_remote=True`` and is logged as a warning. ``tls_cert``/``tls_key``
    (PEM files) switch the port to TLS. ``poll_interval`` <= 0 disables reloading.
    """
    if not is_loopback(host):
        if not allow_remote:
            raise ValueError(f"--host {host} is not a loopback address: pass --allow-remote to serve other machines")
        log.warning("serving on non-loopback address %s: reachable from other machines%s", host,
                    "" if tls_cert else " WITHOUT TLS")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if not os.path.isdir(model_base_path):
        raise FileNotFoundError(f"--model-base-path {model_base_path}: no such directory")
    name = model_name or os.path.basename(os.path.normpath(model_base_path))
    model = ServedModel(name, model_base_path, VersionPolicy.parse(version_policy), version_labels, limits)
    model.scan()
    if not model.versions:
        log.warning("model %s: no servable version in %s yet; waiting for one", name, model_base_path)
    models = {name: model}

    PredictionService, ModelService, pred_grpc, model_grpc = _services()
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vreloc-grpc"),
                         options=options)
    pred_grpc.add_PredictionServiceServicer_to_server(PredictionService(models), server)
    model_grpc.add_ModelServiceServicer_to_server(ModelService(models), server)
    address = _address(host, port)
    if tls_cert:
        with open(tls_key, "rb") as fh:
            key = fh.read()
        with open(tls_cert, "rb") as fh:
            cert = fh.read()
        bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"could not bind {address}")
    server.start()
    handle = ServerHandle(server=server, host=host, port=bound, models=models)
    if poll_interval > 0:
        def poll():
            while not handle._stop_polling.wait(poll_interval):
                try:
                    model.scan()
                except Exception:  # noqa: BLE001 - keep polling
                    log.exception("model %s: rescan of %s failed", name, model_base_path)

        handle._poller = threading.Thread(target=poll, name="vreloc-version-poller", daemon=True)
        handle._poller.start()
    log.info("serving model %s (versions %s) on %s%s", name, model.versions, handle.address, " with TLS" if tls_cert else "")
    return handle


# ---------------------------------------------------------------------------
# vreloc serve
# ---------------------------------------------------------------------------

def _label(text: str):
    label, sep, version = text.partition("=")
    if not sep or not label or not version.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=VERSION, e.g. stable=1")
    return label, int(version)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-base-path", required=True, help="BASE/NAME folder holding integer version folders")
    parser.add_argument("--model-name", default=None, help="name clients use in model_spec (default: base path's last folder)")
    parser.add_argument("--port", type=int, default=sig.GRPC_PORT, help="gRPC port (default %(default)s; 0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (logged as a warning)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between scans of the base path for new versions (default %(default)s; 0 = never)")
    parser.add_argument("--version-policy", default="latest",
                        help="latest | latest:N | all | specific:V1,V2 (default %(default)s: the highest version)")
    parser.add_argument("--version-label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                        help="a version label clients may ask for (repeatable), e.g. stable=1 canary=2")
    parser.add_argument("--max-query-length", type=int, default=sig.MAX_QUERY_LENGTH, help="largest Lq (default %(default)s)")
    parser.add_argument("--max-reference-length", type=int, default=sig.MAX_REFERENCE_LENGTH,
                        help="largest Lr (default %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=sig.MAX_BATCH_SIZE, help="largest batch (default %(default)s)")
    parser.add_argument("--max-workers", type=int, default=8, help="gRPC worker threads (default %(default)s)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds SIGTERM/SIGINT waits for in-flight requests (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    limits = RequestLimits(args.max_query_length, args.max_reference_length, args.max_batch_size)
    try:
        handle = start_server(args.model_base_path, args.model_name, args.port, args.host,
                              allow_remote=args.allow_remote, tls_cert=args.tls_cert, tls_key=args.tls_key,
                              poll_interval=args.poll_interval, version_policy=args.version_policy,
                              version_labels=dict(args.version_label), limits=limits, max_workers=args.max_workers)
    except (ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"listening on {handle.address}", flush=True)
    while not stop.wait(0.5):
        pass
    in_flight = sum(m.in_flight() for m in handle.models.values())
    log.info("%s: stopping; waiting up to %.0f s for %d request(s) in flight", received[0], args.grace, in_flight)
    handle.stop(args.grace)
    log.info("stopped")
    return 0
