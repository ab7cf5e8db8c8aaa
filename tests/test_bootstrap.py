"""The class-level bootstrap with seed spread and the paired difference (issue #26 item 5) against a
plain one-draw-at-a-time reference, and the properties that make them worth having."""
import time

import numpy as np
import pytest

from vreloc_tf.evaluation import bootstrap
from vreloc_tf.evaluation import metrics


def _average(ious):
    """The metric module's own average mAP@1 of one run (mean of map_at_1's five numbers)."""
    return float(np.mean(list(metrics.map_at_1(ious).values())))


def _reference_values(ious, classes, seed_picks, class_picks):
    """One draw at a time: concatenate the drawn classes' pairs, score each drawn seed, average."""
    labels = np.unique(classes)
    values = []
    for seeds, drawn in zip(seed_picks, class_picks):
        pairs = np.concatenate([np.flatnonzero(classes == labels[k]) for k in drawn])
        values.append(np.mean([_average(ious[s, pairs]) for s in seeds]))
    return np.array(values)


def _reference_cluster(ious, classes, samples, seed, level=0.95):
    """cluster_bootstrap as documented: rng gives seed picks [samples, S], then class picks [samples, C]."""
    rng = np.random.default_rng(seed)
    count = len(np.unique(classes))
    seed_picks = rng.integers(0, ious.shape[0], size=(samples, ious.shape[0]))
    class_picks = rng.integers(0, count, size=(samples, count))
    values = _reference_values(ious, classes, seed_picks, class_picks)
    tail = 100 * (1 - level) / 2
    return np.percentile(values, [tail, 100 - tail])


def _reference_paired(ious_a, ious_b, classes, samples, seed, level=0.95):
    """paired_difference as documented: a's seed picks, b's seed picks, then class picks (shared)."""
    rng = np.random.default_rng(seed)
    count = len(np.unique(classes))
    picks_a = rng.integers(0, ious_a.shape[0], size=(samples, ious_a.shape[0]))
    picks_b = rng.integers(0, ious_b.shape[0], size=(samples, ious_b.shape[0]))
    class_picks = rng.integers(0, count, size=(samples, count))
    values = (_reference_values(ious_a, classes, picks_a, class_picks)
              - _reference_values(ious_b, classes, picks_b, class_picks))
    tail = 100 * (1 - level) / 2
    return np.percentile(values, [tail, 100 - tail])


def _width(result):
    return result["hi"] - result["lo"]


def _classed_ious(rng, seeds, classes, per_class, spread=0.1):
    """IoUs whose level depends on the class (a class difficulty), plus per-pair noise."""
    difficulty = rng.uniform(0.2, 1.0, classes)
    labels = np.repeat(np.arange(classes), per_class)
    ious = np.clip(difficulty[labels] + rng.normal(0, spread, (seeds, len(labels))), 0, 1)
    return ious, labels


# -- the metric ----------------------------------------------------------------------------------

def test_average_map_matches_the_metric_module():
    rng = np.random.default_rng(0)
    ious = rng.random((3, 4, 57))
    ious[0, 0, :5] = [0.5, 0.6, 0.7, 0.8, 0.9]  # exactly at a threshold: not a hit
    got = bootstrap.average_map(ious)
    assert got.shape == (3, 4)
    want = [[_average(row) for row in block] for block in ious]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert bootstrap.average_map(np.full(4, 0.9)) == pytest.approx(80.0)  # clears 0.5 ... 0.8


# -- the cluster bootstrap -----------------------------------------------------------------------

@pytest.mark.parametrize("seeds", [1, 3])
def test_cluster_bootstrap_matches_the_plain_reference(seeds):
    rng = np.random.default_rng(seeds)
    n = 90
    ious = rng.random((seeds, n))
    classes = np.array([3, 10, 42, 7, 11, 500, -2])[rng.integers(0, 7, n)]  # uneven, unsorted labels
    got = bootstrap.cluster_bootstrap(ious, classes, samples=300, seed=5, level=0.9)
    lo, hi = _reference_cluster(ious, classes, samples=300, seed=5, level=0.9)
    assert got["lo"] == pytest.approx(lo, rel=0, abs=1e-9)
    assert got["hi"] == pytest.approx(hi, rel=0, abs=1e-9)
    assert got["mean"] == pytest.approx(np.mean([_average(run) for run in ious]), rel=0, abs=1e-9)
    assert (got["samples"], got["classes"], got["seeds"]) == (300, 7, seeds)
    assert got["lo"] <= got["hi"]


def test_one_class_per_pair_is_a_pair_bootstrap():
    rng = np.random.default_rng(1)
    ious = rng.random(1000)
    classes = rng.permutation(1000)
    got = bootstrap.cluster_bootstrap(ious[None], classes, samples=2000, seed=3)
    lo, hi = metrics.bootstrap_interval(ious, samples=2000, seed=4)["average"]
    assert got["classes"] == 1000
    assert got["lo"] == pytest.approx(lo, abs=0.5)
    assert got["hi"] == pytest.approx(hi, abs=0.5)


def test_classes_that_are_all_hit_or_all_missed_widen_the_interval():
    per_class, count = 20, 10
    labels = np.repeat(np.arange(count), per_class)
    ious = np.where(labels < count // 2, 1.0, 0.0)  # half the classes all hits, half all misses
    cluster = bootstrap.cluster_bootstrap(ious[None], labels, samples=2000)
    lo, hi = metrics.bootstrap_interval(ious, samples=2000)["average"]
    assert cluster["mean"] == pytest.approx(50.0)
    assert _width(cluster) > 3 * (hi - lo)  # ~sqrt(20) times wider: 10 classes, not 200 pairs


def test_seed_spread_widens_the_interval():
    rng = np.random.default_rng(2)
    ious, labels = _classed_ious(rng, 1, 20, 30)
    better = np.clip(ious + 0.3, 0, 1)
    same = bootstrap.cluster_bootstrap(np.vstack([ious, ious]), labels)
    apart = bootstrap.cluster_bootstrap(np.vstack([ious, better]), labels)
    assert _width(apart) > 1.5 * _width(same)


def test_fixed_seed_is_deterministic_and_another_seed_differs():
    rng = np.random.default_rng(3)
    ious, labels = _classed_ious(rng, 3, 12, 10)
    assert bootstrap.cluster_bootstrap(ious, labels, seed=9) == bootstrap.cluster_bootstrap(ious, labels, seed=9)
    assert bootstrap.cluster_bootstrap(ious, labels, seed=9) != bootstrap.cluster_bootstrap(ious, labels, seed=10)
    b = np.clip(ious[:2] - 0.05, 0, 1)
    assert (bootstrap.paired_difference(ious, b, labels, seed=9)
            == bootstrap.paired_difference(ious, b, labels, seed=9))


def test_the_documented_case_runs_well_under_a_second():
    rng = np.random.default_rng(4)
    ious = rng.random((3, 1000))
    labels = rng.integers(0, 20, 1000)
    start = time.perf_counter()
    bootstrap.cluster_bootstrap(ious, labels, samples=2000)
    bootstrap.paired_difference(ious, ious[:1], labels, samples=2000)
    assert time.perf_counter() - start < 1.0


# -- the paired difference -----------------------------------------------------------------------

@pytest.mark.parametrize("seeds_a, seeds_b", [(1, 1), (3, 2)])
def test_paired_difference_matches_the_plain_reference(seeds_a, seeds_b):
    rng = np.random.default_rng(10 + seeds_a)
    n = 80
    a = rng.random((seeds_a, n))
    b = np.clip(a[:1] - rng.uniform(0, 0.2, (seeds_b, n)), 0, 1)
    classes = rng.integers(0, 6, n)
    got = bootstrap.paired_difference(a, b, classes, samples=300, seed=2)
    lo, hi = _reference_paired(a, b, classes, samples=300, seed=2)
    assert got["lo"] == pytest.approx(lo, rel=0, abs=1e-9)
    assert got["hi"] == pytest.approx(hi, rel=0, abs=1e-9)
    want = np.mean([_average(r) for r in a]) - np.mean([_average(r) for r in b])
    assert got["difference"] == pytest.approx(want, rel=0, abs=1e-9)
    assert got["above_zero"] == (got["lo"] > 0)
    assert (got["samples"], got["classes"]) == (300, 6)


def test_a_method_against_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(5)
    ious, labels = _classed_ious(rng, 1, 15, 8)
    got = bootstrap.paired_difference(ious, ious.copy(), labels)
    assert (got["difference"], got["lo"], got["hi"], got["above_zero"]) == (0.0, 0.0, 0.0, False)


def test_seeds_of_the_two_methods_are_drawn_independently():
    """The same three runs on both sides: the observed difference is 0, but the interval is not
    [0, 0], since ours seed 0 is not paired with the rival's seed 0."""
    rng = np.random.default_rng(6)
    ious, labels = _classed_ious(rng, 3, 15, 8, spread=0.3)
    got = bootstrap.paired_difference(ious, ious, labels)
    assert got["difference"] == 0.0
    assert got["lo"] < 0.0 < got["hi"]


def test_pairing_narrows_the_interval_of_correlated_methods():
    rng = np.random.default_rng(7)
    a, labels = _classed_ious(rng, 1, 20, 25)
    b = np.clip(a - 0.05, 0, 1)  # the same per pair, a little worse
    paired = bootstrap.paired_difference(a, b, labels, samples=2000, seed=1)
    # unpaired: each method gets its own class draws
    index, sizes = np.unique(labels, return_inverse=True)[1], np.bincount(labels)
    count = len(sizes)
    unpaired = []
    for seed, ious in ((11, a), (12, b)):
        draws = np.random.default_rng(seed).integers(0, count, size=(2000, count))
        unpaired.append(bootstrap.draw_statistics(bootstrap.class_sums(ious, index, count), sizes,
                                                  bootstrap.class_weights(draws, count),
                                                  np.zeros((2000, 1), dtype=int)))
    lo, hi = np.percentile(unpaired[0] - unpaired[1], [2.5, 97.5])
    assert paired["difference"] > 0 and paired["above_zero"]
    assert lo < 0.0  # unpaired, the same data cannot tell the two apart
    assert _width(paired) < 0.25 * (hi - lo)


# -- validation ----------------------------------------------------------------------------------

_IOUS = np.random.default_rng(8).random((2, 6))
_CLASSES = np.array([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("kwargs, message", [
    ({"ious": _IOUS[0]}, "ious must be"),
    ({"ious": np.zeros((0, 6))}, "ious must be"),
    ({"ious": np.where(np.eye(2, 6) > 0, np.nan, _IOUS)}, "ious has a non-finite"),
    ({"classes": _CLASSES[:5]}, "classes must be one label per pair"),
    ({"classes": _CLASSES.astype(float)}, "classes must be integer"),
    ({"classes": np.zeros(6, dtype=int)}, "at least 2 distinct classes"),
    ({"samples": 0}, "samples must be"),
    ({"samples": 2.5}, "samples must be"),
    ({"level": 0.0}, "level must lie"),
    ({"level": 1.0}, "level must lie"),
])
def test_cluster_bootstrap_refuses_bad_arguments(kwargs, message):
    args = {"ious": _IOUS, "classes": _CLASSES, "samples": 10, "level": 0.95}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        bootstrap.cluster_bootstrap(**args)


@pytest.mark.parametrize("kwargs, message", [
    ({"ious_b": _IOUS[:, :5]}, "ious_a and ious_b must score the same pairs"),
    ({"ious_a": _IOUS[0]}, "ious_a must be"),
    ({"ious_b": np.full((1, 6), np.inf)}, "ious_b has a non-finite"),
    ({"classes": np.ones(6, dtype=int)}, "at least 2 distinct classes"),
    ({"samples": -1}, "samples must be"),
    ({"level": 1.5}, "level must lie"),
])
def test_paired_difference_refuses_bad_arguments(kwargs, message):
    args = {"ious_a": _IOUS, "ious_b": _IOUS[:1], "classes": _CLASSES, "samples": 10, "level": 0.95}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        bootstrap.paired_difference(**args)
