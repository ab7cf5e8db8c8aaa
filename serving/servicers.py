"""TF Serving's services over the served models: Predict, GetModelMetadata, GetModelStatus.

Why two layers: :func:`predict`, :func:`model_metadata` and :func:`model_status`
take and return the ``tensorflow_serving.apis`` protos and raise
:class:`~serving.status.ServingError` with TF Serving's code; the gRPC
servicers below only turn that error into ``context.abort``. Any other
transport answers from the same functions, so validation and codes cannot
drift apart between transports.

Codes (TF Serving's): unknown model or version NOT_FOUND, unknown label
INVALID_ARGUMENT, unknown signature FAILED_PRECONDITION, a malformed request
INVALID_ARGUMENT naming the input (serving/validation.py), a client that gave up
CANCELLED, work that would outlast the deadline DEADLINE_EXCEEDED, anything unforeseen
INTERNAL (and the server keeps serving).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict, Optional

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving import signature as sig
from serving.batching import Abandoned, WouldMissDeadline
from serving.status import ServingError
from serving.tensor_codec import fill_tensor_proto

log = logging.getLogger("serving.servicers")
Models = Dict[str, "object"]  # name -> ServedModel (serving/model_manager.py) or SearchModel (serving/search_servable.py)


def find_model(models: Models, model_spec):
    model = models.get(model_spec.name)
    if model is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Servable not found for request: model {model_spec.name!r} is not served "
                           f"(served: {', '.join(sorted(models))})")
    return model


def predict(models: Models, request, is_active: Callable[[], bool] = lambda: True, deadline: Optional[float] = None,
            metrics=None, entrypoint: str = "GRPC") -> "predict_pb2.PredictResponse":
    """Answer one PredictRequest for any servable (a model version, library search); ServingError when refused.

    ``is_active()`` is False once the client has given up (cancel) or the server
    stops: no further chunk of the request is run. ``deadline`` (``time.monotonic()``
    seconds) is when the client stops waiting: work that would outlast it is not
    started (a compile, serving/batching.py). ``metrics`` (serving/metrics.py)
    counts the request under its model, version and status.
    """
    import tensorflow as tf

    started = time.perf_counter()
    version, code, model_name = None, "OK", request.model_spec.name
    try:
        model = find_model(models, request.model_spec)
        servable = model.acquire(request.model_spec)
        version = servable.version
        try:
            signature_name = request.model_spec.signature_name or sig.SIGNATURE_NAME
            try:
                outputs = servable.predict(signature_name, request.inputs, list(request.output_filter), is_active,
                                           deadline)
            except WouldMissDeadline as exc:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)) from None
            except Abandoned:  # the client gave up (deadline, cancel) or the server stopped: work stopped
                raise ServingError(grpc.StatusCode.CANCELLED,
                                   "the client cancelled, its deadline passed or the server is stopping") from None
        finally:
            model.release(servable)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature_name
        for name, value in outputs.items():
            fill_tensor_proto(response.outputs[name], value)
        return response
    except ServingError as exc:  # every refusal (InvalidRequest included) carries its code
        code = exc.code.name
        raise
    except tf.errors.InvalidArgumentError as exc:  # what validation did not foresee
        code = "INVALID_ARGUMENT"
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, exc.message) from None
    except Exception as exc:  # noqa: BLE001 - answer INTERNAL, keep serving
        code = "INTERNAL"
        log.exception("Predict failed")
        raise ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}") from None
    finally:
        seconds = time.perf_counter() - started
        if metrics is not None:
            metrics.observe_request(model_name, version, code, "predict", entrypoint, seconds)
        log.debug("Predict model=%s version=%s %s status=%s via %s %.2f ms", model_name, version,
                  _shape_text(request.inputs), code, entrypoint, 1e3 * seconds)


def _shape_text(inputs) -> str:
    """What a request declares, for the log: ``B=.. Lq=.. Lr=..`` for a model request, else each input's dims."""
    dims = {name: [d.size for d in proto.tensor_shape.dim] for name, proto in inputs.items()}
    query, reference = dims.get(sig.QUERY, []), dims.get(sig.REFERENCE, [])
    if len(query) == 3 and len(reference) == 3:
        return f"B={query[0]} Lq={query[1]} Lr={reference[1]}"
    return " ".join(f"{name}={value}" for name, value in sorted(dims.items()))


def grpc_deadline(context) -> Optional[float]:
    """The client's deadline as ``time.monotonic()`` seconds, None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e9 else time.monotonic() + remaining


def model_metadata(models: Models, request) -> "get_model_metadata_pb2.GetModelMetadataResponse":
    """Answer a GetModelMetadataRequest: the SignatureDefMap of the version asked for (field signature_def)."""
    fields = list(request.metadata_field)
    if not fields:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
    for name in fields:
        if name != "signature_def":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
    model = find_model(models, request.model_spec)
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


def model_status(models: Models, request) -> "get_model_status_pb2.GetModelStatusResponse":
    """Answer a GetModelStatusRequest: AVAILABLE per served version, END with the error for failed loads."""
    model = models.get(request.model_spec.name)
    if model is None:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {request.model_spec.name!r}")
    version: Optional[int] = request.model_spec.version.value if request.model_spec.HasField("version") else None
    rows = model.status(version)
    if not rows:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find any versions of model {model.name} in {model.base_path}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, message in rows:
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        entry.status.SetInParent()  # error_code OK, as TF Serving answers (and prints in JSON)
        if message:
            entry.status.error_code = 2  # tensorflow.error.Code UNKNOWN
            entry.status.error_message = message
    return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict and GetModelMetadata (Classify etc. stay UNIMPLEMENTED)."""

    def __init__(self, models: Models, metrics=None):
        self.models = models
        self.metrics = metrics

    def Predict(self, request, context):
        try:
            return predict(self.models, request, context.is_active, grpc_deadline(context), self.metrics, "GRPC")
        except ServingError as exc:
            context.abort(exc.code, exc.message)

    def GetModelMetadata(self, request, context):
        try:
            return model_metadata(self.models, request)
        except ServingError as exc:
            log.debug("GetModelMetadata model=%s status=%s", request.model_spec.name, exc.code.name)
            context.abort(exc.code, exc.message)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: GetModelStatus (HandleReloadConfigRequest stays UNIMPLEMENTED)."""

    def __init__(self, models: Models):
        self.models = models

    def GetModelStatus(self, request, context):
        try:
            return model_status(self.models, request)
        except ServingError as exc:
            log.debug("GetModelStatus model=%s status=%s", request.model_spec.name, exc.code.name)
            context.abort(exc.code, exc.message)


def add_to_server(server: "grpc.Server", models: Models, metrics=None) -> None:
    """Register both services on a gRPC server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(models, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(models), server)
