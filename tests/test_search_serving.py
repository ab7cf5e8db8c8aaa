"""Library search over gRPC (serving/search_service.py), queried with TF Serving's stock client stub."""
import grpc
import numpy as np
import pytest

from helpers.records import TINY_DIM


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    from serving.search_service import start_search_server
    from vreloc_tf.search.embedding import Embedder, EmbeddingSpec
    from vreloc_tf.search.library import LibraryIndex, VideoEmbedding
    from vreloc_tf.search.relocalize import Relocalizer

    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("served") / "ix")
    spec = EmbeddingSpec("raw", (8, 16))
    reloc = Relocalizer.from_run(tiny_run)
    index = LibraryIndex.create(path, TINY_DIM, spec, TINY_DIM, reloc.info)
    embedder = Embedder(spec, TINY_DIM)
    videos = []
    for i in range(6):
        feats = rng.normal(size=(40, TINY_DIM)).astype(np.float32)
        videos.append(VideoEmbedding(f"vid{i}", "test", i, 1, 5, feats, *embedder.windows(feats), fps=16.0))
    index.append(videos)
    server, port = start_search_server(path, port=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, videos
    channel.close()
    server.stop(None)


def _request(query, top_k=None, name="search"):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs["query"].CopyFrom(tf.make_tensor_proto(np.asarray(query, np.float32)))
    if top_k is not None:
        req.inputs["top_k"].CopyFrom(tf.make_tensor_proto(np.int32(top_k)))
    return req


def test_stock_client_gets_top_k_tensors(served):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel, videos = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    resp = stub.Predict(_request(videos[2].features[10:20], top_k=3), timeout=60)
    ids = [v.decode() for v in tf.make_ndarray(resp.outputs["video_id"])]
    score = tf.make_ndarray(resp.outputs["score"])
    start, end = tf.make_ndarray(resp.outputs["start_index"]), tf.make_ndarray(resp.outputs["end_index"])
    assert len(ids) == 3 and set(ids) <= {v.video_id for v in videos} and len(set(ids)) == 3
    assert list(score) == sorted(score, reverse=True)
    assert np.all(start >= 5) and np.all(end > start) and np.all(end <= 45)  # source-video steps (window starts at 5)
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["start_seconds"]), start * 16 / 16.0, rtol=1e-5)


@pytest.mark.parametrize("query,name,code,text", [
    (np.ones((5, TINY_DIM + 1)), "search", grpc.StatusCode.INVALID_ARGUMENT, "9-d features but the index holds 8-d"),
    (np.ones((5, TINY_DIM)), "other", grpc.StatusCode.NOT_FOUND, "not served"),
    (np.ones((0, TINY_DIM)), "search", grpc.StatusCode.INVALID_ARGUMENT, "expected shape [Lq, D]"),
])
def test_bad_requests_get_tf_serving_codes(served, query, name, code, text):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel, _ = served
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_request(query, name=name), timeout=60)
    assert info.value.code() == code and text in info.value.details()


def test_a_corrupt_index_never_serves(tmp_path, tiny_run):
    from serving.search_service import start_search_server
    from vreloc_tf.search.embedding import EmbeddingSpec
    from vreloc_tf.search.library import IndexError_, LibraryIndex, VideoEmbedding

    path = str(tmp_path / "ix")
    index = LibraryIndex.create(path, TINY_DIM, EmbeddingSpec("raw", (8,)), TINY_DIM, {"run": tiny_run})
    feats = np.ones((10, TINY_DIM), np.float32)
    index.append([VideoEmbedding("a", "test", 0, 1, 0, feats, np.array([[0, 8, 8]], np.int32),
                                 np.ones((1, TINY_DIM), np.float32) / np.sqrt(TINY_DIM))])
    with open(f"{path}/index.faiss", "r+b") as fh:
        fh.truncate(40)
    with pytest.raises(IndexError_, match="truncated"):
        start_search_server(path, port=0)


def test_an_index_built_without_a_model_serves_frame_level_results(tmp_path):
    """No run anywhere: the service re-localizes with the frame-level method (scores are mean cosines)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.search_service import start_search_server
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
    server, port = start_search_server(str(tmp_path / "ix"), port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                _request(proto + rng.normal(size=(10, TINY_DIM)), top_k=5), timeout=60)
    finally:
        server.stop(None)
    ids = [v.decode() for v in tf.make_ndarray(resp.outputs["video_id"])]
    score = tf.make_ndarray(resp.outputs["score"])
    assert ids[0] == "same" and sorted(ids) == ["same", "vid2", "vid3"]  # two pieces of "same": one result
    assert 40 + 3 <= tf.make_ndarray(resp.outputs["start_index"])[0] <= 40 + 7  # the planted [45, 55)
    assert score[0] > 0.7 > score[1] and np.all(np.abs(score) <= 1.0 + 1e-6)
