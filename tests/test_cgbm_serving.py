"""Feng et al.'s CGBM like ours end to end: its export answers over gRPC (stock TF Serving stub), and
`vreloc pipeline run --models full,cgbm` gives the results table a "CGBM" row."""
import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from helpers import runs as H
from serving import signature as sig
from serving.client import make_request
from serving.server import start_server
from vreloc import cli
from vreloc_tf.config import CGBM_METHOD
from vreloc_tf.model.decoding import decode_feng_np
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, METADATA_FILE


@pytest.fixture(scope="module")
def served_cgbm(tmp_path_factory):
    base = H.export_copy(str(tmp_path_factory.mktemp("served_cgbm")), seed=0, overrides=CGBM_METHOD, xla=False)
    handle = start_server(base, port=0, poll_interval=0)
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    yield base, channel
    channel.close()
    handle.stop(grace=1)


def test_cgbm_export_answers_over_grpc_with_fengs_decoding(served_cgbm):
    base, channel = served_cgbm
    with open(os.path.join(base, "1", ASSETS_EXTRA_DIR, METADATA_FILE)) as fh:
        info = json.load(fh)
    assert info["decode"] == "feng" and info["decode_max_length"] == 64  # the run's own rule travels with it
    arrays = H.random_batch(np.random.default_rng(3), lq=(5, 3), lr=(40, 23))
    request = make_request(arrays["query"], arrays["reference"], H.MODEL_NAME,
                           query_length=arrays["query_length"], reference_length=arrays["reference_length"])
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    want = H.saved_model_outputs(os.path.join(base, "1"), arrays)
    for name in sig.OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    start, end, _ = decode_feng_np(got[sig.PROBABILITIES], arrays["reference_length"], 64)
    np.testing.assert_array_equal(got[sig.START], start)
    np.testing.assert_array_equal(got[sig.END], end)


FAST = ["--set", "train.steps=4", "--set", "train.validate_every=2", "--set", "train.checkpoint_every=2",
        "--set", "train.batch_size=8", "--set", "train.validation_pairs=16",
        "--set", "model.cgbm.memory_dim=8", "--set", "model.cgbm.attention_dim=8"]


@pytest.mark.slow  # 30-110 s on 2 cores: in `make test-slow` to keep `make test` near 15 min
def test_pipeline_table_has_the_cgbm_row(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    assert cli.main(["pipeline", "run", "--workdir", workdir, "--models", "full,cgbm", "--no-serve-check",
                     *FAST]) == 0
    with open(os.path.join(workdir, "evaluator", "stage.json")) as fh:
        ev = json.load(fh)["outputs"]
    for split in ("val", "test"):
        rows = ev["results"][split]
        assert list(rows)[:2] == ["model:full", "model:cgbm"]
        assert rows["model:cgbm"]["method"] == "CGBM" and rows["model:cgbm"]["decode"] == "feng"
        assert "CGBM" in open(os.path.join(workdir, "evaluator", f"table_{split}.txt")).read()
    verdict = ev["blessing"]["cgbm"]  # blessed by name, like the others
    assert verdict["blessed"] == (verdict["val_average"] > verdict["frame_level_val_average"])
    assert os.path.getsize(ev["figures"]["cgbm"]) > 10_000
    with open(os.path.join(workdir, "trainer", "cgbm", "config.yaml")) as fh:
        text = fh.read()
    assert "architecture: cgbm" in text and "full_losses: feng" in text and "rule: feng" in text
    out = capsys.readouterr().out
    assert "CGBM" in out and "cgbm model:" in out
    assert cli.main(["pipeline", "run", "--workdir", workdir, "--models", "full,nope"]) == 2
    assert "--models 'full,nope'" in capsys.readouterr().err
