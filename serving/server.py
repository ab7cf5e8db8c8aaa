"""A gRPC server that speaks TF Serving's API: start-up, TLS, signals.

Why our own server: the TF Serving binary cannot be installed on every machine
(no package registry ships it), yet the demo, the tests and users without
containers need to query an export over the same API. This server implements
the service definitions shipped in ``tensorflow-serving-api`` -- so the stock
``PredictionServiceStub`` / ``ModelServiceStub`` work unchanged -- and serves the
exact SavedModel layout that ``tensorflow/serving`` serves (see serving/README.md).

The parts: ``serving/model_manager.py`` (versions, policy, loading, hot reload),
``serving/servicers.py`` (the services and their status codes),
``serving/tensor_codec.py`` (TensorProto <-> NumPy), ``serving/validation.py``
(request checks). This module binds the port, polls for new versions and stops
cleanly: :func:`start_server` returns a running :class:`ServerHandle`;
:func:`serve_until_signal` is what ``vreloc serve`` blocks in.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Dict, Optional

import grpc

from serving import signature as sig
from serving.model_manager import ServedModel, VersionPolicy
from serving.validation import RequestLimits
from vreloc_tf.errors import InputError

log = logging.getLogger("serving.server")


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
            raise InputError(f"--host {host} is not a loopback address: pass --allow-remote to serve other machines")
        log.warning("serving on non-loopback address %s: reachable from other machines%s", host,
                    "" if tls_cert else " WITHOUT TLS")
    if bool(tls_cert) != bool(tls_key):
        raise InputError("TLS needs both --tls-cert and --tls-key")
    if not os.path.isdir(model_base_path):
        raise InputError(f"--model-base-path {model_base_path}: no such directory")
    name = model_name or os.path.basename(os.path.normpath(model_base_path))
    model = ServedModel(name, model_base_path, VersionPolicy.parse(version_policy), version_labels, limits)
    model.scan()
    if not model.versions:
        log.warning("model %s: no servable version in %s yet; waiting for one", name, model_base_path)
    models = {name: model}

    from serving import servicers  # imports tensorflow_serving.apis

    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="vreloc-grpc"),
                         options=options)
    servicers.add_to_server(server, models)
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
    in_flight = sum(m.in_flight() for m in handle.models.values())
    log.info("%s: stopping; waiting up to %.0f s for %d request(s) in flight", received[0], grace, in_flight)
    handle.stop(grace)
    log.info("stopped")
    return received[0]
