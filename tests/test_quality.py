"""vreloc quality's aggregation: seed means, the joint bootstrap interval, the targets, and a
report made from finished pieces only (no training here: result files are written by hand)."""
import json
import os

import numpy as np
import pytest

from vreloc.quality import Study, format_family, summarize, targets
from vreloc_tf.metrics import THRESHOLD_KEYS, THRESHOLDS


def _result(method, ious, selection=None):
    ious = np.asarray(ious, dtype=float)
    per = {k: float(100.0 * np.mean(ious > t)) for k, t in zip(THRESHOLD_KEYS, THRESHOLDS)}
    return {"method": method, "pairs": len(ious), "map_at_1": per, "average": float(np.mean(list(per.values()))),
            "ious": ious.tolist(), "selection": selection}


def test_summarize_matches_a_plain_reference():
    rng = np.random.default_rng(3)
    runs = [_result("full", rng.uniform(0, 1, 40)) for _ in range(3)]
    got = summarize(runs, samples=300, seed=7)
    averages = np.array([r["average"] for r in runs])
    assert got["mean"]["average"] == pytest.approx(averages.mean())
    assert got["std"]["average"] == pytest.approx(averages.std(ddof=1))
    assert got["per_seed_average"] == pytest.approx(averages.tolist())
    # the joint bootstrap, written one resample at a time: the same pairs for every seed
    ious = np.array([r["ious"] for r in runs])
    picks = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    ref = [np.mean([100.0 * np.mean(ious[:, p] > t) for t in THRESHOLDS]) for p in picks]
    assert got["ci95_average"] == pytest.approx([np.percentile(ref, 2.5), np.percentile(ref, 97.5)])
    assert got["ci95_average"][0] <= got["mean"]["average"] <= got["ci95_average"][1]


def test_one_seed_has_zero_std():
    got = summarize([_result("full", [0.9, 0.1, 0.55])], samples=50)
    assert got["seeds"] == 1 and got["std"]["average"] == 0.0


def test_targets_are_checked_on_seed_means():
    rows = {"frame-level": {"mean": {"average": 10.0}}, "full": {"mean": {"average": 30.0}},
            "weak-ours": {"mean": {"average": 20.0}}}
    checks = targets(rows)
    assert checks["full >= frame-level + 10"]["met"]
    assert checks["weak (ours) >= frame-level + 5"]["met"]
    assert not checks["weak (ours) >= 0.7 x full"]["met"]
    assert checks["weak (ours) >= 0.7 x full"]["value"] == pytest.approx(20 / 30)


def test_finished_only_reports_what_exists_and_trains_nothing(tmp_path):
    out = str(tmp_path)
    fam = "substates"
    os.makedirs(os.path.join(out, "data", fam, "tfrecords"))
    open(os.path.join(out, "data", fam, "tfrecords", "manifest.json"), "w").write("{}")
    res = os.path.join(out, "results", fam)
    os.makedirs(res)
    rng = np.random.default_rng(0)
    for name in ("random", "prior", "frame-level"):
        json.dump(_result(name, rng.uniform(0, 0.6, 20)), open(os.path.join(res, f"{name}.json"), "w"))
    for seed in (0, 2):  # seed 1 never finished
        json.dump(_result("ours full", rng.uniform(0.3, 1, 20)), open(os.path.join(res, f"full-seed-{seed}.json"), "w"))
    study = Study(out, [fam, "periodic"], [0, 1, 2], ["full", "weak-ours"], finished_only=True)
    lines = []
    summary = study.run(progress=lines.append)
    assert list(summary) == [fam]  # periodic: nothing finished, left out
    rows = summary[fam]["rows"]
    assert rows["full"]["seeds"] == 2 and "weak-ours" not in rows
    assert not os.path.exists(os.path.join(out, "runs"))  # nothing was trained
    assert "full >= frame-level + 10" in summary[fam]["checks"]
    text = format_family(fam, summary[fam], markdown=True)
    assert "| ours full |" in text and "weak" not in text.split("Targets")[0]
