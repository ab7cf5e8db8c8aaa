"""Custom layers against one-example, one-head-at-a-time NumPy references; serialization."""
import keras
import numpy as np
import pytest

from helpers import reference_numpy as ref
from vreloc_tf.model.layers import (EmptyFeatures, MaskedConvEncoder, MultiscaleAttention, SelfAttention,
                              SequenceMask, SimilarityFeatures, merge_head_groups, sequence_mask)

# Groups with two different key widths and a duplicate setting, to exercise merging and ordering.
GROUPS = [[2, 1, 1, 4], [1, 3, 2, 4], [2, 3, 1, 6], [1, 3, 3, 4]]


def padded_batch(rng, lengths, max_len, dim):
    """Random features; the padded tail holds large random garbage, which must not matter."""
    x = rng.normal(size=(len(lengths), max_len, dim)).astype("float32")
    for b, n in enumerate(lengths):
        x[b, n:] = rng.normal(scale=50.0, size=(max_len - n, dim))
    return x, np.asarray(lengths, "int32")


@pytest.mark.parametrize("seed", [0, 1])
def test_multiscale_attention_matches_one_head_at_a_time(seed):
    rng = np.random.default_rng(seed)
    ref_x, ref_len = padded_batch(rng, [13, 5, 9], 13, 6)
    q_x, q_len = padded_batch(rng, [4, 7, 1], 7, 6)
    layer = MultiscaleAttention(GROUPS)
    layer(ref_x, q_x, ref_len, q_len)
    for v in layer.weights:  # non-zero query biases too
        v.assign(rng.normal(scale=0.5, size=v.shape))
    out = np.asarray(layer(ref_x, q_x, ref_len, q_len))
    assert out.shape == (3, 13, sum(g[0] for g in GROUPS))
    w = [v.numpy() for v in layer.weights]
    n = len(GROUPS)
    by_name = {v.path.split("/")[-1]: v.numpy() for v in layer.weights}
    assert len(w) == 3 * n  # reference kernel, query kernel, query bias (no reference bias: it cancels)
    rk = [by_name[f"reference_kernel_{i}"] for i in range(n)]
    rb = [np.zeros(k.shape[-1]) for k in rk]
    qk = [by_name[f"query_kernel_{i}"] for i in range(n)]
    qb = [by_name[f"query_bias_{i}"] for i in range(n)]
    for b in range(3):
        expected = ref.multiscale_attention(ref_x[b, :ref_len[b]].astype(np.float64),
                                            q_x[b, :q_len[b]].astype(np.float64), GROUPS, rk, rb, qk, qb)
        np.testing.assert_allclose(out[b, :ref_len[b]], expected, atol=1e-5, rtol=1e-5)
        assert np.all(out[b, ref_len[b]:] == 0.0)
        # each head's scores are a mean of distributions over the valid reference steps
        np.testing.assert_allclose(out[b].sum(axis=0), 1.0, atol=1e-5)


def test_self_attention_matches_numpy():
    rng = np.random.default_rng(3)
    x, lengths = padded_batch(rng, [11, 4, 8], 11, 10)
    layer = SelfAttention(num_heads=2, key_dim=3)
    out = np.asarray(layer(x, lengths))
    assert out.shape == (3, 11, 6)
    kernel = layer.qkv_kernel.numpy()
    for b in range(3):
        n = lengths[b]
        expected = ref.self_attention(x[b, :n].astype(np.float64), kernel.astype(np.float64), 2, 3)
        np.testing.assert_allclose(out[b, :n], expected, atol=1e-5, rtol=1e-5)
        assert np.all(np.isfinite(out[b])) and np.all(out[b, n:] == 0.0)


def test_encoder_matches_numpy():
    rng = np.random.default_rng(4)
    x, lengths = padded_batch(rng, [9, 3, 6], 9, 5)
    layer = MaskedConvEncoder(units=7, kernel_size=3)
    out = np.asarray(layer(x, lengths))
    gamma, beta = layer.norm.gamma.numpy(), layer.norm.beta.numpy()
    layer.norm.gamma.assign(rng.normal(size=gamma.shape))  # non-trivial affine part
    layer.norm.beta.assign(rng.normal(size=beta.shape))
    layer.bias.assign(rng.normal(size=(7,)))
    out = np.asarray(layer(x, lengths))
    for b in range(3):
        n = lengths[b]
        expected = ref.encoder(x[b, :n].astype(np.float64), layer.kernel.numpy(), layer.bias.numpy(),
                               layer.norm.gamma.numpy(), layer.norm.beta.numpy(), layer.epsilon)
        np.testing.assert_allclose(out[b, :n], expected, atol=1e-5, rtol=1e-5)
        assert np.all(out[b, n:] == 0.0)


def test_a_reference_side_bias_would_cancel_under_the_softmax():
    """Why the reference convolutions have no bias: the NumPy definition with one gives the same map."""
    rng = np.random.default_rng(9)
    ref_x, q_x = rng.normal(size=(11, 6)), rng.normal(size=(4, 6))
    groups = [[2, 3, 2, 4]]
    rk, qk, qb = [rng.normal(size=(3, 6, 8))], [rng.normal(size=(3, 6, 8))], [rng.normal(size=8)]
    with_bias = ref.multiscale_attention(ref_x, q_x, groups, rk, [rng.normal(size=8)], qk, qb)
    without = ref.multiscale_attention(ref_x, q_x, groups, rk, [np.zeros(8)], qk, qb)
    np.testing.assert_allclose(with_bias, without, rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_similarity_features_match_numpy_and_ignore_padding(seed):
    rng = np.random.default_rng(seed)
    ref_x, ref_len = padded_batch(rng, [12, 4, 9], 12, 5)
    q_x, q_len = padded_batch(rng, [3, 6, 1], 6, 5)
    layer = SimilarityFeatures(temperature=0.2)
    out = np.asarray(layer(ref_x, q_x, ref_len, q_len))
    assert out.shape == (3, 12, 6) and not layer.weights  # parameter-free
    for b in range(3):
        n, m = ref_len[b], q_len[b]
        expected = ref.similarity_features(ref_x[b, :n].astype(np.float64), q_x[b, :m].astype(np.float64), 0.2)
        np.testing.assert_allclose(out[b, :n], expected, atol=2e-4, rtol=1e-4)
        assert np.all(out[b, n:] == 0.0)


def test_similarity_features_ignore_a_per_video_offset_of_the_reference():
    """Why they exist: a scene component constant over the reference changes nothing."""
    rng = np.random.default_rng(7)
    ref_x, ref_len = padded_batch(rng, [10], 10, 6)
    q_x, q_len = padded_batch(rng, [4], 4, 6)
    layer = SimilarityFeatures()
    shifted = ref_x + 30.0 * rng.normal(size=(1, 1, 6)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(shifted, q_x, ref_len, q_len)),
                               np.asarray(layer(ref_x, q_x, ref_len, q_len)), atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        SimilarityFeatures(temperature=0.0)


def test_merge_head_groups_merges_equal_settings_in_order():
    merged = merge_head_groups([(8, 3, 1, 32), (8, 1, 1, 32), (8, 3, 1, 32), (4, 3, 1, 16)])
    assert merged == [(16, 3, 1, 32), (8, 1, 1, 32), (4, 3, 1, 16)]


def test_bad_head_group_is_named():
    with pytest.raises(ValueError, match="head group"):
        MultiscaleAttention([[2, 3, 0, 4]])
    with pytest.raises(ValueError, match="empty"):
        MultiscaleAttention([])


def test_sequence_mask():
    mask = np.asarray(sequence_mask(np.array([0, 2, 4], "int32"), 4))
    np.testing.assert_array_equal(mask, np.arange(4)[None, :] < np.array([0, 2, 4])[:, None])


def _round_trip(layer, *args):
    """get_config -> serialize -> deserialize -> same weights -> same outputs, bit for bit."""
    expected = layer(*args)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    clone(*args)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(*args)), np.asarray(expected))


def test_serialization_round_trip_of_every_custom_layer():
    rng = np.random.default_rng(5)
    x, lengths = padded_batch(rng, [6, 2], 6, 4)
    q, q_len = padded_batch(rng, [3, 2], 3, 4)
    _round_trip(MaskedConvEncoder(5, 3, name="enc"), x, lengths)
    _round_trip(MultiscaleAttention(GROUPS, name="msa"), x, q, lengths, q_len)
    _round_trip(SelfAttention(2, 3, name="sa"), x, lengths)
    _round_trip(SequenceMask(name="mask"), lengths, x)
    _round_trip(EmptyFeatures(name="empty"), x)
    _round_trip(SimilarityFeatures(0.3, name="sim"), x, q, lengths, q_len)
    assert np.asarray(EmptyFeatures()(x)).shape == (2, 6, 0)
