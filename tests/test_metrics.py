"""mAP@1 and temporal IoU against brute-force set arithmetic; the paper-format table."""
import numpy as np
import pytest

from vreloc_tf.evaluation import metrics


def _set_iou(p, g):
    a, b = set(range(*p)), set(range(*g))
    return len(a & b) / len(a | b) if a | b else 0.0


def test_temporal_iou_matches_set_arithmetic_on_random_segments():
    rng = np.random.default_rng(0)
    n = 500
    gs = rng.integers(0, 30, n)
    ge = gs + rng.integers(1, 20, n)
    ps = rng.integers(0, 40, n)
    pe = ps + rng.integers(0, 25, n)  # includes empty predictions
    got = metrics.temporal_iou(ps, pe, gs, ge)
    want = [_set_iou((a, b), (c, d)) for a, b, c, d in zip(ps, pe, gs, ge)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_inverted_prediction_scores_zero_and_empty_groundtruth_is_an_error():
    assert metrics.temporal_iou(5, 2, 0, 10) == 0.0
    with pytest.raises(ValueError, match="ground truth"):
        metrics.temporal_iou(0, 3, 4, 4)


def test_map_at_1_counts_iou_strictly_above_each_threshold():
    rng = np.random.default_rng(1)
    ious = rng.random(1000)
    ious[:7] = 0.5  # exactly at a threshold: not counted at 0.5
    got = metrics.map_at_1(ious)
    for t, key in zip(metrics.THRESHOLDS, metrics.THRESHOLD_KEYS):
        assert got[key] == pytest.approx(100.0 * sum(1 for v in ious if v > t) / len(ious))
    assert metrics.map_at_1([0.5])["0.5"] == 0.0
    with pytest.raises(ValueError, match="no pairs"):
        metrics.map_at_1([])


def test_result_dict_and_table_format():
    rng = np.random.default_rng(2)
    a = metrics.result_dict("Method A", "test", rng.random(40))
    b = metrics.result_dict("B", "test", rng.random(40))
    assert set(a) == {"method", "split", "pairs", "map_at_1", "average", "ci95", "ious"}
    assert len(a["ious"]) == 40
    assert a["pairs"] == 40
    assert a["average"] == pytest.approx(np.mean(list(a["map_at_1"].values())))
    table = metrics.format_table([a, b], title="Table X")
    lines = table.splitlines()
    assert lines[0] == "Table X"
    assert lines[1].split() == ["mAP@1", "0.5", "0.6", "0.7", "0.8", "0.9", "Avg."]
    row = lines[2]
    assert row.startswith("Method A")
    cells = row[len("Method A"):].split()
    assert cells == [f"{a['map_at_1'][k]:.1f}" for k in metrics.THRESHOLD_KEYS] + [f"{a['average']:.1f}"]
    assert "(40 pairs, split test)" in table


def test_table_flags_rows_from_different_pair_lists_and_names_bad_rows():
    a = metrics.result_dict("A", "test", [0.9, 0.1])
    b = metrics.result_dict("B", "val", [0.9])
    assert "WARNING" in metrics.format_table([a, b])
    with pytest.raises(ValueError, match="lacks"):
        metrics.format_table([{"method": "C"}])


def test_bootstrap_interval_against_a_plain_loop_and_around_the_estimate():
    rng = np.random.default_rng(3)
    ious = rng.random(60)
    ci = metrics.bootstrap_interval(ious, samples=300, seed=5)
    # the same resamples, written as a plain loop
    picks = np.random.default_rng(5).integers(0, 60, size=(300, 60))
    averages = [np.mean([100 * np.mean(ious[p] > t) for t in metrics.THRESHOLDS]) for p in picks]
    np.testing.assert_allclose(ci["average"], np.percentile(averages, [2.5, 97.5]))
    point = metrics.result_dict("m", "test", ious)
    for key in metrics.THRESHOLD_KEYS:
        lo, hi = point["ci95"][key]
        assert lo <= point["map_at_1"][key] <= hi
    assert metrics.bootstrap_interval(ious, seed=5) == metrics.bootstrap_interval(ious, seed=5)
    wide = metrics.bootstrap_interval(ious[:10])["average"]
    narrow = metrics.bootstrap_interval(np.tile(ious[:10], 50))["average"]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]  # more pairs, a narrower interval
    table = metrics.format_table([point])
    assert "95% CI" in table and f"[{point['ci95']['average'][0]:.1f}, {point['ci95']['average'][1]:.1f}]" in table
