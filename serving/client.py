"""Query a TF Serving gRPC endpoint (ours or ``tensorflow/serving``) with one pair or a padded batch.

Why only the stock API: the request is a plain ``PredictRequest`` built with
``tf.make_tensor_proto`` and sent through ``PredictionServiceStub``, so this
client works against the real TF Serving as well as serving/server.py, and it
shows every field a client in another language must fill (serving/signature.py).

``vreloc query`` prints the segment; :func:`predict` returns it as a dict.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from serving import signature as sig


def _batched(array: np.ndarray, name: str):
    """[L, D] (one pair) -> ([1, L, D], True); [B, L, D] -> (same, False)."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None], True
    if array.ndim == 3:
        return array, False
    raise ValueError(f"{name}: expected an array [L, D] (one pair) or [B, L, D] (a batch), got shape {list(array.shape)}")


def make_request(query, reference, model_name: str = sig.DEFAULT_MODEL_NAME, *,
                 query_length=None, reference_length=None, version: Optional[int] = None,
                 version_label: Optional[str] = None, signature_name: str = sig.SIGNATURE_NAME,
                 output_filter=()):
    """A PredictRequest for one pair ([L, D] arrays) or a padded batch ([B, L, D] plus lengths).

    Lengths default to the arrays' full lengths (no padding).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    query, _ = _batched(query, sig.QUERY)
    reference, _ = _batched(reference, sig.REFERENCE)
    if query_length is None:
        query_length = np.full((query.shape[0],), query.shape[1], np.int32)
    if reference_length is None:
        reference_length = np.full((reference.shape[0],), reference.shape[1], np.int32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if version_label:
        request.model_spec.version_label = version_label
    request.output_filter.extend(output_filter)
    for name, value, dtype in ((sig.QUERY, query, np.float32), (sig.QUERY_LENGTH, query_length, np.int32),
                               (sig.REFERENCE, reference, np.float32),
                               (sig.REFERENCE_LENGTH, reference_length, np.int32)):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(value, dtype=dtype)))
    return request


def open_channel(server: str, tls_ca: Optional[str] = None, tls_server_name: Optional[str] = None):
    """An insecure channel, or a TLS one trusting the PEM ``tls_ca`` (None with TLS: the system roots)."""
    import grpc

    options = [("grpc.max_receive_message_length", sig.MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", sig.MAX_MESSAGE_BYTES)]
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    if tls_ca is None and not tls_server_name:
        return grpc.insecure_channel(server, options=options)
    roots = None
    if tls_ca:
        with open(tls_ca, "rb") as fh:
            roots = fh.read()
    return grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


def parse_response(response, single: bool) -> Dict[str, object]:
    """PredictResponse -> {start, end, score, probabilities, model_name, version} (scalars for one pair)."""
    import tensorflow as tf

    out: Dict[str, object] = {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}
    if single:
        out = {name: (value[0].item() if value.ndim == 1 else value[0]) for name, value in out.items()}
    out["model_name"] = response.model_spec.name
    out["version"] = response.model_spec.version.value
    return out


def predict(server: str, query, reference, model_name: str = sig.DEFAULT_MODEL_NAME, timeout: float = 10.0, *,
            query_length=None, reference_length=None, version: Optional[int] = None,
            version_label: Optional[str] = None, tls_ca: Optional[str] = None,
            tls_server_name: Optional[str] = None, channel=None, wait_for_ready: bool = False) -> Dict[str, object]:
    """Send one pair ([Lq, D], [Lr, D]) or a padded batch to ``server`` (HOST:PORT); the decoded segment.

    Returns {"start", "end" (exclusive), "score", "probabilities", "model_name", "version"}:
    Python scalars and an [Lr, 4] array for one pair, arrays for a batch. Raises
    grpc.RpcError (with .code() and .details()) when the server refuses the request.
    ``channel`` reuses an open channel (see :func:`open_channel`) instead of opening one.
    ``wait_for_ready``: a server that is not listening yet is waited for (up to ``timeout``)
    instead of failing at once with UNAVAILABLE (gRPC's wait-for-ready semantics).
    """
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    _, single = _batched(query, sig.QUERY)
    request = make_request(query, reference, model_name, query_length=query_length,
                           reference_length=reference_length, version=version, version_label=version_label)
    own = channel is None
    channel = channel or open_channel(server, tls_ca, tls_server_name)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout, wait_for_ready=wait_for_ready)
    finally:
        if own:
            channel.close()
    return parse_response(response, single)


def seconds(index: int, frames_per_feature: int, fps: float) -> float:
    """Feature index -> seconds from the start of the reference (index * frames per feature / fps)."""
    return index * frames_per_feature / fps
