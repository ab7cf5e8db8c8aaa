"""vreloc export: TF Serving layout, signature, warm-up file, atomic versions, outputs equal Keras."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import runs as H
from serving import export as export_mod
from serving import signature as sig
from serving.export import export_model
from vreloc_tf.data.versions import next_version
from vreloc.cli import main as cli_main
from vreloc_tf.data.artifacts import Export, Run
from vreloc_tf.model.decoding import decode_full_np, decode_weak_np
from vreloc_tf.errors import InputError
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, METADATA_FILE, SAVED_MODEL_FILE, VARIABLES_DIR, WARMUP_FILE


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run_dir, BASE/NAME, version path) of a fresh export of the seed-0 run."""
    run_dir = H.make_run(0)
    base = str(tmp_path_factory.mktemp("export") / H.MODEL_NAME)
    result = export_model(Run.open(run_dir), base)
    assert result == Export(base_path=os.path.normpath(base), model_name=H.MODEL_NAME, version=1,
                            path=os.path.join(os.path.normpath(base), "1"))
    return run_dir, base, result.path


def _meta_graph(version_path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_path, SAVED_MODEL_FILE), "rb") as fh:
        saved.ParseFromString(fh.read())
    assert len(saved.meta_graphs) == 1
    return saved.meta_graphs[0]


def test_layout_is_tf_servings(exported):
    _, base, path = exported
    assert path == os.path.join(base, "1")
    assert sorted(os.listdir(base)) == ["1"], "no temp folder may be left beside the version"
    assert os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))
    assert os.path.isfile(os.path.join(path, VARIABLES_DIR, "variables.index"))
    extra = os.path.join(path, ASSETS_EXTRA_DIR)
    assert sorted(os.listdir(extra)) == sorted([WARMUP_FILE, METADATA_FILE])
    info = json.load(open(os.path.join(extra, METADATA_FILE)))
    assert info["feature_dim"] == H.FEATURE_DIM
    assert info["frames_per_feature"] == 16
    assert info["decode"] == "full" and info["decode_max_length"] == 64  # tiny config: full rule, limit 64
    assert info["max_window"] == 300  # what `vreloc locate` uses as its window with this model
    assert info["model_name"] == H.MODEL_NAME and info["version"] == 1


def test_signature_names_dtypes_shapes_and_method(exported):
    _, _, path = exported
    fn = tf.saved_model.load(path).signatures[sig.SIGNATURE_NAME]
    inputs = fn.structured_input_signature[1]
    assert sorted(inputs) == sorted(sig.INPUT_NAMES)
    for spec in sig.INPUTS:
        want = [H.FEATURE_DIM if d == "D" else d for d in spec.shape]
        assert inputs[spec.name].dtype.name == spec.dtype, spec.name
        assert inputs[spec.name].shape.as_list() == want, spec.name
    outputs = fn.structured_outputs
    assert sorted(outputs) == sorted(sig.OUTPUT_NAMES)
    for spec in sig.OUTPUTS:
        assert outputs[spec.name].dtype.name == spec.dtype, spec.name
        assert outputs[spec.name].shape.as_list() == list(spec.shape), spec.name

    # What saved_model_cli / TF Serving read: the SignatureDef in saved_model.pb.
    signature_def = _meta_graph(path).signature_def[sig.SIGNATURE_NAME]
    assert signature_def.method_name == sig.METHOD_NAME
    assert sorted(signature_def.inputs) == sorted(sig.INPUT_NAMES)
    assert sorted(signature_def.outputs) == sorted(sig.OUTPUT_NAMES)
    for spec in sig.INPUTS + sig.OUTPUTS:
        info = signature_def.inputs[spec.name] if spec.name in sig.INPUT_NAMES else signature_def.outputs[spec.name]
        assert tf.dtypes.as_dtype(info.dtype).name == spec.dtype
        assert len(info.tensor_shape.dim) == spec.rank


def test_savedmodel_outputs_equal_keras_on_padded_batch(exported):
    run_dir, _, path = exported
    run = Run.open(run_dir)
    model, cfg = run.load_model(), run.config
    rng = np.random.default_rng(1)
    arrays = H.random_batch(rng, lq=(6, 3, 9), lr=(40, 17, 52))
    got = H.saved_model_outputs(path, arrays)
    want = model(arrays, training=False)["probabilities"].numpy()
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5, rtol=0)
    start, end, score = decode_full_np(want, arrays["reference_length"], cfg.decode_max_length)
    np.testing.assert_array_equal(got["start"], start)
    np.testing.assert_array_equal(got["end"], end)
    np.testing.assert_allclose(got["score"], score, rtol=1e-5, atol=1e-7)
    assert got["start"].dtype == np.int32 and got["end"].dtype == np.int32 and got["score"].dtype == np.float32
    assert np.all(got["end"] <= arrays["reference_length"]) and np.all(got["start"] < got["end"])

    # Padding does not change a row: each pair alone, unpadded, gives the same answer.
    for i in range(3):
        lq, lr = arrays["query_length"][i], arrays["reference_length"][i]
        alone = {"query": arrays["query"][i:i + 1, :lq], "query_length": arrays["query_length"][i:i + 1],
                 "reference": arrays["reference"][i:i + 1, :lr], "reference_length": arrays["reference_length"][i:i + 1]}
        single = H.saved_model_outputs(path, alone)
        np.testing.assert_allclose(single["probabilities"][0], got["probabilities"][i, :lr], atol=1e-5, rtol=0)
        assert (single["start"][0], single["end"][0]) == (got["start"][i], got["end"][i])


def test_warmup_file_holds_predict_logs_the_signature_accepts(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, _, path = exported
    records = list(tf.data.TFRecordDataset(os.path.join(path, ASSETS_EXTRA_DIR, WARMUP_FILE)))
    assert len(records) == len(export_mod.WARMUP_SHAPES)
    for record, (batch, lq, lr) in zip(records, export_mod.WARMUP_SHAPES):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        assert entry.WhichOneof("log_type") == "predict_log"
        request = entry.predict_log.request
        assert request.model_spec.name == H.MODEL_NAME
        assert request.model_spec.signature_name == sig.SIGNATURE_NAME
        arrays = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
        assert sorted(arrays) == sorted(sig.INPUT_NAMES)
        assert arrays["query"].shape == (batch, lq, H.FEATURE_DIM)
        assert arrays["reference"].shape == (batch, lr, H.FEATURE_DIM)
        out = H.saved_model_outputs(path, arrays)
        assert out["probabilities"].shape == (batch, lr, 4)


def test_versions_are_next_free_explicit_and_never_overwritten(tmp_path, monkeypatch):
    run_dir = H.make_run(0)
    base = str(tmp_path / "m")
    os.makedirs(os.path.join(base, ".tmp-9-deadbeef"))  # a crashed export: hidden, not a version
    os.makedirs(os.path.join(base, "notes"))
    assert next_version(base) == 1
    assert export_model(Run.open(run_dir), base, version=3).version == 3
    assert next_version(base) == 4
    with pytest.raises(FileExistsError, match="version 3 of m was already exported"):
        export_model(Run.open(run_dir), base, version=3)

    # A failure half-way leaves neither a version nor a temp folder behind.
    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "write_warmup_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(Run.open(run_dir), base)
    assert sorted(os.listdir(base)) == sorted(["3", ".tmp-9-deadbeef", "notes"])


def test_no_xla_flag_exports_a_plain_model_call(tmp_path):
    from serving.batching import BatchingOptions
    from serving.model_servable import LoadedVersion

    assert cli_main(["export", "--model", H.make_run(0), "--out", str(tmp_path / "m"), "--no-xla"]) == 0
    version = LoadedVersion(H.MODEL_NAME, 1, str(tmp_path / "m" / "1"), BatchingOptions(enabled=False))
    try:
        assert not version.xla
    finally:
        version.close()


def test_decode_flag_exports_the_other_rule(tmp_path):
    run_dir = H.make_run(0)
    result = export_model(Run.open(run_dir), str(tmp_path / "m"), decode="weak", jit_compile=False)  # the rule, not XLA
    info = json.load(open(os.path.join(result.path, ASSETS_EXTRA_DIR, METADATA_FILE)))
    assert info["decode"] == "weak" and info["decode_max_length"] is None
    arrays = H.random_batch(np.random.default_rng(2), lq=(4, 7), lr=(33, 60))
    got = H.saved_model_outputs(result.path, arrays)
    start, end, score = decode_weak_np(got["probabilities"], arrays["reference_length"], None)
    np.testing.assert_array_equal(got["start"], start)
    np.testing.assert_array_equal(got["end"], end)
    np.testing.assert_allclose(got["score"], score, rtol=1e-5)


def test_cli_exports_and_refuses_an_existing_version(tmp_path, capsys):
    run_dir = H.make_run(0)
    base = str(tmp_path / "cli" / H.MODEL_NAME)
    assert cli_main(["export", "--model", run_dir, "--out", base, "--version", "5"]) == 0
    assert f"version 5 to {os.path.join(base, '5')}" in capsys.readouterr().out
    assert cli_main(["export", "--model", run_dir, "--out", base, "--version", "5"]) == 2
    assert "already exported" in capsys.readouterr().err
    assert cli_main(["export", "--model", str(tmp_path / "nope"), "--out", base]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "run.json" in err
    assert cli_main(["export", "--model", run_dir, "--out", base, "--max-length", "-3"]) == 2
    assert "--max-length must be a positive integer or 'none'" in capsys.readouterr().err


def test_feature_dim_of_the_manifest_must_match_the_model(tmp_path):
    import shutil

    run_dir = str(tmp_path / "run")
    shutil.copytree(H.make_run(0), run_dir)
    manifest = Run.open(run_dir).manifest
    manifest.feature_dim = H.FEATURE_DIM + 1
    manifest.write(run_dir)
    with pytest.raises(InputError, match=f"feature_dim {H.FEATURE_DIM + 1} but the model takes {H.FEATURE_DIM}"):
        export_model(Run.open(run_dir), str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m" / "1")
