"""Feng et al.'s CGBM (vreloc_tf.model.cgbm): layers against one-example NumPy references written after
their TF1 code, padding, serialization, the model contract, and Feng's loss and decoding."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import reference_numpy as ref
from vreloc.bench import model as bench_model
from vreloc_tf.model.cgbm import BilinearMatching, CrossGatedMatching, CrossGating
from vreloc_tf.config import CGBM_METHOD, load_config
from vreloc_tf.model.decoding import decode_feng, decode_feng_np, decode_full_np, decoder
from vreloc_tf.evaluation.scoring import method_name
from vreloc_tf.model.losses import feng_cross_entropy, total_loss, weighted_cross_entropy
from vreloc_tf.model.functional import INPUT_NAMES, OUTPUT_NAMES, attention_groups, build_model

DIM = 12


def padded_batch(rng, lengths, max_len, dim):
    """Random features; the padded tail holds large random garbage, which must not matter."""
    x = rng.normal(size=(len(lengths), max_len, dim)).astype("float32")
    for b, n in enumerate(lengths):
        x[b, n:] = rng.normal(scale=50.0, size=(max_len - n, dim))
    return x, np.asarray(lengths, "int32")


def randomize(layer_or_model, rng, scale=0.4):
    for var in layer_or_model.weights:  # biases too: zero biases would hide mistakes
        var.assign(rng.normal(scale=scale, size=var.shape).astype("float32"))


def weights_by_name(layer):
    return {v.path.split("/")[-1]: v.numpy().astype(np.float64) for v in layer.weights}


def cgbm_cfg(overrides=()):
    return load_config("tiny", ["model.architecture=cgbm", "model.cgbm.memory_dim=10", "model.cgbm.attention_dim=6",
                                "model.cgbm.bilinear_factors=3", *overrides])


# -- the layers against NumPy -------------------------------------------------------------------

def test_cross_gating_matches_numpy():
    rng = np.random.default_rng(0)
    reference, query = rng.normal(size=(3, 7, 5)).astype("float32"), rng.normal(size=(3, 7, 4)).astype("float32")
    layer = CrossGating()
    layer(reference, query)
    randomize(layer, rng)
    gated_r, gated_q = (np.asarray(t) for t in layer(reference, query))
    assert gated_r.shape == (3, 7, 5) and gated_q.shape == (3, 7, 4)
    w = weights_by_name(layer)
    for b in range(3):
        for t in range(7):
            want_r, want_q = ref.cross_gating(reference[b, t].astype(np.float64), query[b, t].astype(np.float64),
                                              w["reference_gate_kernel"], w["reference_gate_bias"],
                                              w["query_gate_kernel"], w["query_gate_bias"])
            np.testing.assert_allclose(gated_r[b, t], want_r, atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(gated_q[b, t], want_q, atol=1e-5, rtol=1e-5)


def test_bilinear_matching_matches_numpy_and_shares_one_projection():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    layer = BilinearMatching(units=None, factors=3)
    out = np.asarray(layer(x, y))
    randomize(layer, rng)
    out = np.asarray(layer(x, y))
    assert out.shape == (4, 6) and len(layer.weights) == 2  # one kernel and one bias for both sides
    w = weights_by_name(layer)
    for b in range(4):
        np.testing.assert_allclose(out[b], ref.bilinear_matching(x[b].astype(np.float64), y[b].astype(np.float64),
                                                                 w["kernel"], w["bias"], 3), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(y, x)), out, atol=1e-6)  # symmetric, as one shared W makes it
    with pytest.raises(ValueError, match="same width"):
        BilinearMatching()(x, y[:, :5])


@pytest.mark.parametrize("seed", [0, 1])
def test_cross_gated_matching_matches_the_step_by_step_recurrence(seed):
    """Forward and backward, attention, gates, bilinear matching and BasicLSTMCell steps, one example
    at a time on its valid steps only, against the padded, batched, both-directions-in-one-scan layer."""
    rng = np.random.default_rng(seed)
    reference, ref_len = padded_batch(rng, [9, 4, 7], 9, 5)
    query, q_len = padded_batch(rng, [3, 5, 1], 5, 5)
    layer = CrossGatedMatching(units=4, factors=2)
    layer(reference, query, ref_len, q_len)
    randomize(layer, rng)
    matching, gates = (np.asarray(t) for t in layer(reference, query, ref_len, q_len))
    assert matching.shape == (3, 9, 8) and gates.shape == (3, 9, 2)
    w = weights_by_name(layer)
    for b in range(3):
        n, m = ref_len[b], q_len[b]
        want, want_gates = ref.cgbm_matching(reference[b, :n].astype(np.float64), query[b, :m].astype(np.float64), w)
        np.testing.assert_allclose(matching[b, :n], want, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(gates[b, :n], want_gates, atol=1e-5, rtol=1e-5)
        assert np.all(matching[b, n:] == 0.0) and np.all(gates[b, n:] == 0.0)


def test_layers_round_trip_through_their_configs():
    rng = np.random.default_rng(2)
    reference, ref_len = padded_batch(rng, [6, 3], 6, 4)
    query, q_len = padded_batch(rng, [2, 4], 4, 4)
    steps = (reference[:, :4], query)  # the step-wise layers pair step t with step t
    cases = [(CrossGating(name="g"), steps),
             (BilinearMatching(units=3, factors=2, name="b"), steps),
             (CrossGatedMatching(units=5, factors=2, forget_bias=0.5, name="m"), (reference, query, ref_len, q_len))]
    for layer, args in cases:
        want = layer(*args)
        randomize(layer, rng)
        want = keras.tree.map_structure(np.asarray, layer(*args))
        config = keras.saving.serialize_keras_object(layer)
        clone = keras.saving.deserialize_keras_object(config)
        clone(*args)  # build
        clone.set_weights(layer.get_weights())
        got = keras.tree.map_structure(np.asarray, clone(*args))
        for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
            np.testing.assert_array_equal(a, b, err_msg=type(layer).__name__)
        assert clone.get_config() == layer.get_config()


# -- the model -----------------------------------------------------------------------------------

def model_batch(seed, q_lengths=(6, 2, 4), r_lengths=(23, 7, 15), dim=DIM):
    rng = np.random.default_rng(seed)
    query, q_len = padded_batch(rng, q_lengths, max(q_lengths), dim)
    reference, r_len = padded_batch(rng, r_lengths, max(r_lengths), dim)
    start = np.array([min(3, n - 1) for n in r_lengths])
    end = np.minimum(start + np.array([5, 2, 9])[:len(r_lengths)], r_lengths)
    return {"query": query, "query_length": q_len, "reference": reference, "reference_length": r_len,
            "groundtruth": np.stack([start, end], 1).astype("int32")}


@pytest.fixture(scope="module")
def cgbm_model():
    keras.utils.set_random_seed(0)
    model = build_model(cgbm_cfg(), DIM)
    randomize(model, np.random.default_rng(0), scale=0.3)
    return model


def test_contract_and_padding_invariance(cgbm_model):
    batch = model_batch(1)
    out = {k: np.asarray(v) for k, v in cgbm_model({k: batch[k] for k in INPUT_NAMES}).items()}
    assert set(out) == set(OUTPUT_NAMES) and cgbm_model.name == "vreloc_cgbm"
    assert out["probabilities"].shape == (3, 23, 4) and out["attention"].shape == (3, 23, 2)
    assert out["self_attention"].shape == (3, 23, 0)
    np.testing.assert_allclose(out["probabilities"].sum(-1), 1.0, rtol=1e-5)
    assert np.all((out["attention"] > 0) | (np.arange(23)[None, :, None] >= batch["reference_length"][:, None, None]))
    for b in range(3):
        nq, nr = batch["query_length"][b], batch["reference_length"][b]
        alone = cgbm_model({"query": batch["query"][b:b + 1, :nq], "query_length": batch["query_length"][b:b + 1],
                            "reference": batch["reference"][b:b + 1, :nr],
                            "reference_length": batch["reference_length"][b:b + 1]})
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(out[name][b, :nr], np.asarray(alone[name])[0], atol=2e-6, rtol=1e-5,
                                       err_msg=name)
        assert np.all(out["attention"][b, nr:] == 0.0)
    assert attention_groups(cgbm_cfg()) == [(1, "forward"), (1, "backward")]


def test_keras_round_trip_is_bit_identical(cgbm_model, tmp_path):
    batch = {k: v for k, v in model_batch(3).items() if k in INPUT_NAMES}
    path = str(tmp_path / "cgbm.keras")
    cgbm_model.save(path)
    loaded = keras.saving.load_model(path)
    want, got = cgbm_model(batch), loaded(batch)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


@pytest.mark.parametrize("losses", ["feng", "weighted_ce+coattention"])
def test_gradients_reach_every_trainable_weight(cgbm_model, losses):
    cfg = cgbm_cfg([f"loss.full_losses={losses}"])
    batch = model_batch(2)
    with tf.GradientTape() as tape:
        out = cgbm_model({k: batch[k] for k in INPUT_NAMES}, training=False)
        loss = total_loss(cfg, batch, out["probabilities"], 0)
    grads = tape.gradient(loss, cgbm_model.trainable_variables)
    for var, grad in zip(cgbm_model.trainable_variables, grads):
        assert grad is not None, var.path
        assert np.all(np.isfinite(np.asarray(grad))) and np.abs(np.asarray(grad)).max() > 1e-7, var.path


def test_inference_compiles_with_xla_to_the_same_numbers(cgbm_model):
    batch = {k: tf.constant(v) for k, v in model_batch(4).items() if k in INPUT_NAMES}
    compiled = tf.function(lambda x: cgbm_model(x, training=False), jit_compile=True)
    np.testing.assert_allclose(np.asarray(compiled(batch)["probabilities"]),
                               np.asarray(cgbm_model(batch)["probabilities"]), atol=1e-5)


@pytest.mark.parametrize("config,overrides,dim", [("tiny", ["model.architecture=cgbm"], 32), ("cgbm", [], 500)])
def test_analytic_parameter_count_and_flops(config, overrides, dim):
    cfg = load_config(config, overrides)
    assert build_model(cfg, dim).count_params() == bench_model.count_parameters(cfg, dim)
    f = [bench_model.forward_flops(cfg, dim, 16, n) for n in (0, 100, 200)]
    assert f[2] - f[1] == f[1] - f[0] > 0  # linear in Lr: recurrent, no Lr x Lr term


# -- configuration, loss and decoding -----------------------------------------------------------

def test_cgbm_yaml_holds_fengs_settings_and_the_method_overrides_match_it():
    cfg = load_config("cgbm")
    c = cfg.model.cgbm
    assert cfg.model.architecture == "cgbm" and cfg.supervision == "full"
    assert (c.memory_dim, c.attention_dim, c.bilinear_factors, c.dropout, c.matching_dropout) == (128, 128, 8, 0.4, 0.2)
    assert (cfg.train.batch_size, cfg.train.learning_rate, cfg.train.steps, cfg.train.clip_norm) == (128, 1e-3, 1000, 5.0)
    assert cfg.train.lr_decay_factor == 1.0 and cfg.data.feature_dim == 500
    assert cfg.loss.full_losses == "feng" and cfg.decode_rule == "feng" and cfg.decode_max_length == 64
    assert method_name(cfg) == "CGBM"
    on_paper = load_config("paper_full", list(CGBM_METHOD))
    for section in ("model", "loss", "decode"):
        assert getattr(on_paper, section) == getattr(cfg, section), section
    architecture_only = load_config("tiny", ["model.architecture=cgbm"])
    assert architecture_only.decode_rule == "full"  # each choice is separate
    assert method_name(architecture_only) == "CGBM (weighted_ce+coattention loss, full decoding)"
    assert method_name(load_config("tiny", list(CGBM_METHOD))) == "CGBM"


def test_feng_loss_is_fengs_batch_mean_and_equals_eq19_only_for_equal_lengths():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), size=(3, 11)).astype("float32")
    gt = np.array([[2, 6], [0, 1], [4, 9]], "int32")
    lengths = np.array([11, 5, 9], "int32")
    feng = np.asarray(feng_cross_entropy(p, gt, lengths, 10.0))
    assert float(feng.mean()) == pytest.approx(ref.feng_loss(p, gt, lengths, 10.0), rel=1e-5)
    ours = np.asarray(weighted_cross_entropy(p, gt, lengths, 10.0))
    assert abs(float(feng.mean()) - float(ours.mean())) > 1e-3  # different normalisation: they differ here
    same = np.array([11, 11, 11], "int32")
    np.testing.assert_allclose(np.asarray(feng_cross_entropy(p, gt, same, 10.0)),
                               np.asarray(weighted_cross_entropy(p, gt, same, 10.0)), rtol=1e-6)
    batch = {"query": np.zeros((3, 2, 4), "float32"), "query_length": np.full(3, 2, "int32"),
             "reference": np.zeros((3, 11, 4), "float32"), "reference_length": lengths, "groundtruth": gt}
    cfg = load_config("cgbm")
    assert float(total_loss(cfg, batch, p, 0)) == pytest.approx(ref.feng_loss(p, gt, lengths, 10.0), rel=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_feng_decoding_is_fengs_loop(seed):
    rng = np.random.default_rng(seed)
    lengths = np.array([17, 1, 9, 0, 80], "int32")
    p = rng.dirichlet(np.full(4, 0.4), size=(5, 80)).astype("float32")
    for limit in (64, 5, None):
        got = decode_feng_np(p, lengths, limit)
        graph = [np.asarray(t) for t in decode_feng(p, lengths, limit)]
        for b, n in enumerate(lengths):
            want = ref.feng_decode_loop(p[b, :n], limit)
            assert (int(got[0][b]), int(got[1][b])) == want[:2], (b, limit)
            assert (int(graph[0][b]), int(graph[1][b])) == want[:2], (b, limit)
            assert got[2][b] == pytest.approx(want[2], rel=1e-5) and graph[2][b] == pytest.approx(want[2], rel=1e-5)
    assert decoder("feng") is decode_feng and decoder("feng", numpy=True) is decode_feng_np


def test_feng_decoding_differs_from_eq20_as_documented():
    """The end step's p3 is left out of Feng's mean, and ties go to the shortest segment."""
    p = np.full((1, 4, 4), 0.25, np.float32)
    p[0, :, 0] = [0.9, 0.05, 0.05, 0.05]  # start at 0
    p[0, :, 1] = [0.05, 0.6, 0.6, 0.05]  # end at 1 or 2
    p[0, :, 2] = [0.9, 0.9, 0.01, 0.9]  # p3 low at step 2
    p /= p.sum(-1, keepdims=True)
    eq20 = decode_full_np(p, np.array([4]), 64)[:2]
    feng = decode_feng_np(p, np.array([4]), 64)[:2]
    assert (int(eq20[0][0]), int(eq20[1][0])) == (0, 2)  # [0, 1]: step 2's low p3 counts against ending there
    assert (int(feng[0][0]), int(feng[1][0])) == (0, 3)  # [0, 2]: the end step's p3 is left out
    flat = np.full((1, 3, 4), 0.25, np.float32)  # every segment of a length ties: the shortest wins
    start, end, _ = decode_feng_np(flat, np.array([3]), None)
    assert (int(start[0]), int(end[0])) == (0, 1)


def test_the_quality_study_and_the_pipeline_name_the_same_cgbm_method():
    from vreloc import orchestrator, quality
    from vreloc_tf.errors import InputError

    method = quality.METHODS["cgbm"]
    cfg = load_config("tiny", [f"supervision={method.supervision}", *method.overrides])
    assert method_name(cfg) == quality.ROW_NAMES["cgbm"] == "CGBM" and cfg.model.architecture == "cgbm"
    assert orchestrator.model_config(load_config("tiny", ["supervision=weak"]), "cgbm") == cfg
    assert orchestrator.parse_models(" full, cgbm,full ") == ("full", "cgbm")
    assert orchestrator.DEFAULT_MODELS == ("full", "weak")  # make demo keeps its time
    with pytest.raises(InputError, match="--models"):
        orchestrator.parse_models("full,cgbn")
