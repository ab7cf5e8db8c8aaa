"""A server that speaks TF Serving's APIs (gRPC, and REST on ``--rest-port``): start-up, TLS, signals.

One process serves the exported model and, with ``--index``, library search as a
second model (``search``): both on the same ports, behind the same checks.

Why our own server: the TF Serving binary cannot be installed on every machine
(no package registry ships it), yet the demo, the tests and users without
containers need to query an export over the same API. This server implements
the service definitions shipped in ``tensorflow-serving-api`` -- so the stock
``PredictionServiceStub`` / ``ModelServiceStub`` work unchanged -- and serves the
exact SavedModel layout that ``tensorflow/serving`` serves (see serving/README.md).

The parts: ``serving/model_manager.py`` (versions, policy, loading, hot reload),
``serving/servicers.py`` (the services and their status codes),
``serving/batching.py`` (chunks, buckets, batching), ``serving/rest.py`` (the
REST API), ``serving/tensor_codec.py`` (TensorProto <-> NumPy),
``serving/validation.py`` (request checks), ``serving/model_servable.py`` and
``serving/search_servable.py`` (what a request runs on), ``serving/metrics.py``
(Prometheus). This module checks the TLS files,
binds the ports, polls for new versions and stops cleanly: :func:`start_server`
returns a running :class:`ServerHandle`; :func:`serve_until_signal` is what
``vreloc serve`` blocks in.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Dict, Optional

import grpc

from serving import model_manager, servicers, signature as sig
from serving.batching import BatchingOptions
from serving.metrics import ServerMetrics
from serving.model_manager import ServedModel, VersionPolicy
from serving.rest import RestServer
from serving.search_servable import MODEL_NAME as SEARCH_MODEL_NAME, open_search_model
from serving.validation import RequestLimits
from vreloc_tf.errors import InputError

log = logging.getLogger("serving.server")


class PortUnavailable(InputError):
    """A port the user asked for (``--port``, ``--rest-port``, ``--host``) cannot be bound: another
    process holds it, or it is not this machine's. The user's to change, so an InputError (exit 2)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def check_tls_files(cert: str, key: str):
    """An SSL context of a PEM certificate chain and its private key; InputError naming the file at fault.

    Checked before any model loads, so a wrong file costs a second, not a
    model load followed by a vague "failed to bind".
    """
    import ssl

    for flag, path, marker, what in (("--tls-cert", cert, b"-----BEGIN CERTIFICATE-----", "certificate"),
                                     ("--tls-key", key, b"PRIVATE KEY-----", "private key")):
        try:
            with open(path, "rb") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise InputError(f"{flag} {path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot be read ({exc.strerror})") from None
        if marker not in text:
            raise InputError(f"{flag} {path}: not a PEM file holding a {what}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise InputError(f"--tls-key {key} does not belong to the certificate in --tls-cert {cert}") from None
        raise InputError(f"--tls-cert {cert} / --tls-key {key}: not a usable certificate and key ({exc})") from None
    return context


def default_xla_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vreloc", "xla")


def enable_xla_cache(directory: str) -> bool:
    """Keep XLA's compiled programs in ``directory``, so a restart or a new version need not compile again.

    Why: an XLA signature compiles once per input shape, seconds each; the
    programs do not depend on the weights, so every export of one model shares
    them. Works only before the process's first XLA compilation (TensorFlow
    reads TF_XLA_FLAGS then); a cache directory already set there is kept.
    Returns whether this call set it.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "--tf_xla_persistent_cache_directory" in flags:
        return False
    os.makedirs(directory, exist_ok=True)
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={directory}".strip()
    return True


def set_tensorflow_threads(intra_op: int, inter_op: int = 0) -> bool:
    """Size TensorFlow's thread pools for serving (TF Serving's ``--tensorflow_intra_op_parallelism`` and
    ``--tensorflow_inter_op_parallelism``); 0 leaves a pool at TensorFlow's choice (one thread per core).

    Why 1 intra-op thread is the server's default (serving/README.md, "TensorFlow threads", has the
    figures of ``python -m vreloc.bench.model --inference-batches``): one XLA call gains little or no
    wall time from a second thread on a 2-core CPU and spends more CPU waiting in the pool, so calls
    side by side -- concurrent requests, or the batching threads -- use the cores better. Works only
    before the process's first TensorFlow op; returns whether it took effect (a warning says so when
    it did not, e.g. in a process that already ran a model).
    """
    if intra_op < 0 or inter_op < 0:
        raise InputError(f"TensorFlow thread counts must be >= 0 (0 = TensorFlow's choice), got intra-op {intra_op}, "
                         f"inter-op {inter_op}")
    import tensorflow as tf

    threading_config = tf.config.threading
    wanted = (intra_op, inter_op)
    current = (threading_config.get_intra_op_parallelism_threads(), threading_config.get_inter_op_parallelism_threads())
    if current == wanted:
        return True
    try:
        threading_config.set_intra_op_parallelism_threads(intra_op)
        threading_config.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        log.warning("TensorFlow is already running in this process: its thread pools stay at intra-op %d, "
                    "inter-op %d (asked for %d, %d)", *current, *wanted)
        return False
    return True


@dataclass
class ServerHandle:
    """A running server: ``port`` (gRPC) and ``rest_port`` it listens on; ``stop(grace)`` finishes requests first."""

    server: "grpc.Server"
    host: str
    port: int
    models: Dict[str, object]  # ServedModel (serving/model_manager.py) or SearchModel (serving/search_servable.py)
    rest: Optional[RestServer] = None
    metrics: Optional["object"] = None  # ServerMetrics when --enable-prometheus (serving/metrics.py)
    _stop_polling: threading.Event = field(default_factory=threading.Event)
    _poller: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        return _address(self.host, self.port)

    @property
    def rest_port(self) -> Optional[int]:
        return self.rest.port if self.rest else None

    def in_flight(self) -> int:
        return sum(m.in_flight() for m in self.models.values())

    def stop(self, grace: Optional[float] = 5.0) -> None:
        """Refuse new requests, let running ones finish for up to ``grace`` seconds, then stop them.

        A request still running after ``grace`` stops before its next chunk
        (serving/batching.py), so the process can exit about ``grace`` seconds
        after the signal, not after the longest request.
        """
        started = time.monotonic()
        self._stop_polling.set()
        if self.rest:
            self.rest.stop_accepting()
        self.server.stop(grace).wait()  # gRPC: in-flight RPCs are cancelled once grace is over
        left = None if grace is None else max(0.0, grace - (time.monotonic() - started))
        while self.in_flight() and (left is None or left > 0):  # REST requests have the same grace
            time.sleep(0.05)
            left = None if left is None else left - 0.05
        if self.rest:
            self.rest.abandon()
        for model in self.models.values():
            model.close()
        if self._poller is not None:
            self._poller.join(timeout=5)

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.server.wait_for_termination(timeout)


def start_server(model_base_path: Optional[str] = None, model_name: Optional[str] = None, port: int = 0,
                 host: str = "127.0.0.1", *, allow_remote: bool = False, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, poll_interval: float = 1.0, version_policy: str = "latest",
                 version_labels: Optional[Dict[str, int]] = None, limits: RequestLimits = RequestLimits(),
                 batching: BatchingOptions = BatchingOptions(), rest_port: Optional[int] = None,
                 rest_timeout: float = sig.REST_TIMEOUT_SECONDS, xla_cache_dir: Optional[str] = None,
                 max_workers: int = 8, max_message_bytes: int = sig.MAX_MESSAGE_BYTES,
                 tensorflow_threads: Optional[tuple] = None, index: Optional[str] = None,
                 search_run: Optional[str] = None, search_model_name: str = SEARCH_MODEL_NAME,
                 metrics_path: Optional[str] = None, rest_max_connections: int = sig.REST_MAX_CONNECTIONS,
                 settle_seconds: Optional[float] = None) -> ServerHandle:
    """Serve the versions under ``model_base_path`` and/or library search of ``index`` over gRPC (and REST).

    Returns once listening. ``port=0`` picks a free port (``handle.port``);
    ``rest_port`` (None: no REST API; 0: any free port, ``handle.rest_port``)
    serves TF Serving's REST API. A non-loopback ``host`` needs
    ``allow_remote=True`` and is logged as a warning. ``tls_cert``/``tls_key``
    (PEM files, checked before any model loads) switch both ports to TLS.
    ``poll_interval`` <= 0 disables reloading. ``batching``: how requests are
    chunked and batched (serving/batching.py). ``xla_cache_dir``: keep compiled
    XLA programs there (:func:`enable_xla_cache`). ``tensorflow_threads``:
    (intra-op, inter-op) pool sizes (:func:`set_tensorflow_threads`; None: as
    they are -- ``vreloc serve`` passes its flags, 1 intra-op thread by default).
    ``index`` (with ``search_run``, default the index's own model): serve library
    search as model ``search_model_name`` in the same process, on the same ports,
    under the same limits (serving/search_servable.py). ``metrics_path``: serve
    Prometheus metrics on the REST port at that path (serving/metrics.py).
    ``rest_max_connections``: REST connections served at once (more are answered 503).
    ``settle_seconds``: how long a version's folder must stand still before it loads (None:
    ``model_manager.DEFAULT_SETTLE_SECONDS``).
    """
    if not model_base_path and not index:
        raise InputError("give --model-base-path BASE/NAME (an export), --index INDEX (library search), or both")
    if not is_loopback(host):
        if not allow_remote:
            raise InputError(f"--host {host} is not a loopback address: pass --allow-remote to serve other machines")
        log.warning("serving on non-loopback address %s: reachable from other machines%s", host,
                    "" if tls_cert else " WITHOUT TLS")
    if bool(tls_cert) != bool(tls_key):
        raise InputError("TLS needs both --tls-cert and --tls-key")
    ssl_context = check_tls_files(tls_cert, tls_key) if tls_cert else None
    if model_base_path and not os.path.isdir(model_base_path):
        raise InputError(f"--model-base-path {model_base_path}: no such directory")
    if index and not os.path.isdir(index):
        raise InputError(f"--index {index}: no such directory")
    if batching.max_batch_size < 1 or batching.max_batch_steps < 1 or batching.batch_timeout_micros < 0:
        raise InputError(f"batching: --max-batch-size and the batch steps must be >= 1 and "
                         f"--batch-timeout-micros >= 0 (got {batching})")
    if rest_max_connections < 1:
        raise InputError(f"--rest-max-connections must be >= 1, got {rest_max_connections}")
    if metrics_path is not None and (rest_port is None or not metrics_path.startswith("/")):
        raise InputError(f"metrics are served on the REST port at a path starting with '/': give --rest-port "
                         f"(got path {metrics_path!r}, REST port {rest_port})")
    name = (model_name or os.path.basename(os.path.normpath(model_base_path))) if model_base_path else None
    if name is not None and index and name == search_model_name:
        raise InputError(f"the model and library search would both be served as {name!r}: give another "
                         f"--model-name or --search-model-name")
    if xla_cache_dir:
        enable_xla_cache(xla_cache_dir)
    if tensorflow_threads is not None:
        set_tensorflow_threads(*tensorflow_threads)

    models: Dict[str, object] = {}
    metrics = ServerMetrics(models) if metrics_path else None
    if metrics is not None:
        batching = dataclasses.replace(batching, observer=metrics.batch_observer(name or search_model_name))
    def close_models():
        for served in models.values():
            served.close()

    model = None
    if name is not None:
        settle = model_manager.DEFAULT_SETTLE_SECONDS if settle_seconds is None else settle_seconds
        model = ServedModel(name, model_base_path, VersionPolicy.parse(version_policy), version_labels, limits,
                            batching, settle_seconds=settle)
        model.scan()
        if not model.versions:
            log.warning("model %s: no servable version in %s yet; waiting for one", name, model_base_path)
        models[name] = model
    if index:
        try:
            models[search_model_name] = open_search_model(index, search_run, search_model_name, limits)
        except BaseException:
            close_models()
            raise

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vreloc-grpc"),
                         options=options)
    servicers.add_to_server(server, models, metrics)
    address = _address(host, port)
    try:
        if tls_cert:
            with open(tls_key, "rb") as fh:
                key = fh.read()
            with open(tls_cert, "rb") as fh:
                cert = fh.read()
            bound = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.50 raises "Failed to bind to address ..." where it returned 0
        bound = 0
    if not bound:
        close_models()
        raise PortUnavailable(f"could not bind {address} (is the port in use?)")
    rest = None
    if rest_port is not None:
        try:
            rest = RestServer(models, host, rest_port, rest_timeout, ssl_context, metrics=metrics,
                              metrics_path=metrics_path, max_connections=rest_max_connections)
        except OSError as exc:
            close_models()
            raise PortUnavailable(f"could not bind the REST port {_address(host, rest_port)}: {exc.strerror}") from None
    server.start()
    handle = ServerHandle(server=server, host=host, port=bound, models=models, rest=rest, metrics=metrics)
    if poll_interval > 0 and model is not None:
        def poll():
            while not handle._stop_polling.wait(poll_interval):
                try:
                    model.scan()
                except Exception:  # noqa: BLE001 - keep polling
                    log.exception("model %s: rescan of %s failed", name, model_base_path)

        handle._poller = threading.Thread(target=poll, name="vreloc-version-poller", daemon=True)
        handle._poller.start()
    served = ", ".join(f"{n} (versions {m.versions})" for n, m in models.items())
    log.info("serving %s on %s%s%s%s", served, handle.address,
             f" and REST on port {handle.rest_port}" if rest else "", " with TLS" if tls_cert else "",
             f"; metrics at {metrics_path}" if metrics is not None else "")
    return handle


def serve_until_signal(handle: ServerHandle, grace: float) -> str:
    """Block until SIGTERM or SIGINT, then stop ``handle`` (in-flight requests get ``grace`` s); the signal name."""
    stop = threading.Event()
    received = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(0.5):
        pass
    in_flight = handle.in_flight()
    log.info("%s: stopping; waiting up to %.0f s for %d request(s) in flight", received[0], grace, in_flight)
    handle.stop(grace)
    log.info("stopped")
    return received[0]
