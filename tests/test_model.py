"""The functional model: contract, padding invariance, gradients, .keras round trip, ablations."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from vreloc.bench import model as bench_model
from vreloc_tf.config import load_config
from vreloc_tf.model.losses import coattention_loss, total_loss, weighted_cross_entropy
from vreloc_tf.model.functional import INPUT_NAMES, OUTPUT_NAMES, build_model, head_groups

DIM = 32  # tiny.yaml's feature_dim


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config("tiny")


def randomize_weights(model, seed):
    """Random weights everywhere, biases included: with zero biases a zero input keeps an LSTM's
    state at exactly zero, which would hide an LSTM that runs over padded steps."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        var.assign(rng.normal(scale=0.3, size=var.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def tiny_model(tiny_cfg):
    keras.utils.set_random_seed(0)
    return randomize_weights(build_model(tiny_cfg, DIM), 0)


def padded_batch(seed, q_lengths=(6, 2, 4), r_lengths=(23, 7, 15), dim=DIM):
    """Random features with garbage in the padded tails (it must not matter)."""
    rng = np.random.default_rng(seed)
    q_lengths, r_lengths = np.array(q_lengths, "int32"), np.array(r_lengths, "int32")
    query = rng.normal(size=(len(q_lengths), q_lengths.max(), dim)).astype("float32")
    reference = rng.normal(size=(len(r_lengths), r_lengths.max(), dim)).astype("float32")
    for b in range(len(q_lengths)):
        query[b, q_lengths[b]:] = rng.normal(scale=30.0, size=query[b, q_lengths[b]:].shape)
        reference[b, r_lengths[b]:] = rng.normal(scale=30.0, size=reference[b, r_lengths[b]:].shape)
    gt_start = np.array([min(3, n - 1) for n in r_lengths])
    gt_end = np.minimum(gt_start + np.array([5, 2, 9])[:len(r_lengths)], r_lengths)
    return {"query": query, "query_length": q_lengths, "reference": reference, "reference_length": r_lengths,
            "groundtruth": np.stack([gt_start, gt_end], 1).astype("int32")}


def model_inputs(batch):
    return {k: batch[k] for k in INPUT_NAMES}


def test_contract_shapes_and_probabilities(tiny_cfg, tiny_model):
    batch = padded_batch(0)
    out = tiny_model(model_inputs(batch))
    assert set(out) == set(OUTPUT_NAMES)
    k = sum(g.heads for g in tiny_cfg.model.heads)
    h_dk = tiny_cfg.model.self_attention_heads * tiny_cfg.model.self_attention_key_dim
    assert tuple(out["probabilities"].shape) == (3, 23, 4)
    assert tuple(out["attention"].shape) == (3, 23, k)
    assert tuple(out["self_attention"].shape) == (3, 23, h_dk)
    p = np.asarray(out["probabilities"])
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(np.asarray(out["self_attention"])))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert sorted(t.name for t in tiny_model.inputs) == sorted(INPUT_NAMES)
    with pytest.raises(ValueError, match="feature_dim"):
        build_model(tiny_cfg, 0)


def test_padding_invariance_of_every_output_and_loss(tiny_cfg, tiny_model):
    """Each example alone (unpadded) == the same example padded inside a batch with longer ones."""
    batch = padded_batch(1)
    out = {k: np.asarray(v) for k, v in tiny_model(model_inputs(batch)).items()}
    p = out["probabilities"]
    ce = np.asarray(weighted_cross_entropy(p, batch["groundtruth"], batch["reference_length"], 10.0))
    co = {m: np.asarray(coattention_loss(batch["query"], batch["query_length"], batch["reference"],
                                         batch["reference_length"], p, 0.3, m)) for m in (False, True)}
    for b in range(3):
        nq, nr = batch["query_length"][b], batch["reference_length"][b]
        alone = {"query": batch["query"][b:b + 1, :nq], "query_length": batch["query_length"][b:b + 1],
                 "reference": batch["reference"][b:b + 1, :nr], "reference_length": batch["reference_length"][b:b + 1]}
        a_out = {k: np.asarray(v) for k, v in tiny_model(alone).items()}
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(out[name][b, :nr], a_out[name][0], atol=2e-6, rtol=1e-5, err_msg=name)
        pa = a_out["probabilities"]
        np.testing.assert_allclose(
            ce[b], np.asarray(weighted_cross_entropy(pa, batch["groundtruth"][b:b + 1], [nr], 10.0))[0], rtol=1e-5)
        for m in (False, True):
            np.testing.assert_allclose(co[m][b], np.asarray(coattention_loss(
                alone["query"], [nq], alone["reference"], [nr], pa, 0.3, m))[0], rtol=1e-5)


@pytest.mark.parametrize("overrides,step", [
    (["supervision=full", "loss.full_losses=weighted_ce"], 0),
    (["supervision=full", "loss.full_losses=weighted_ce+coattention"], 1000),
    (["supervision=weak", "loss.weak_variant=paper"], 0),
    (["supervision=weak", "loss.weak_variant=paper"], 1000),
    (["supervision=weak"], 0),
])
def test_gradients_reach_every_trainable_weight(tiny_model, overrides, step):
    cfg = load_config("tiny", overrides)
    batch = padded_batch(2)
    batch["pseudo_groundtruth"] = batch["groundtruth"]  # weak "ours": the teacher's segments
    with tf.GradientTape() as tape:
        out = tiny_model(model_inputs(batch), training=False)
        loss = total_loss(cfg, batch, out["probabilities"], step)
    grads = tape.gradient(loss, tiny_model.trainable_variables)
    assert np.isfinite(float(loss))
    for var, grad in zip(tiny_model.trainable_variables, grads):
        assert grad is not None, var.path
        g = np.asarray(grad)
        assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-6, (var.path, np.abs(g).max())  # not float noise


@pytest.mark.parametrize("overrides", [[], ["model.self_attention=false", "model.multiscale=false"]])
def test_keras_round_trip_is_bit_identical(tmp_path, overrides):
    cfg = load_config("tiny", overrides)
    keras.utils.set_random_seed(1)
    model = randomize_weights(build_model(cfg, DIM), 1)
    batch = model_inputs(padded_batch(3))
    expected = model(batch)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = loaded(batch)
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(expected[name]), err_msg=name)


def test_ablations_follow_table_2(tiny_cfg):
    base = load_config("tiny", ["model.multiscale=false", "model.self_attention=false"])
    k = sum(g.heads for g in tiny_cfg.model.heads)
    assert head_groups(base) == [(k, 3, 1, 8)]  # every head kernel 3, dilation 1, same head count
    assert head_groups(tiny_cfg) == [(g.heads, g.kernel_size, g.dilation, g.filters) for g in tiny_cfg.model.heads]
    model = build_model(base, DIM)
    out = model(model_inputs(padded_batch(4)))
    assert tuple(out["attention"].shape) == (3, 23, k)
    assert tuple(out["self_attention"].shape) == (3, 23, 0)
    assert "self_attention" in [layer.name for layer in model.layers]  # the placeholder layer


@pytest.mark.parametrize("config,overrides,dim", [
    ("tiny", [], DIM), ("tiny", ["model.self_attention=false", "model.multiscale=false"], DIM),
    ("paper_full", [], 500)])
def test_analytic_parameter_count_matches_the_model(config, overrides, dim):
    cfg = load_config(config, overrides)
    assert build_model(cfg, dim).count_params() == bench_model.count_parameters(cfg, dim)


def test_benchmark_functions_run_on_tiny_shapes(tiny_cfg):
    flops = bench_model.forward_flops(tiny_cfg, DIM, 4, 10)
    assert bench_model.training_flops(tiny_cfg, DIM, 4, 10) == 3 * flops > 0
    # the work grows faster than linearly in Lr (self-attention is quadratic), linearly without it
    f = [bench_model.forward_flops(tiny_cfg, DIM, 4, n) for n in (0, 10, 20)]
    assert f[2] - f[1] > f[1] - f[0]
    no_satt = load_config("tiny", ["model.self_attention=false"])
    f = [bench_model.forward_flops(no_satt, DIM, 4, n) for n in (0, 10, 20)]
    assert f[2] - f[1] == f[1] - f[0]
    train = bench_model.training_pairs_per_second(tiny_cfg, 2, 4, 10, DIM, steps=1)
    assert train["best_pairs_per_s"] > 0
    latency = bench_model.inference_latency_ms(tiny_cfg, 4, 10, DIM, runs=3, jit_compile=False)
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    costs = bench_model.inference_cost_by_batch(tiny_cfg, (1, 2), 4, 10, DIM, pairs=4, jit_compile=False)
    assert sorted(costs) == sorted(f"batch_{b}_{what}_ms_per_pair" for b in (1, 2) for what in ("wall", "cpu"))
    assert all(v > 0 for v in costs.values())


@pytest.mark.slow
def test_paper_config_at_full_size_is_padding_invariant_and_round_trips(tmp_path):
    """The paper's configuration (D = 500, k = 40 heads, Lr up to 300): same checks as the tiny model."""
    cfg = load_config("paper_full")
    keras.utils.set_random_seed(2)
    model = build_model(cfg, 500)
    rng = np.random.default_rng(2)
    for var in model.weights:  # small random weights, biases included
        var.assign(rng.normal(scale=0.05, size=var.shape).astype("float32"))
    batch = padded_batch(5, q_lengths=(16, 9), r_lengths=(300, 187), dim=500)
    out = model(model_inputs(batch))
    alone = model({"query": batch["query"][1:, :9], "query_length": batch["query_length"][1:],
                   "reference": batch["reference"][1:, :187], "reference_length": batch["reference_length"][1:]})
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(np.asarray(out[name])[1, :187], np.asarray(alone[name])[0], atol=1e-5, rtol=1e-4,
                                   err_msg=name)
    path = str(tmp_path / "paper.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)(model_inputs(batch))
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(np.asarray(loaded[name]), np.asarray(out[name]), err_msg=name)
