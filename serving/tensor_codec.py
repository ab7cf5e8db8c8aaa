"""TensorProto <-> NumPy for the signature's tensors, and the one home of the TensorProto dtype codes.

Why not ``tf.make_ndarray`` / ``tf.make_tensor_proto`` on the hot path: each costs
more than the rest of a request's handling together (Python dispatch per call),
and a 632 KB request is the common case. Packed ``tensor_content`` is what
``tf.make_tensor_proto`` writes and what every TF Serving client reads, so the
fast paths view and write those bytes directly; anything else (values in
``float_val``/``int_val``, other dtypes) takes TensorFlow's general path.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from serving.validation import InvalidRequest

# NumPy dtype name -> (TensorProto DataType enum value, its name), tensorflow/core/framework/types.proto.
DTYPES = {"float32": (1, "DT_FLOAT"), "int32": (3, "DT_INT32")}
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
