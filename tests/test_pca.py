"""pipeline.pca: the mergeable statistics equal NumPy's PCA, across bundles and merges."""
import logging

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from pipeline.pca import PCA, PCAStats, PCAStatsCombineFn, fit_pca


def correlated_data(n, d, seed=0, rank=None):
    """Anisotropic data with a non-zero mean (and optionally an exact low rank)."""
    rng = np.random.default_rng(seed)
    r = rank or d
    basis = rng.standard_normal((r, d)) * np.geomspace(5.0, 0.5, r)[:, None]
    return rng.standard_normal((n, r)) @ basis + rng.uniform(-3, 3, d)


def numpy_pca(x, k):
    """Reference: SVD of the centred data, sample variances, sklearn's sign rule."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    return x.mean(axis=0), comps * signs[:, None], (s[:k] ** 2) / (len(x) - 1)


def assert_same_pca(pca, x, k):
    mean, comps, var = numpy_pca(x, k)
    np.testing.assert_allclose(pca.mean, mean, atol=1e-9)
    np.testing.assert_allclose(pca.explained_variance, var, rtol=1e-7, atol=1e-9)
    # up to sign (the reference already fixes signs like fit_pca, but do not rely on it)
    flips = np.sign(np.sum(pca.components * comps, axis=1))
    np.testing.assert_allclose(pca.components * flips[:, None], comps, atol=1e-5)
    np.testing.assert_array_equal(flips, 1)


def accumulate(fn, part):
    acc = fn.create_accumulator()
    for element in part:
        acc = fn.add_input(acc, element)
    return acc


def combine_locally(fn, parts):
    """Each part in its own accumulator (as separate bundles would), then one merge."""
    return fn.extract_output(fn.merge_accumulators([accumulate(fn, part) for part in parts]))


def test_combine_fn_in_a_pipeline_equals_numpy_pca():
    d, k = 12, 5
    x = correlated_data(90, d, seed=1)
    # 7 batches of uneven sizes plus single vectors: several elements, several bundles
    cuts = [0, 5, 17, 30, 31, 50, 66, 80]
    elements = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:])] + [x[i] for i in range(80, 90)]

    def check(outputs):
        assert len(outputs) == 1
        assert outputs[0].n_components == k
        assert_same_pca(outputs[0], x, k)

    with test_pipeline.TestPipeline() as p:
        pcas = (p
                | beam.Create(elements, reshuffle=True)
                | beam.CombineGlobally(PCAStatsCombineFn(dim=d))
                | beam.Map(fit_pca, n_components=k))
        assert_that(pcas, check)


def test_per_key_combines_keep_keys_apart():
    a, b = correlated_data(40, 6, seed=2), correlated_data(30, 6, seed=3) * 4

    def check(outputs):
        got = dict(outputs)
        assert sorted(got) == ["a", "b"]
        assert_same_pca(got["a"], a, 3)
        assert_same_pca(got["b"], b, 3)

    with test_pipeline.TestPipeline() as p:
        elements = [("a", a[i:i + 7]) for i in range(0, 40, 7)] + [("b", b[i:i + 4]) for i in range(0, 30, 4)]
        out = (p | beam.Create(elements) | beam.CombinePerKey(PCAStatsCombineFn())
               | beam.MapTuple(lambda key, stats: (key, fit_pca(stats, 3))))
        assert_that(out, check)


def test_merge_accumulators_equals_one_pass_and_numpy():
    x = correlated_data(200, 16, seed=4)
    fn = PCAStatsCombineFn()
    rng = np.random.default_rng(5)
    cuts = np.sort(rng.choice(np.arange(1, 200), 9, replace=False))
    parts = [[chunk] for chunk in np.split(x, cuts)]
    merged = combine_locally(fn, parts + [[]])  # an empty accumulator merges as a no-op
    single = combine_locally(fn, [[x]])
    assert merged.count == single.count == 200
    np.testing.assert_allclose(merged.total, x.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.outer, x.T @ x, rtol=1e-12)
    np.testing.assert_allclose(merged.covariance(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    assert_same_pca(fit_pca(merged, 8), x, 8)
    # merging is order independent
    reverse = combine_locally(fn, list(reversed(parts)))
    np.testing.assert_allclose(reverse.outer, merged.outer, rtol=1e-12)
    # merging nested partial merges (as a runner's combiner tree does) changes nothing
    left = fn.merge_accumulators([accumulate(fn, p) for p in parts[:4]])
    right = fn.merge_accumulators([accumulate(fn, p) for p in parts[4:]])
    nested = fn.extract_output(fn.merge_accumulators([left, right]))
    assert nested.count == 200
    np.testing.assert_allclose(nested.outer, merged.outer, rtol=1e-12)


def test_rank_deficient_data_zero_fills_and_warns(caplog):
    d, n, k = 10, 4, 6  # 4 samples: centred rank 3
    x = correlated_data(n, d, seed=6)
    stats = combine_locally(PCAStatsCombineFn(), [[x]])
    with caplog.at_level(logging.WARNING, logger="vreloc.pca"):
        pca = fit_pca(stats, n_components=k)
    assert "only 3 of the 6 requested components" in caplog.text
    assert pca.components.shape == (k, d) and pca.explained_variance.shape == (k,)
    np.testing.assert_array_equal(pca.components[3:], 0)
    np.testing.assert_array_equal(pca.explained_variance[3:], 0)
    assert_same_pca(PCA(pca.mean, pca.components[:3], pca.explained_variance[:3]), x, 3)
    # the kept components are orthonormal; projections reconstruct the data exactly
    np.testing.assert_allclose(pca.components[:3] @ pca.components[:3].T, np.eye(3), atol=1e-10)
    z = pca.transform(x).astype(np.float64)
    np.testing.assert_allclose(z @ pca.components + pca.mean, x, atol=1e-4)


def test_exact_low_rank_data_beyond_the_sample_count():
    x = correlated_data(50, 8, seed=7, rank=3)  # 50 samples but only 3 directions of variance
    pca = fit_pca(combine_locally(PCAStatsCombineFn(), [[x]]), n_components=5)
    assert np.count_nonzero(pca.explained_variance) == 3
    np.testing.assert_array_equal(pca.components[3:], 0)


def test_more_components_than_dims_keeps_the_requested_width(caplog):
    x = correlated_data(30, 4, seed=8)
    with caplog.at_level(logging.WARNING, logger="vreloc.pca"):
        pca = fit_pca(combine_locally(PCAStatsCombineFn(), [[x]]), n_components=7)
    assert "only 4 of the 7" in caplog.text
    assert pca.transform(x).shape == (30, 7)
    assert_same_pca(PCA(pca.mean, pca.components[:4], pca.explained_variance[:4]), x, 4)
    np.testing.assert_array_equal(pca.transform(x)[:, 4:], 0)


def test_transform_matches_centred_projection():
    x = correlated_data(60, 9, seed=9)
    pca = fit_pca(combine_locally(PCAStatsCombineFn(), [[x]]), n_components=4)
    z = pca.transform(x[:5])
    assert z.dtype == np.float32 and z.shape == (5, 4)
    np.testing.assert_allclose(z, (x[:5] - x.mean(axis=0)) @ numpy_pca(x, 4)[1].T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="input dim 8 does not match the PCA's dim 9"):
        pca.transform(x[:, :8])


def test_save_load_round_trip_bit_for_bit(tmp_path):
    x = correlated_data(40, 7, seed=10)
    pca = fit_pca(combine_locally(PCAStatsCombineFn(), [[x]]), n_components=5)
    path = tmp_path / "pca.npz"
    pca.save(str(path))
    pca.save(str(path))  # a rerun replaces the file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pca.npz"]
    again = PCA.load(str(path))
    for field in ("mean", "components", "explained_variance"):
        np.testing.assert_array_equal(getattr(again, field), getattr(pca, field))
        assert getattr(again, field).dtype == getattr(pca, field).dtype
    with np.load(path) as npz:
        assert sorted(npz.files) == ["components", "explained_variance", "mean"]


def test_bad_inputs_are_named(tmp_path):
    fn = PCAStatsCombineFn(dim=5)
    with pytest.raises(ValueError, match="dim 4, expected 5"):
        fn.add_input(fn.create_accumulator(), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        fn.add_input(fn.create_accumulator(), np.array([1.0, np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"\[D\] or a batch \[n, D\]"):
        fn.add_input(fn.create_accumulator(), np.zeros((2, 2, 5)))
    free = PCAStatsCombineFn()
    acc = free.add_input(free.create_accumulator(), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dim 4, expected 3"):
        free.add_input(acc, np.zeros(4))
    with pytest.raises(ValueError, match="no training vectors"):
        free.extract_output(free.create_accumulator())
    with pytest.raises(ValueError, match="cannot merge PCA statistics of dims 3 and 2"):
        free.merge_accumulators([acc, free.add_input(free.create_accumulator(), np.zeros(2))])
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros(3))
    with pytest.raises(ValueError, match=r"lacks \['components', 'explained_variance'\]"):
        PCA.load(str(bad))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz"):
        PCA.load(str(tmp_path / "junk.npz"))
    with pytest.raises(ValueError, match="inconsistent PCA shapes"):
        PCA(np.zeros(3), np.zeros((2, 4)), np.zeros(2))
    np.savez(bad, mean=np.zeros(3), components=np.zeros((2, 4)), explained_variance=np.zeros(2))
    with pytest.raises(ValueError, match=r"bad.npz: inconsistent PCA shapes"):
        PCA.load(str(bad))



def test_single_sample_has_no_variance(caplog):
    one = np.array([[1.0, 2.0, 3.0]])
    stats = combine_locally(PCAStatsCombineFn(), [[one]])
    assert isinstance(stats, PCAStats) and stats.count == 1
    np.testing.assert_array_equal(stats.covariance(), np.zeros((3, 3)))
    with caplog.at_level(logging.WARNING, logger="vreloc.pca"):
        pca = fit_pca(stats, n_components=2)
    assert "only 0 of the 2" in caplog.text
    np.testing.assert_array_equal(pca.mean, one[0])
    np.testing.assert_array_equal(pca.transform(one), np.zeros((1, 2), np.float32))


@pytest.mark.slow
def test_full_size_fc7_to_500_dims_with_fewer_clips_than_dims(caplog):
    # the extract-video setting on a small folder: 4,096-d fc7, 300 training clips, 500 components
    rng = np.random.default_rng(12)
    x = np.maximum(correlated_data(300, 4096, seed=12, rank=64) + rng.standard_normal((300, 4096)) * 0.1, 0)
    parts = [[chunk] for chunk in np.array_split(x, 6)]
    with caplog.at_level(logging.WARNING, logger="vreloc.pca"):
        pca = fit_pca(combine_locally(PCAStatsCombineFn(dim=4096), parts), n_components=500)
    assert "only 299 of the 500 requested components" in caplog.text
    assert pca.components.shape == (500, 4096) and pca.transform(x[:3]).shape == (3, 500)
    np.testing.assert_array_equal(pca.components[299:], 0)
    assert_same_pca(PCA(pca.mean, pca.components[:50], pca.explained_variance[:50]), x, 50)
