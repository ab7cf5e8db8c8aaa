"""The label-free teacher of weak supervision: TF equals NumPy; it finds a planted action under scenes."""
import numpy as np
import pytest

from vreloc_tf.model.teacher import teacher_segment_np, teacher_segment_tf


def planted_pair(rng, dim=16, length=40, action=(12, 21), noise=0.3):
    """A query window with an action, and a reference holding the same action under another scene."""
    pattern = rng.normal(size=(9, dim))  # the action: 9 steps of class-specific states
    window = rng.normal(scale=noise, size=(30, dim)) + 5.0 * rng.normal(size=dim)  # scene A dominates
    window[5:14] += pattern
    reference = rng.normal(scale=noise, size=(length, dim)) + 5.0 * rng.normal(size=dim)  # scene B
    reference[action[0]:action[1]] += pattern
    return window.astype("float32"), (5, 14), reference.astype("float32")


@pytest.mark.parametrize("seed", range(4))
def test_teacher_finds_the_planted_action_under_other_scenes(seed):
    window, (qs, qe), reference = planted_pair(np.random.default_rng(seed))
    assert teacher_segment_np(window, qs, qe, reference) == (12, 21)
    np.testing.assert_array_equal(teacher_segment_tf(window, qs, qe, reference).numpy(), [12, 21])


@pytest.mark.parametrize("seed", range(6))
def test_tf_and_numpy_agree_on_random_pairs(seed):
    rng = np.random.default_rng(100 + seed)
    window = rng.normal(size=(int(rng.integers(5, 30)), 8)).astype("float32")
    qs = int(rng.integers(0, window.shape[0] - 2))
    qe = int(rng.integers(qs + 1, window.shape[0] + 1))
    reference = rng.normal(size=(int(rng.integers(3, 90)), 8)).astype("float32")
    for kw in ({}, {"temperature": 0.5, "threshold_std": 0.0, "max_length": 7}, {"max_length": None}):
        expected = teacher_segment_np(window, qs, qe, reference, **kw)
        got = tuple(int(v) for v in teacher_segment_tf(window, qs, qe, reference, **kw).numpy())
        assert got == expected, kw
        limit = kw.get("max_length", 64) or reference.shape[0]
        assert 0 <= got[0] < got[1] <= reference.shape[0] and got[1] - got[0] <= limit


def test_constant_offsets_of_either_video_change_nothing():
    rng = np.random.default_rng(9)
    window, (qs, qe), reference = planted_pair(rng, noise=1.0)
    base = teacher_segment_np(window, qs, qe, reference)
    assert teacher_segment_np(window + 40.0 * rng.normal(size=16), qs, qe, reference) == base
    assert teacher_segment_np(window, qs, qe, reference - 40.0 * rng.normal(size=16)) == base
