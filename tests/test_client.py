"""vreloc query and serving.client.predict against a server on loopback."""
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf

from helpers import runs as H
from serving import signature as sig
from serving.client import make_request, predict, seconds
from serving.server import start_server
from vreloc.cli import main as cli_main


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = H.export_copy(str(tmp_path_factory.mktemp("client")), seed=0, xla=False)
    handle = start_server(base, port=0, poll_interval=0)
    yield f"127.0.0.1:{handle.port}", os.path.join(base, "1")
    handle.stop(grace=1)


def _pair(rng, lq=7, lr=60):
    return (rng.standard_normal((lq, H.FEATURE_DIM)).astype(np.float32),
            rng.standard_normal((lr, H.FEATURE_DIM)).astype(np.float32))


def test_make_request_fills_the_signature_with_lengths_from_shapes():
    rng = np.random.default_rng(0)
    query, reference = _pair(rng)
    request = make_request(query.astype(np.float64), reference, "m", version=3)
    assert request.model_spec.name == "m" and request.model_spec.version.value == 3
    assert request.model_spec.signature_name == sig.SIGNATURE_NAME
    assert sorted(request.inputs) == sorted(sig.INPUT_NAMES)
    arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    for spec in sig.INPUTS:
        assert arrays[spec.name].dtype == np.dtype(spec.dtype), spec.name
        assert arrays[spec.name].ndim == spec.rank, spec.name
    np.testing.assert_array_equal(arrays["query"][0], query.astype(np.float32))
    assert arrays["query_length"].tolist() == [7] and arrays["reference_length"].tolist() == [60]
    labelled = make_request(query, reference, "m", version_label="canary")
    assert labelled.model_spec.version_label == "canary" and not labelled.model_spec.HasField("version")
    with pytest.raises(ValueError, match="query"):
        make_request(query[0], reference)


def test_predict_one_pair_and_a_batch_match_the_saved_model(server):
    target, version_path = server
    rng = np.random.default_rng(1)
    query, reference = _pair(rng)
    out = predict(target, query, reference, H.MODEL_NAME, timeout=30)
    arrays = {"query": query[None], "query_length": np.array([7], np.int32),
              "reference": reference[None], "reference_length": np.array([60], np.int32)}
    want = H.saved_model_outputs(version_path, arrays)
    assert isinstance(out["start"], int) and isinstance(out["end"], int) and isinstance(out["score"], float)
    assert (out["start"], out["end"]) == (int(want["start"][0]), int(want["end"][0]))
    np.testing.assert_allclose(out["score"], want["score"][0], rtol=1e-6)
    assert out["probabilities"].shape == (60, 4)
    assert out["version"] == 1 and out["model_name"] == H.MODEL_NAME

    batch = H.random_batch(rng, lq=(4, 7, 2), lr=(30, 12, 44))
    out = predict(target, batch["query"], batch["reference"], H.MODEL_NAME, query_length=batch["query_length"],
                  reference_length=batch["reference_length"], timeout=120)  # a new batch shape compiles first
    want = H.saved_model_outputs(version_path, batch)
    np.testing.assert_array_equal(out["start"], want["start"])
    np.testing.assert_array_equal(out["end"], want["end"])
    np.testing.assert_allclose(out["probabilities"], want["probabilities"], atol=1e-6)


def test_vreloc_query_prints_indices_seconds_and_score(server, tmp_path, capsys):
    target, _ = server
    query, reference = _pair(np.random.default_rng(2))
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "r.npy", reference)
    want = predict(target, query, reference, H.MODEL_NAME, timeout=120)
    code = cli_main(["query", "--server", target, "--query", str(tmp_path / "q.npy"), "--reference",
                     str(tmp_path / "r.npy"), "--model-name", H.MODEL_NAME, "--timeout", "30",
                     "--frames-per-feature", "16", "--fps", "29.97"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"start {want['start']}  end {want['end']}  (feature indices, end exclusive)" in out
    assert f"start {want['start'] * 16 / 29.97:.2f} s  end {want['end'] * 16 / 29.97:.2f} s" in out
    assert f"score {want['score']:.6f}" in out
    assert "version 1" in out
    assert seconds(30, 16, 30.0) == 16.0


def test_vreloc_query_reports_refusals_and_bad_files(server, tmp_path, capsys):
    target, _ = server
    rng = np.random.default_rng(3)
    np.save(tmp_path / "q5.npy", rng.standard_normal((6, 5)).astype(np.float32))  # wrong feature dim
    np.save(tmp_path / "r.npy", rng.standard_normal((40, H.FEATURE_DIM)).astype(np.float32))
    args = ["query", "--server", target, "--reference", str(tmp_path / "r.npy"), "--model-name", H.MODEL_NAME]
    assert cli_main(args + ["--query", str(tmp_path / "q5.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vreloc query: error: {target} answered INVALID_ARGUMENT: input 'query': feature dim")
    assert len(err.splitlines()) == 1
    assert cli_main(args + ["--query", str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy" in capsys.readouterr().err
    np.save(tmp_path / "q3d.npy", np.zeros((1, 6, H.FEATURE_DIM), np.float32))
    assert cli_main(args + ["--query", str(tmp_path / "q3d.npy")]) == 2
    assert "[L, D]" in capsys.readouterr().err
    assert cli_main(args + ["--query", str(tmp_path / "r.npy"), "--fps", "30"]) == 2
    assert "--frames-per-feature" in capsys.readouterr().err
    assert cli_main(args + ["--query", str(tmp_path / "r.npy"), "--model-name", "other"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_deadline_is_enforced(server):
    target, _ = server
    rng = np.random.default_rng(4)
    query = rng.standard_normal((4, 16, H.FEATURE_DIM)).astype(np.float32)
    reference = rng.standard_normal((4, 1024, H.FEATURE_DIM)).astype(np.float32)  # takes far more than 1 ms
    with pytest.raises(grpc.RpcError) as info:
        predict(target, query, reference, H.MODEL_NAME, timeout=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
