"""Library search served by `vreloc serve` beside the model: one process, the same ports, TLS, checks and metrics.

Queried with TF Serving's stock client stub over TLS gRPC, and with a plain HTTPS client over REST.
"""
import json
import ssl
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest

from helpers import runs as H
from helpers.records import TINY_DIM
from helpers.tls import self_signed


def _index(path, run, n=6, seed=0):
    from vreloc_tf.search.embedding import Embedder, EmbeddingSpec
    from vreloc_tf.search.library import LibraryIndex, VideoEmbedding
    from vreloc_tf.data.artifacts import Run
    from vreloc_tf.search.relocalize import Relocalizer

    rng = np.random.default_rng(seed)
    spec = EmbeddingSpec("raw", (8, 16))
    reloc = Relocalizer.from_run(Run.open(run))
    index = LibraryIndex.create(path, TINY_DIM, spec, TINY_DIM, reloc.info)
    embedder = Embedder(spec, TINY_DIM)
    videos = []
    for i in range(n):
        feats = rng.normal(size=(40, TINY_DIM)).astype(np.float32)
        videos.append(VideoEmbedding(f"vid{i}", "test", i, 1, 5, feats, *embedder.windows(feats), fps=16.0))
    index.append(videos)
    return videos


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """The model export and search of an index in one server: TLS on gRPC and REST, metrics on."""
    from serving.metrics import PROMETHEUS_PATH
    from serving.server import start_server

    root = tmp_path_factory.mktemp("served")
    videos = _index(str(root / "ix"), tiny_run)
    base = H.export_copy(str(root), seed=0, xla=False)
    cert, key = self_signed(root)
    handle = start_server(base, port=0, rest_port=0, poll_interval=0, tls_cert=cert, tls_key=key,
                          index=str(root / "ix"), metrics_path=PROMETHEUS_PATH)
    with open(cert, "rb") as fh:
        credentials = grpc.ssl_channel_credentials(root_certificates=fh.read())
    channel = grpc.secure_channel(f"localhost:{handle.port}", credentials)
    https = ssl.create_default_context(cafile=cert)
    yield {"handle": handle, "channel": channel, "videos": videos, "https": https, "cert": cert, "base": base,
           "rest": f"https://localhost:{handle.rest_port}"}
    channel.close()
    handle.stop(grace=1)


def _request(query, top_k=None, name="search", dtype=np.float32):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs["query"].CopyFrom(tf.make_tensor_proto(np.asarray(query, dtype)))
    if top_k is not None:
        req.inputs["top_k"].CopyFrom(tf.make_tensor_proto(np.int32(top_k)))
    return req


def _stub(served):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(served["channel"])


def _rest(served, path, body=None):
    """(HTTP status, JSON body) over HTTPS."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(served["rest"] + path, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=60, context=served["https"]) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_stock_client_gets_top_k_tensors_over_tls(served):
    import tensorflow as tf

    videos = served["videos"]
    resp = _stub(served).Predict(_request(videos[2].features[10:20], top_k=3), timeout=60)
    ids = [v.decode() for v in tf.make_ndarray(resp.outputs["video_id"])]
    score = tf.make_ndarray(resp.outputs["score"])
    start, end = tf.make_ndarray(resp.outputs["start_index"]), tf.make_ndarray(resp.outputs["end_index"])
    assert len(ids) == 3 and set(ids) <= {v.video_id for v in videos} and len(set(ids)) == 3
    assert list(score) == sorted(score, reverse=True)
    assert np.all(start >= 5) and np.all(end > start) and np.all(end <= 45)  # source-video steps (window starts at 5)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["start_seconds"]), start * 16 / 16.0, rtol=1e-5)
    assert resp.model_spec.name == "search" and resp.model_spec.version.value == 1


def test_tls_grpc_and_rest_give_the_same_search_answer(served):
    import tensorflow as tf

    query = served["videos"][4].features[3:15]
    resp = _stub(served).Predict(_request(query, top_k=4), timeout=60)
    status, body = _rest(served, "/v1/models/search:predict", {"inputs": {"query": query.tolist(), "top_k": 4}})
    assert status == 200, body
    outputs = json.loads(body)["outputs"]
    assert outputs["video_id"] == [v.decode() for v in tf.make_ndarray(resp.outputs["video_id"])]
    for name in ("start_index", "end_index"):
        assert outputs[name] == tf.make_ndarray(resp.outputs[name]).tolist()
    np.testing.assert_array_equal(np.float32(outputs["score"]), tf.make_ndarray(resp.outputs["score"]))


def test_the_model_is_served_beside_search(served):
    from serving.client import predict

    rng = np.random.default_rng(0)
    query = rng.standard_normal((6, H.FEATURE_DIM)).astype(np.float32)
    reference = rng.standard_normal((50, H.FEATURE_DIM)).astype(np.float32)
    out = predict(f"localhost:{served['handle'].port}", query, reference, H.MODEL_NAME, tls_ca=served["cert"],
                  timeout=60)
    assert out["probabilities"].shape == (50, 4)
    status, body = _rest(served, f"/v1/models/{H.MODEL_NAME}")
    assert status == 200 and json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = _rest(served, "/v1/models/search/metadata")
    assert status == 200
    signature = json.loads(body)["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sorted(signature["inputs"]) == ["query", "top_k"] and "video_id" in signature["outputs"]


@pytest.mark.parametrize("query,name,code,text", [
    (np.ones((5, TINY_DIM + 1)), "search", grpc.StatusCode.INVALID_ARGUMENT, "9-d features but the index holds 8-d"),
    (np.ones((5, TINY_DIM)), "other", grpc.StatusCode.NOT_FOUND, "not served"),
    (np.ones((0, TINY_DIM)), "search", grpc.StatusCode.INVALID_ARGUMENT, "expected shape [Lq, D]"),
    (np.ones((200, TINY_DIM)), "search", grpc.StatusCode.INVALID_ARGUMENT, "--max-query-length"),
])
def test_bad_requests_get_tf_serving_codes(served, query, name, code, text):
    with pytest.raises(grpc.RpcError) as info:
        _stub(served).Predict(_request(query, name=name), timeout=60)
    assert info.value.code() == code and text in info.value.details()


def _vm_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


@pytest.mark.parametrize("case", ["top_k declares [5e8]", "query declares [2048, D] with 40 bytes",
                                  "query declares [100, D] with one float_val"])
def test_a_small_search_request_declaring_a_huge_shape_is_refused_before_allocation(served, case):
    """Issue #25 row 1: a 2 KB request declaring top_k [5e8] made the search server allocate 2 GB (3.6 s)."""
    request = _request(served["videos"][0].features[:10], top_k=3)
    if case.startswith("top_k"):
        proto = request.inputs["top_k"]
        del proto.tensor_shape.dim[:]
        proto.tensor_shape.dim.add().size = 500_000_000
    else:
        proto = request.inputs["query"]
        proto.ClearField("tensor_content")
        proto.float_val.append(0.5)
        del proto.tensor_shape.dim[:]
        for size in ((2048, TINY_DIM) if "2048" in case else (100, TINY_DIM)):
            proto.tensor_shape.dim.add().size = size
    assert request.ByteSize() < 2048
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak RSS (VmHWM) to the RSS now
        fh.write("5")
    before = _vm_kb("VmRSS")
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        _stub(served).Predict(request, timeout=30)
    seconds = time.monotonic() - started
    peak_growth_mb = (_vm_kb("VmHWM") - before) / 1024
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert seconds < 0.5 and peak_growth_mb < 50, (seconds, peak_growth_mb)
    assert ("top_k" in info.value.details()) == case.startswith("top_k")


def _scrape(served):
    from prometheus_client.parser import text_string_to_metric_families

    status, body = _rest(served, "/monitoring/prometheus/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _count(samples, model, status, entrypoint):
    return sum(value for (name, labels), value in samples.items()
               if name == ":tensorflow:serving:request_count_total" and dict(labels)["model_name"] == model
               and dict(labels)["status"] == status and dict(labels)["entrypoint"] == entrypoint)


def test_prometheus_metrics_count_the_requests_sent(served):
    from serving.client import predict

    before = _scrape(served)
    query = served["videos"][1].features[:12]
    for _ in range(3):
        _stub(served).Predict(_request(query, top_k=2), timeout=60)
    for _ in range(2):
        assert _rest(served, "/v1/models/search:predict", {"inputs": {"query": query.tolist()}})[0] == 200
    with pytest.raises(grpc.RpcError):
        _stub(served).Predict(_request(np.ones((5, TINY_DIM + 1))), timeout=60)
    rng = np.random.default_rng(1)
    predict(f"localhost:{served['handle'].port}", rng.standard_normal((4, H.FEATURE_DIM)).astype(np.float32),
            rng.standard_normal((30, H.FEATURE_DIM)).astype(np.float32), H.MODEL_NAME, tls_ca=served["cert"],
            timeout=60)
    after = _scrape(served)
    for model, status, entrypoint, sent in (("search", "OK", "GRPC", 3), ("search", "OK", "REST", 2),
                                            ("search", "INVALID_ARGUMENT", "GRPC", 1), (H.MODEL_NAME, "OK", "GRPC", 1)):
        assert _count(after, model, status, entrypoint) - _count(before, model, status, entrypoint) == sent, \
            (model, status, entrypoint)
    latency = [v for (name, labels), v in after.items()
               if name == ":tensorflow:serving:request_latency_count" and dict(labels)["model_name"] == "search"]
    assert sum(latency) >= 6
    loaded = {dict(labels)["model_name"]: dict(labels)["version"] for (name, labels), v in after.items()
              if name == ":vreloc:serving:loaded_version" and v == 1}
    assert loaded == {"search": "1", H.MODEL_NAME: "1"}
    batches = [v for (name, labels), v in after.items()
               if name == ":tensorflow:serving:batching_session:processed_batch_size_count"]
    assert sum(batches) >= 1


def test_search_alone_and_a_corrupt_index_never_serves(tmp_path, tiny_run):
    from serving.server import start_server
    from vreloc_tf.search.library import IndexError_

    _index(str(tmp_path / "ix"), tiny_run, n=2)
    handle = start_server(index=str(tmp_path / "ix"), port=0, poll_interval=0)
    try:
        assert sorted(handle.models) == ["search"]
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(_request(np.ones((4, TINY_DIM)), name=H.MODEL_NAME), timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert len(stub.Predict(_request(np.ones((4, TINY_DIM)), top_k=1), timeout=60).outputs["score"]
                       .tensor_content) == 4
    finally:
        handle.stop(grace=1)
    with open(tmp_path / "ix" / "index.faiss", "r+b") as fh:
        fh.truncate(40)
    with pytest.raises(IndexError_, match="truncated"):
        start_server(index=str(tmp_path / "ix"), port=0, poll_interval=0)


def test_serve_passes_tls_rest_and_metrics_flags_with_an_index(monkeypatch, tmp_path):
    """Issue #25 row 2: --tls-cert/--tls-key/--rest-port were silently ignored with --index."""
    import serving.server
    from vreloc.cli import main

    seen = {}

    def fake_start_server(*args, **kwargs):
        seen.update(kwargs, args=args)
        raise SystemExit(0)

    monkeypatch.setattr(serving.server, "start_server", fake_start_server)
    (tmp_path / "ix").mkdir()
    with pytest.raises(SystemExit):
        main(["serve", "--index", str(tmp_path / "ix"), "--tls-cert", "c.pem", "--tls-key", "k.pem",
              "--rest-port", "0", "--enable-prometheus", "--port", "0"])
    assert seen["index"] == str(tmp_path / "ix") and seen["args"][0] is None
    assert (seen["tls_cert"], seen["tls_key"], seen["rest_port"]) == ("c.pem", "k.pem", 0)
    assert seen["metrics_path"] == "/monitoring/prometheus/metrics"


def test_monitoring_config_file_like_tf_serving(tmp_path):
    from serving.metrics import read_monitoring_config
    from vreloc_tf.errors import InputError

    path = tmp_path / "monitoring.config"
    path.write_text('prometheus_config {\n  enable: true,\n  path: "/metrics"\n}\n')
    assert read_monitoring_config(str(path)) == "/metrics"
    path.write_text("prometheus_config { enable: false }")
    assert read_monitoring_config(str(path)) is None
    path.write_text("prometheus_config { enable: yes }")
    with pytest.raises(InputError, match="enable: true or enable: false"):
        read_monitoring_config(str(path))
    path.write_text("prometheus_config { enable: true, pth: \"/m\" }")
    with pytest.raises(InputError, match="pth"):
        read_monitoring_config(str(path))


def test_an_index_built_without_a_model_serves_frame_level_results(tmp_path):
    """No run anywhere: search re-localizes with the frame-level method (scores are mean cosines)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.server import start_server
    from vreloc_tf.search.embedding import Embedder, EmbeddingSpec
    from vreloc_tf.search.library import LibraryIndex, VideoEmbedding

    rng = np.random.default_rng(1)
    proto = rng.normal(size=TINY_DIM).astype(np.float32) * 3  # an action: its frames alike, plus noise
    spec = EmbeddingSpec("raw", (8,))
    index = LibraryIndex.create(str(tmp_path / "ix"), TINY_DIM, spec, TINY_DIM, None)
    videos = []
    for i in range(4):
        feats = rng.normal(size=(30, TINY_DIM)).astype(np.float32)
        if i == 1:
            feats[5:15] += proto
        videos.append(VideoEmbedding("same" if i < 2 else f"vid{i}", "test", i, -1, 40 * i, feats,
                                     *Embedder(spec, TINY_DIM).windows(feats)))
    index.append(videos)
    handle = start_server(index=str(tmp_path / "ix"), port=0, poll_interval=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                _request(proto + rng.normal(size=(10, TINY_DIM)), top_k=5), timeout=60)
    finally:
        handle.stop(grace=1)
    ids = [v.decode() for v in tf.make_ndarray(resp.outputs["video_id"])]
    score = tf.make_ndarray(resp.outputs["score"])
    assert ids[0] == "same" and sorted(ids) == ["same", "vid2", "vid3"]  # two pieces of "same": one result
    assert 40 + 3 <= tf.make_ndarray(resp.outputs["start_index"])[0] <= 40 + 7  # the planted [45, 55)
    assert score[0] > 0.7 > score[1] and np.all(np.abs(score) <= 1.0 + 1e-6)
