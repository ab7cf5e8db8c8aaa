"""Decoding rules (keras.ops and NumPy twins) against brute force over every (s, e)."""
import numpy as np
import pytest
import tensorflow as tf

from helpers import reference_numpy as ref
from vreloc_tf.model.decoding import decode, decode_full, decode_full_np, decode_weak, decode_weak_np, decoder


def random_probabilities(rng, batch, steps, temperature=2.0):
    logits = rng.normal(size=(batch, steps, 4)) * temperature
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


def run_both(fn_ops, fn_np, p, lengths, max_length):
    got = [np.asarray(v) for v in fn_ops(p, lengths, max_length)]
    twin = fn_np(p, lengths, max_length)
    for a, b in zip(got[:2], twin[:2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(got[2], twin[2], rtol=1e-5, atol=1e-7)
    assert got[0].dtype == np.int32 and got[1].dtype == np.int32 and got[2].dtype == np.float32
    return got


@pytest.mark.parametrize("seed,max_length", [(0, None), (1, 1), (2, 4), (3, 64), (4, None)])
def test_full_decoding_matches_bruteforce(seed, max_length):
    rng = np.random.default_rng(seed)
    lengths = np.array([37, 1, 20, 5, 0, 30], "int32")
    p = random_probabilities(rng, len(lengths), 37)
    start, end, score = run_both(decode_full, decode_full_np, p, lengths, max_length)
    for b, n in enumerate(lengths):
        s, e, sc = ref.decode_full_bruteforce(p[b, :n], max_length)
        assert (start[b], end[b]) == (s, e), f"example {b}"
        np.testing.assert_allclose(score[b], sc, rtol=1e-5, atol=1e-12)
        if n:
            assert 0 <= start[b] < end[b] <= n
            assert max_length is None or end[b] - start[b] <= max_length


@pytest.mark.parametrize("seed,max_length", [(0, None), (1, 3), (2, None), (3, 1)])
def test_weak_decoding_matches_bruteforce(seed, max_length):
    rng = np.random.default_rng(seed)
    lengths = np.array([40, 1, 17, 6, 0, 33], "int32")
    # smooth p3 so there are several runs of different lengths
    p = random_probabilities(rng, len(lengths), 40, temperature=1.0)
    p[:, :, 2] = (np.sin(np.arange(40)[None] / rng.uniform(1, 4, size=(len(lengths), 1))) + 1.2) / 3
    start, end, score = run_both(decode_weak, decode_weak_np, p, lengths, max_length)
    for b, n in enumerate(lengths):
        s, e, sc = ref.decode_weak_bruteforce(p[b, :n], max_length)
        assert (start[b], end[b]) == (s, e), f"example {b}"
        np.testing.assert_allclose(score[b], sc, rtol=1e-5, atol=1e-12)


def test_weak_ties_go_to_earliest_run_and_constant_p3_gives_everything():
    p = np.full((2, 10, 4), 0.25, "float32")
    p[0, :, 2] = [0, 1, 1, 0, 0, 1, 1, 0, 1, 1]  # three runs of length 2 -> the first
    start, end, score = (np.asarray(v) for v in decode_weak(p, np.array([10, 7], "int32")))
    assert (start[0], end[0]) == (1, 3) and score[0] == pytest.approx(1.0)
    assert (start[1], end[1]) == (0, 7) and score[1] == pytest.approx(0.25)  # nothing strictly above the mean


def test_weak_max_length_cuts_long_runs_and_then_ties_to_earliest():
    p = np.full((1, 12, 4), 0.25, "float32")
    p[0, :, 2] = [1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0]
    s, e, _ = decode_weak_np(p, [12], None)
    assert (s[0], e[0]) == (4, 9)
    s, e, _ = decode_weak_np(p, [12], 3)
    assert (s[0], e[0]) == (0, 3)
    assert [int(np.asarray(v)[0]) for v in decode_weak(p, np.array([12], "int32"), 3)[:2]] == [0, 3]


def test_padding_does_not_change_decoding():
    rng = np.random.default_rng(7)
    p = random_probabilities(rng, 1, 25)
    padded = np.concatenate([p, random_probabilities(rng, 1, 15)], axis=1)
    for mode, ml in [("full", 6), ("full", None), ("weak", None), ("weak", 4)]:
        alone = [np.asarray(v) for v in decode(p, np.array([25], "int32"), mode, ml)]
        inside = [np.asarray(v) for v in decode(padded, np.array([25], "int32"), mode, ml)]
        for a, b in zip(alone, inside):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_decoding_compiles_into_a_graph_with_unknown_shapes_and_under_xla():
    rng = np.random.default_rng(8)
    p = random_probabilities(rng, 3, 19)
    lengths = np.array([19, 4, 11], "int32")
    spec = [tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None], tf.int32)]

    def both(q, n):
        return decode_full(q, n, 5) + decode_full(q, n, None) + decode_weak(q, n, None)

    graph = tf.function(both, input_signature=spec)
    xla = tf.function(both, jit_compile=True)
    expected = decode_full_np(p, lengths, 5) + decode_full_np(p, lengths, None) + decode_weak_np(p, lengths, None)
    for fn in (graph, xla):
        for got, want in zip(fn(tf.constant(p), tf.constant(lengths)), expected):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_bad_arguments_are_named():
    p = np.full((1, 3, 4), 0.25, "float32")
    with pytest.raises(ValueError, match="mode"):
        decode(p, np.array([3], "int32"), "strong", None)
    with pytest.raises(ValueError, match="max_length"):
        decode_full(p, np.array([3], "int32"), 0)
    with pytest.raises(ValueError, match="reference_length"):
        decode_full_np(p, [4], 2)
    with pytest.raises(ValueError, match="probabilities"):
        decode_weak_np(p[..., :3], [3])
    with pytest.raises(ValueError, match="probabilities"):
        decode_full(p[..., :3], np.array([3], "int32"), 2)
    with pytest.raises(ValueError, match="probabilities"):
        decode_weak(p[0], np.array([3], "int32"))


def test_one_function_picks_the_rule_of_a_mode():
    assert (decoder("full"), decoder("weak")) == (decode_full, decode_weak)
    assert (decoder("full", numpy=True), decoder("weak", numpy=True)) == (decode_full_np, decode_weak_np)
    with pytest.raises(ValueError, match="mode must be one of"):
        decoder("semi")
