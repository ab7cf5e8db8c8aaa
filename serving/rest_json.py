"""JSON <-> tensors for the REST API: how a TF Serving JSON body becomes arrays, and outputs become JSON.

Why a module of its own: this is the part of REST that knows dtypes, shapes and
TF Serving's JSON formats, and nothing of HTTP -- serving/rest.py calls it
between reading a body and predicting, and tests call it directly.

* A body above what the largest legal request needs as JSON
  (``JSON_BYTES_PER_VALUE * servable.max_request_elements() + JSON_OVERHEAD_BYTES``,
  :func:`max_body_bytes`) is refused unread; :func:`json_limits` gives
  serving/json_limits.py's scan the depth and counts a legal body can hold.
* Integers are range-checked into the signature's dtype (2**32 + 3 is refused,
  never wrapped to 3); booleans are not numbers; the shapes the JSON declares
  are checked by the servable before any value is converted.
* Rows of ``instances`` (only for a servable whose inputs all have a batch axis,
  ``servable.batched``) may differ in length; they are zero-padded to the longest
  row, which the lengths make harmless (the model reads
  ``query_length``/``reference_length``).
* Output: float32 outputs print as JSON numbers, and NaN/Inf as the tokens
  ``NaN``/``Infinity``/``-Infinity`` -- what ``json.dumps`` writes and what TF
  Serving writes too (RapidJSON with its NaN/Inf flag), although they are not
  strict JSON (Python's ``json`` reads them; ``jq`` does not). DT_STRING outputs
  print as UTF-8 text, or as ``{"b64": "..."}`` for an output whose name ends in
  ``_bytes`` or a value that is not UTF-8, as TF Serving writes them.
"""
from __future__ import annotations

import base64
from typing import Dict, List, Tuple

import numpy as np

from serving import signature as sig
from serving.json_limits import JsonLimits
from serving.tensor_codec import packed_array
from serving.validation import InvalidRequest

JSON_BYTES_PER_VALUE = 24  # "-0.123456789012345678, ": the longest a float32 prints as JSON, with separator
JSON_OVERHEAD_BYTES = 64 * 1024
FALLBACK_RANK = 8  # an input of unknown rank: the nesting allowed for it


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


def output_array(proto) -> np.ndarray:
    array = packed_array(proto)
    if array is None:  # int64, strings, values in repeated fields
        import tensorflow as tf

        array = tf.make_ndarray(proto)
    return array
