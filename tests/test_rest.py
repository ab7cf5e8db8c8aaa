"""TF Serving's REST API on --rest-port, exercised with a real HTTP client (urllib) against a running server.

Status and metadata, predict in the columnar ("inputs") and row ("instances")
formats giving the gRPC answer, and refusals with TF Serving's HTTP statuses.
"""
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers import runs as H
from serving import signature as sig
from serving.client import predict
from serving.rest_json import arrays_from_json, max_body_bytes
from serving.server import start_server
from serving.validation import InvalidRequest, RequestLimits, check_shapes


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = H.export_copy(str(tmp_path_factory.mktemp("rest")), seed=0, xla=False)
    handle = start_server(base, port=0, rest_port=0, poll_interval=0)
    yield handle, f"http://127.0.0.1:{handle.rest_port}", f"127.0.0.1:{handle.port}"
    handle.stop(grace=1)


def call(url, body=None, raw=None):
    """(HTTP status, parsed JSON body) of a GET (no body) or a POST."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _pair(seed, lq=6, lr=50):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((lq, H.FEATURE_DIM)).astype(np.float32),
            rng.standard_normal((lr, H.FEATURE_DIM)).astype(np.float32))


def test_model_status_like_tf_serving(served):
    _, url, _ = served
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}")
    assert status == 200
    assert body == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
    assert call(f"{url}/v1/models/{H.MODEL_NAME}/versions/1") == (200, body)
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}/versions/9")
    assert status == 404 and "version 9" in body["error"]
    status, body = call(f"{url}/v1/models/nope")
    assert status == 404 and "nope" in body["error"]


def test_metadata_lists_the_signature(served):
    _, url, _ = served
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": H.MODEL_NAME, "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"][sig.SIGNATURE_NAME]
    assert signature["method_name"] == sig.METHOD_NAME
    assert sorted(signature["inputs"]) == sorted(sig.INPUT_NAMES)
    assert sorted(signature["outputs"]) == sorted(sig.OUTPUT_NAMES)
    dims = [int(d["size"]) for d in signature["inputs"][sig.QUERY]["tensor_shape"]["dim"]]
    assert dims == [-1, -1, H.FEATURE_DIM]


def test_predict_with_inputs_gives_the_grpc_segment(served):
    _, url, target = served
    query, reference = _pair(1)
    want = predict(target, query, reference, H.MODEL_NAME, timeout=120)
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}:predict", {"inputs": {
        "query": query[None].tolist(), "query_length": [len(query)],
        "reference": reference[None].tolist(), "reference_length": [len(reference)]}})
    assert status == 200, body
    out = body["outputs"]
    assert sorted(out) == sorted(sig.OUTPUT_NAMES)
    assert (out["start"], out["end"]) == ([want["start"]], [want["end"]])
    np.testing.assert_allclose(out["score"][0], want["score"], rtol=1e-6)
    np.testing.assert_allclose(np.array(out["probabilities"][0]), want["probabilities"], atol=1e-6)
    # the same through /versions/1
    status, again = call(f"{url}/v1/models/{H.MODEL_NAME}/versions/1:predict", {"inputs": {
        "query": query[None].tolist(), "query_length": [len(query)],
        "reference": reference[None].tolist(), "reference_length": [len(reference)]}})
    assert status == 200 and again["outputs"]["start"] == out["start"]


def test_predict_with_instances_of_different_lengths(served):
    _, url, target = served
    pairs = [_pair(2, 6, 50), _pair(3, 9, 37), _pair(4, 4, 61)]
    rows = [{"query": q.tolist(), "query_length": len(q), "reference": r.tolist(), "reference_length": len(r)}
            for q, r in pairs]
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}:predict", {"instances": rows})
    assert status == 200, body
    assert len(body["predictions"]) == 3
    for (q, r), row in zip(pairs, body["predictions"]):
        want = predict(target, q, r, H.MODEL_NAME, timeout=120)
        assert (row["start"], row["end"]) == (want["start"], want["end"])
        assert np.array(row["probabilities"]).shape == (len(r), 4)
        np.testing.assert_allclose(np.array(row["probabilities"]), want["probabilities"], atol=1e-5)


@pytest.mark.parametrize("case, body, status, words", [
    ("wrong-feature-dim", lambda q, r: {"inputs": {"query": q[None, :, :5].tolist(), "query_length": [6],
                                                    "reference": r[None].tolist(), "reference_length": [50]}},
     400, ["'query'", "feature dim", "8", "5"]),
    ("length-beyond", lambda q, r: {"inputs": {"query": q[None].tolist(), "query_length": [7],
                                                "reference": r[None].tolist(), "reference_length": [50]}},
     400, ["'query_length'", "beyond"]),
    ("missing-input", lambda q, r: {"inputs": {"query": q[None].tolist(), "query_length": [6],
                                                "reference": r[None].tolist()}}, 400, ["missing", "'reference_length'"]),
    ("fractional-length", lambda q, r: {"inputs": {"query": q[None].tolist(), "query_length": [6.5],
                                                    "reference": r[None].tolist(), "reference_length": [50]}},
     400, ["'query_length'", "integers"]),
    ("ragged", lambda q, r: {"inputs": {"query": [q[0].tolist(), q[1, :3].tolist()], "query_length": [1],
                                         "reference": r[None].tolist(), "reference_length": [50]}},
     400, ["'query'"]),
    ("above-limit", lambda q, r: {"inputs": {"query": q[None].tolist(), "query_length": [6],
                                              "reference": np.zeros((1, sig.MAX_REFERENCE_LENGTH + 1, 8)).tolist(),
                                              "reference_length": [50]}},
     400, ["'reference'", "above the server limit"]),
    ("both-formats", lambda q, r: {"inputs": {}, "instances": []}, 400, ["exactly one of 'inputs'"]),
    ("unknown-signature", lambda q, r: {"signature_name": "classify", "inputs": {
        "query": q[None].tolist(), "query_length": [6], "reference": r[None].tolist(), "reference_length": [50]}},
     400, ['"classify"']),
])
def test_refusals_have_tf_serving_http_statuses(served, case, body, status, words):
    _, url, _ = served
    query, reference = _pair(5)
    got, answer = call(f"{url}/v1/models/{H.MODEL_NAME}:predict", body(query, reference))
    assert got == status, answer
    for word in words:
        assert word in answer["error"], (word, answer)


def test_malformed_paths_bodies_and_oversized_bodies(served):
    handle, url, _ = served
    assert call(f"{url}/v1/models/{H.MODEL_NAME}:predict", raw=b"{not json")[0] == 400
    assert call(f"{url}/v1/models/nope:predict", {"inputs": {}})[0] == 404
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}:classify", {"inputs": {}})
    assert status == 400 and "Malformed request" in body["error"]
    limit = max_body_bytes(_served_version(handle))
    status, body = call(f"{url}/v1/models/{H.MODEL_NAME}:predict", raw=b" " * (limit + 1))
    assert status == 413 and "raise --max-batch-size" in body["error"]
    # the server still answers
    assert call(f"{url}/v1/models/{H.MODEL_NAME}")[0] == 200


class _SmallServable:
    """The REST side of the servable interface (serving/model_servable.py) over small limits, for unit tests."""

    batched = True
    model_name = H.MODEL_NAME
    signatures = {sig.SIGNATURE_NAME: None}

    def __init__(self, limits):
        self.limits = limits

    def input_dtypes(self, signature_name):
        return {spec.name: spec.dtype for spec in sig.INPUTS}

    def check_shapes(self, signature_name, shapes):
        check_shapes(shapes, 8, self.limits)

    def max_request_elements(self):
        return self.limits.max_batch_size * ((self.limits.max_query_length + self.limits.max_reference_length) * 8 + 2)


def _served_version(handle):
    from tensorflow_serving.apis import model_pb2

    model = handle.models[H.MODEL_NAME]
    servable = model.acquire(model_pb2.ModelSpec(name=H.MODEL_NAME))
    model.release(servable)
    return servable


def test_json_shapes_are_checked_before_conversion(monkeypatch):
    from serving import rest_json

    servable = _SmallServable(RequestLimits(max_query_length=20, max_reference_length=400, max_batch_size=4))

    def never(*args):
        raise AssertionError("converted before the shape check")

    monkeypatch.setattr(rest_json, "_to_array", never)
    body = {"inputs": {"query": [[[0.0] * 8] * 3], "query_length": [3], "reference": [[[0.0] * 8] * 5000],
                       "reference_length": [3]}}
    with pytest.raises(InvalidRequest, match="'reference': 5000 steps is above the server limit 400"):
        arrays_from_json(body, servable, sig.SIGNATURE_NAME)
    rows = [{"query": [[0.0] * 8] * 3, "query_length": 3, "reference": [[0.0] * 8] * 30, "reference_length": 3}] * 5
    with pytest.raises(InvalidRequest, match="batch size 5 is above the server limit 4"):
        arrays_from_json({"instances": rows}, servable, sig.SIGNATURE_NAME)
    assert max_body_bytes(servable) < 1 << 20
