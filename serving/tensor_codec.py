"""TensorProto <-> NumPy for the signature's tensors (the TensorProto dtype codes: serving.signature.DTYPES).

Why not ``tf.make_ndarray`` / ``tf.make_tensor_proto`` on the hot path: each costs
more than the rest of a request's handling together (Python dispatch per call),
and a 632 KB request is the common case. Packed ``tensor_content`` is what
``tf.make_tensor_proto`` writes and what every TF Serving client reads, so the
fast paths view and write those bytes directly; anything else (values in
``float_val``/``int_val``, other dtypes) takes TensorFlow's general path.

:func:`check_declared` reads only what a request declares (dtypes, shapes,
value counts), so its cost is checked before a single element is converted.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping

import numpy as np

from serving.signature import DTYPES
from serving.validation import InvalidRequest, RequestLimits, check_dtype, check_names, check_shapes

_BY_CODE = {code: np.dtype(name) for name, (code, _) in DTYPES.items()}


def dtype_code(name: str) -> int:
    """The TensorProto dtype enum value of a NumPy dtype name ('float32' -> 1)."""
    return DTYPES[name][0]


def packed_array(proto) -> "np.ndarray | None":
    """A read-only view of ``tensor_content`` for float32/int32 protos, as tf.make_ndarray reads it; else None."""
    dtype = _BY_CODE.get(proto.dtype)
    if dtype is None or proto.tensor_shape.unknown_rank:
        return None
    content = proto.tensor_content  # each read of a bytes field makes a new bytes object: read it once
    if not content:
        return None
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    needed = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if len(content) != needed:
        raise ValueError(f"tensor_content holds {len(content)} bytes; shape {shape} of {dtype.name} needs {needed}")
    return np.frombuffer(content, dtype).reshape(shape)


def declared_shape(name: str, proto) -> List[int]:
    """The shape a TensorProto declares (nothing converted)."""
    if proto.tensor_shape.unknown_rank:
        raise InvalidRequest(f"input '{name}': the TensorProto has an unknown rank; give its shape")
    shape = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input '{name}': negative dimension in shape {shape}")
    return shape


def check_value_count(name: str, proto, shape: List[int]) -> None:
    """The values of a TensorProto fill exactly its declared shape.

    The byte length of ``tensor_content``, or the count of the repeated value
    field (``float_val``/``int_val``), must equal the declared element count.
    (TensorFlow would broadcast a short repeated field to the full shape: one
    value declaring a billion elements would allocate them.)
    """
    dtype = _BY_CODE.get(proto.dtype)
    if dtype is None:
        return  # an unsupported dtype is refused by name (check_dtype)
    count = math.prod(shape)
    content = len(proto.tensor_content)
    if content:
        if content != count * dtype.itemsize:
            raise InvalidRequest(f"input '{name}': not a valid TensorProto: tensor_content holds {content} bytes; "
                                 f"shape {shape} of {dtype.name} needs {count * dtype.itemsize}")
        return
    field = "float_val" if dtype == np.float32 else "int_val"
    values = len(getattr(proto, field))
    if values != count:
        raise InvalidRequest(f"input '{name}': not a valid TensorProto: {field} holds {values} value(s); "
                             f"shape {shape} needs {count} (one per element)")


def check_declared(inputs: Mapping[str, "object"], feature_dim: int, limits: RequestLimits) -> None:
    """A PredictRequest's inputs against the signature and the limits, by what they declare, before decoding."""
    check_names(inputs)
    for name, proto in inputs.items():
        code = proto.dtype
        check_dtype(name, dtype_name_of(code))
    shapes = {name: declared_shape(name, proto) for name, proto in inputs.items()}
    check_shapes(shapes, feature_dim, limits)
    for name, proto in inputs.items():
        check_value_count(name, proto, shapes[name])


def dtype_name_of(code: int) -> str:
    """The NumPy-style name of a TensorProto dtype code ('float32' for 1), or 'DataType N' for an unknown code."""
    if code in _BY_CODE:
        return _BY_CODE[code].name
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(code).name
    except TypeError:
        return f"DataType {code}"


def decode_inputs(inputs: Mapping[str, "object"]) -> Dict[str, np.ndarray]:
    """TensorProto map of a PredictRequest -> NumPy arrays; a proto that does not decode is an InvalidRequest.

    Packed float32/int32 inputs come back as read-only views of the request's bytes.
    """
    import tensorflow as tf

    arrays = {}
    for name, proto in inputs.items():
        try:
            array = packed_array(proto)
            arrays[name] = tf.make_ndarray(proto) if array is None else array
        except Exception as exc:  # malformed content/shape, unsupported dtype
            raise InvalidRequest(f"input '{name}': not a valid TensorProto ({exc})") from None
    return arrays


def fill_tensor_proto(proto, array) -> None:
    """Write ``array`` into the (empty) TensorProto ``proto``: shape plus packed ``tensor_content``.

    Writing in place also saves copying a fresh proto into the response.
    """
    array = np.asarray(array)
    code = DTYPES.get(array.dtype.name, (None,))[0] if array.dtype.isnative else None
    if code is None:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = code
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = array.tobytes()
