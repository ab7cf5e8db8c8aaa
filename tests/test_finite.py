"""vreloc_tf/finite.py against a plain NumPy reference on random arrays."""
import numpy as np

from vreloc_tf.finite import first_non_finite


def test_first_non_finite_equals_argwhere():
    rng = np.random.default_rng(0)
    for trial in range(200):
        shape = tuple(rng.integers(1, 6, size=rng.integers(1, 4)))
        values = rng.standard_normal(shape).astype(np.float32)
        for _ in range(rng.integers(0, 3)):
            values[tuple(rng.integers(0, s) for s in shape)] = rng.choice([np.nan, np.inf, -np.inf])
        bad = np.argwhere(~np.isfinite(values))
        want = tuple(int(i) for i in bad[0]) if len(bad) else None
        assert first_non_finite(values) == want, (trial, values)


def test_an_overflowing_sum_of_finite_values_is_finite_and_empty_is_finite():
    assert first_non_finite(np.full((4, 3), 3e38, np.float32)) is None
    assert first_non_finite(np.zeros((0, 5), np.float32)) is None
