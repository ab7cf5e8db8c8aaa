"""Checks on a Predict request before it reaches the model.

Why check here rather than let the graph fail: a bad request must come back as
INVALID_ARGUMENT with a message naming the input at fault, not as an opaque
INTERNAL error from deep in a kernel; and some bad requests would not fail at
all (a length beyond the tensor reads padding, NaN poisons the softmax, a huge
Lr exhausts memory for every other client). The checks are plain NumPy so they
cost microseconds and are testable without a server.

Cost first: :func:`check_shapes` needs only the shapes, so the transports call
it on the shapes a request *declares* before converting anything
(``serving.tensor_codec.check_declared``, ``serving.rest_json``); the value checks
(lengths, NaN/Inf) follow on the converted arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from serving import signature as sig
from serving.status import Refusal
from vreloc_tf.finite import first_non_finite


_SPECS = {spec.name: spec for spec in sig.INPUTS}


class InvalidRequest(Refusal, ValueError):
    """The request is malformed (INVALID_ARGUMENT); the message names the input and what is wrong with it."""


@dataclass(frozen=True)
class RequestLimits:
    """Largest request the server accepts (defaults in serving/signature.py, documented in serving/README.md)."""

    max_query_length: int = sig.MAX_QUERY_LENGTH
    max_reference_length: int = sig.MAX_REFERENCE_LENGTH
    max_batch_size: int = sig.MAX_BATCH_SIZE


def check_names(names) -> None:
    """Every input of the signature and nothing else."""
    names = set(names)
    missing = [n for n in sig.INPUT_NAMES if n not in names]
    if missing:
        raise InvalidRequest(f"missing input(s) {', '.join(repr(n) for n in missing)}; "
                             f"the signature '{sig.SIGNATURE_NAME}' needs {', '.join(sig.INPUT_NAMES)}")
    extra = sorted(names - set(sig.INPUT_NAMES))
    if extra:
        raise InvalidRequest(f"unknown input(s) {', '.join(repr(n) for n in extra)}; "
                             f"the signature '{sig.SIGNATURE_NAME}' takes only {', '.join(sig.INPUT_NAMES)}")


def check_dtype(name: str, dtype_name: str) -> None:
    """An input's dtype (a NumPy dtype name) is the signature's."""
    spec = _SPECS.get(name)
    if spec is not None and dtype_name != spec.dtype:
        raise InvalidRequest(f"input '{name}': dtype must be {spec.dtype} ({spec.datatype}), got {dtype_name}")


def check_shapes(shapes: Mapping[str, Sequence[int]], feature_dim: int, limits: RequestLimits = RequestLimits()) -> None:
    """Shapes against the signature and the limits: what a request costs, known before any value is read.

    Called on the shapes a request *declares* (TensorProto dims, JSON nesting)
    before anything is converted, so a 13 KB request declaring a billion
    elements is refused without allocating them.
    """
    check_names(shapes)
    for spec in sig.INPUTS:
        shape = list(shapes[spec.name])
        if len(shape) != spec.rank:
            raise InvalidRequest(f"input '{spec.name}': rank must be {spec.rank} (shape {_shape_text(spec.shape)}), "
                                 f"got shape {shape}")
        if spec.shape[-1] == "D" and shape[-1] != feature_dim:
            raise InvalidRequest(f"input '{spec.name}': feature dim (last axis) must be {feature_dim}, got {shape[-1]}")

    batch = shapes[sig.QUERY][0]
    for name in sig.INPUT_NAMES:
        if shapes[name][0] != batch:
            raise InvalidRequest(f"input '{name}': batch size {shapes[name][0]} differs from "
                                 f"'{sig.QUERY}' batch size {batch}; every input needs one row per pair")
    if batch < 1:
        raise InvalidRequest(f"input '{sig.QUERY}': empty batch (batch size 0)")
    if batch > limits.max_batch_size:
        raise InvalidRequest(f"input '{sig.QUERY}': batch size {batch} is above the server limit "
                             f"{limits.max_batch_size} (--max-batch-size)")
    for name, limit, flag in ((sig.QUERY, limits.max_query_length, "--max-query-length"),
                              (sig.REFERENCE, limits.max_reference_length, "--max-reference-length")):
        steps = shapes[name][1]
        if steps > limit:
            raise InvalidRequest(f"input '{name}': {steps} steps is above the server limit {limit} ({flag})")


def validate_inputs(arrays: Mapping[str, np.ndarray], feature_dim: int, limits: RequestLimits = RequestLimits()) -> None:
    """Raise InvalidRequest naming the first input at fault; return None for a servable request."""
    check_names(arrays)
    for name, array in arrays.items():
        check_dtype(name, array.dtype.name)
    check_shapes({name: array.shape for name, array in arrays.items()}, feature_dim, limits)

    for tensor_name, length_name in ((sig.QUERY, sig.QUERY_LENGTH), (sig.REFERENCE, sig.REFERENCE_LENGTH)):
        steps = arrays[tensor_name].shape[1]
        lengths = arrays[length_name]
        bad = np.flatnonzero(lengths <= 0)
        if bad.size:
            raise InvalidRequest(f"input '{length_name}': lengths must be >= 1, got {int(lengths[bad[0]])} at row {int(bad[0])}")
        bad = np.flatnonzero(lengths > steps)
        if bad.size:
            raise InvalidRequest(f"input '{length_name}': length {int(lengths[bad[0]])} at row {int(bad[0])} is beyond "
                                 f"'{tensor_name}', which has {steps} steps")

    for name in (sig.QUERY, sig.REFERENCE):
        where = first_non_finite(arrays[name])  # one reduction when all is well (vreloc_tf/finite.py)
        if where is not None:
            raise InvalidRequest(f"input '{name}': NaN or Inf at row {where[0]}, step {where[1]}")


def _shape_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
