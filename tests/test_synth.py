"""vreloc synth: ActivityNet on-disk format, split geometry (own and the benchmark's), and its difficulty."""
import json
import os
from collections import defaultdict

import h5py
import numpy as np
import pytest

from pipeline import synth


@pytest.fixture(scope="module")
def default_synth(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synth"))
    summary = synth.generate(out, seed=0, dim=8)
    return out, summary


def load(out, name):
    with open(os.path.join(out, name)) as fh:
        return json.load(fh)


def check_activitynet_format(out, dim):
    """Every split entry's video is a v_<id>/c3d_features group with rows [::2] covering the window."""
    lengths = load(out, "length.json")
    with h5py.File(os.path.join(out, synth.HDF5_NAME), "r") as h5:
        assert set(h5) == {f"v_{v}" for v in lengths}
        for split in synth.SPLIT_NAMES:
            for e in load(out, f"{split}.json"):
                ds = h5[f"v_{e['id']}"]["c3d_features"]
                assert ds.dtype == np.float32 and ds.shape == (2 * lengths[e["id"]]["n_feat"], dim)
                n_sub = len(range(0, ds.shape[0], 2))
                lo, hi = e["location"]
                g0, g1 = e["groundtruth"]
                assert 0 <= lo < hi <= n_sub and 0 <= g0 < g1 <= hi - lo and g1 - g0 <= 32 and hi - lo <= 300


def test_default_dataset_geometry(default_synth):
    out, summary = default_synth
    splits = {s: load(out, f"{s}.json") for s in synth.SPLIT_NAMES}
    assert summary["entries"] == {s: len(v) for s, v in splits.items()}
    # >= 500 test entries: one pair moves a test number by less than 0.2 points
    assert len(splits["train"]) >= 1000 and len(splits["val"]) >= 250 and len(splits["test"]) >= 500
    classes = {s: {e["label"] for e in v} for s, v in splits.items()}
    assert not (classes["train"] & classes["val"]) and not (classes["train"] & classes["test"])
    assert not (classes["val"] & classes["test"])
    videos = {s: {e["id"] for e in v} for s, v in splits.items()}
    assert not (videos["train"] & videos["val"]) and not (videos["val"] & videos["test"])
    check_activitynet_format(out, 8)
    windows = np.array([e["location"][1] - e["location"][0] for v in splits.values() for e in v])
    actions = np.array([e["groundtruth"][1] - e["groundtruth"][0] for v in splits.values() for e in v])
    assert windows.max() <= 300 and actions.min() >= 4 and actions.max() <= 32
    lengths = load(out, "length.json")
    assert all(v["n_feat"] == v["n_frames"] // 16 for v in lengths.values())
    assert min(v["n_feat"] for v in lengths.values()) >= 40 and max(v["n_feat"] for v in lengths.values()) <= 200


def test_small_train_geometry_keeps_val_and_test(tmp_path):
    summary = synth.generate(str(tmp_path), seed=0, dim=4, geometry="small-train")
    assert 200 <= summary["entries"]["train"] <= 500 and summary["entries"]["test"] >= 500
    with pytest.raises(Exception, match="geometry"):
        synth.generate(str(tmp_path / "x"), seed=0, dim=4, geometry="huge")


@pytest.mark.parametrize("family", ["demo", "substates", "periodic", "shots"])
def test_every_family_is_deterministic_finite_and_its_own(family):
    from pipeline.families import FAMILIES, make_family
    from pipeline.synth import Instance

    inst = [Instance(1001, 10, 22), Instance(1001, 40, 47)]
    a = make_family(family, 3, 16).video(5, 60, inst)
    assert a.shape == (60, 16) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, make_family(family, 3, 16).video(5, 60, inst))  # same seed, same bytes
    assert not np.allclose(a, make_family(family, 4, 16).video(5, 60, inst))  # another seed, other features
    for other in FAMILIES:  # distractor needs a geometry: tests/test_family_distractor.py
        if other != family and not getattr(FAMILIES[other], "needs_geometry", False):
            assert not np.allclose(a, make_family(other, 3, 16).video(5, 60, inst))


def test_unknown_family_is_named():
    from pipeline.families import make_family

    with pytest.raises(ValueError, match="bogus.*demo"):
        make_family("bogus", 0, 8)


def test_the_same_action_is_closer_within_its_class_in_every_family():
    """Each family carries a class signal: the action means of two instances of one class (two
    videos, scenes removed by centring each video) are closer than those of two classes."""
    from pipeline.families import FAMILIES, make_family
    from pipeline.synth import Instance

    for family in FAMILIES:
        if getattr(FAMILIES[family], "needs_geometry", False):
            continue  # distractor: demo's actions plus planned ones, tests/test_family_distractor.py
        model = make_family(family, 0, 32)
        same, other = [], []
        for k in range(12):
            def action_mean(vid, label):
                x = model.video(vid, 80, [Instance(label, 30, 50)])
                x = x - x.mean(axis=0)
                return x[30:50].mean(axis=0)
            a, b, c = action_mean(100 + k, 1001), action_mean(200 + k, 1001), action_mean(300 + k, 1002)
            cos = lambda u, v: float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))  # noqa: E731
            same.append(cos(a, b))
            other.append(cos(a, c))
        assert np.mean(same) > np.mean(other) + 0.15, (family, np.mean(same), np.mean(other))


def test_feng_window_rule_on_random_layouts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(50, 900))
        k = int(rng.integers(1, 5))
        starts = np.sort(rng.choice(np.arange(0, n - 40, 40), size=min(k, max(1, (n - 40) // 40)), replace=False))
        spans = [(int(s), int(s) + int(rng.integers(1, 33))) for s in starts]
        for i, (s, e) in enumerate(spans):
            lo, hi = synth.feng_window(spans, i, n)
            assert lo <= s < e <= hi and hi - lo <= 300 and 0 <= lo and hi <= n
            # never reaches past the neighbours' edge feature
            if i > 0:
                assert lo >= spans[i - 1][1] - 1
            if i + 1 < len(spans):
                assert hi <= spans[i + 1][0] + 1
            if hi - lo < 300:  # not cut: the window is the whole gap between the neighbours
                assert lo == (spans[i - 1][1] - 1 if i > 0 else 0)
                assert hi == (spans[i + 1][0] + 1 if i + 1 < len(spans) else n)


def test_interleave_rows_subsample_is_identity():
    x = np.random.default_rng(1).standard_normal((7, 3)).astype(np.float32)
    rows = synth.interleave_rows(x)
    assert rows.shape == (14, 3)
    np.testing.assert_array_equal(rows[::2], x)
    np.testing.assert_allclose(rows[1:-1:2], 0.5 * (x[:-1] + x[1:]), rtol=1e-6)


def test_same_seed_same_bytes_other_seed_other_features(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    synth.generate(a, seed=5, dim=6)
    synth.generate(b, seed=5, dim=6)
    synth.generate(c, seed=6, dim=6)
    for name in ("train.json", "val.json", "test.json", "length.json"):
        assert open(os.path.join(a, name)).read() == open(os.path.join(b, name)).read()
    with h5py.File(os.path.join(a, synth.HDF5_NAME)) as ha, h5py.File(os.path.join(b, synth.HDF5_NAME)) as hb, \
            h5py.File(os.path.join(c, synth.HDF5_NAME)) as hc:
        for g in ha:
            np.testing.assert_array_equal(ha[g]["c3d_features"][()], hb[g]["c3d_features"][()])
        common = sorted(set(ha) & set(hc))
        assert any(ha[g]["c3d_features"].shape != hc[g]["c3d_features"].shape
                   or not np.allclose(ha[g]["c3d_features"][()], hc[g]["c3d_features"][()]) for g in common)


def test_benchmark_geometry_reproduced_exactly(benchmark_synth, shared_splits_dir):
    out = benchmark_synth
    bench_lengths = load(shared_splits_dir, "length.json")
    ids = set()
    for split in synth.SPLIT_NAMES:
        assert load(out, f"{split}.json") == load(shared_splits_dir, f"{split}.json")
        ids |= {e["id"] for e in load(shared_splits_dir, f"{split}.json")}
    lengths = load(out, "length.json")
    assert set(lengths) == ids and len(ids) == 4729
    assert all(lengths[v] == bench_lengths[v] for v in ids)
    check_activitynet_format(out, 8)


def test_bad_geometry_inputs_name_the_entry(tmp_path, shared_splits_dir):
    splits = tmp_path / "splits"
    splits.mkdir()
    for s in synth.SPLIT_NAMES:
        (splits / f"{s}.json").write_text(json.dumps([{"id": "v1", "label": 1, "location": [0, 12], "groundtruth": [1, 2]}]))
    (tmp_path / "length.json").write_text(json.dumps({"v1": {"n_feat": 10, "n_frames": 160}}))
    with pytest.raises(ValueError, match=r"train.json: entry 0 \(video v1\) has location \[0, 12\] past n_feat=10"):
        synth.generate(str(tmp_path / "o"), dim=4, lengths=str(tmp_path / "length.json"), splits_dir=str(splits))
    (tmp_path / "length.json").write_text(json.dumps({}))
    with pytest.raises(ValueError, match=r"entry 0 \(video v1\) is not in"):
        synth.generate(str(tmp_path / "o"), dim=4, lengths=str(tmp_path / "length.json"), splits_dir=str(splits))
    with pytest.raises(ValueError, match="--lengths and --splits go together"):
        synth.generate(str(tmp_path / "o"), dim=4, lengths=str(tmp_path / "length.json"))


# --------------------------------------------------------------------------- difficulty
#
# What the feature model promises (module docstring): the weak (co-attention) signal is in
# the raw features' segment means, while the frame-level baseline, fooled clip by clip, is
# far from solving the task. Checked on the demo data (seed 0, D = 32) with pairs drawn like
# the evaluation's (same class, another video, window at least as long as the query).


def iou(a, b):
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def map_at_1(ious):
    ious = np.asarray(ious)
    return float(np.mean([np.mean(ious > t) for t in (0.5, 0.6, 0.7, 0.8, 0.9)]))


def cosine(a, b):
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-7))


def coattention_np(query, reference, segment, alpha=0.3):
    """Eqs. 13-18 with one-hot probabilities: action = ``segment``, background = the rest."""
    s, e = segment
    inside = np.zeros(len(reference), bool)
    inside[s:e] = True
    q, r_a = query.mean(0), reference[inside].mean(0)
    r_b = reference[~inside].mean(0) if (~inside).any() else np.zeros_like(q)
    d_neg = alpha * cosine(q, r_b) + (1 - alpha) * cosine(r_a, r_b)
    return 1.0 / (1.0 + np.exp(-(d_neg - cosine(q, r_a))))


def best_coattention_segment(query, reference, alpha=0.3):
    """The segment minimizing the one-hot co-attention loss (all segments but the whole reference)."""
    length = len(reference)
    csum = np.concatenate([np.zeros((1, reference.shape[1])), np.cumsum(reference, 0)])
    q = query.mean(0) / np.linalg.norm(query.mean(0))
    best, segment = np.inf, (0, length)
    for s in range(length):
        e = np.arange(s + 1, length + 1)
        e = e[e - s < length]
        if e.size == 0:
            continue
        r_a = (csum[e] - csum[s]) / (e - s)[:, None]
        r_b = (csum[-1] - (csum[e] - csum[s])) / (length - (e - s))[:, None]
        n_a, n_b = np.linalg.norm(r_a, axis=1), np.linalg.norm(r_b, axis=1)
        arg = alpha * (r_b @ q) / n_b + (1 - alpha) * np.sum(r_a * r_b, 1) / (n_a * n_b) - (r_a @ q) / n_a
        k = int(np.argmin(arg))
        if arg[k] < best:
            best, segment = arg[k], (s, int(e[k]))
    return segment


@pytest.fixture(scope="module")
def demo_pairs(tmp_path_factory):
    """{split: [(query [Lq, D], reference [L, D], groundtruth (s, e))]} on the demo data."""
    out = str(tmp_path_factory.mktemp("demo"))
    synth.generate(out, seed=0, dim=32)
    with h5py.File(os.path.join(out, synth.HDF5_NAME), "r") as h5:
        feats = {g[2:]: h5[g]["c3d_features"][()][::2] for g in h5}
    pairs = {}
    for split in ("val", "test"):
        entries = load(out, f"{split}.json")
        by_class = defaultdict(list)
        for e in entries:
            by_class[e["label"]].append(e)
        rng = np.random.default_rng(0)
        pairs[split] = []
        for e in entries:
            lo = e["location"][0]
            query = feats[e["id"]][lo + e["groundtruth"][0]: lo + e["groundtruth"][1]]
            refs = [o for o in by_class[e["label"]] if o["id"] != e["id"]
                    and o["location"][1] - o["location"][0] >= len(query)]
            o = refs[rng.integers(len(refs))]
            pairs[split].append((query, feats[o["id"]][o["location"][0]:o["location"][1]], tuple(o["groundtruth"])))
    return pairs


def test_coattention_np_matches_the_training_loss(demo_pairs):
    """The NumPy reference below is the loss training uses (one-hot probabilities, no masks)."""
    from vreloc_tf.model.losses import coattention_loss

    for query, reference, (s, e) in demo_pairs["val"][:6]:
        probs = np.zeros((1, len(reference), 4), np.float32)
        probs[0, :, 3] = 1
        probs[0, s:e] = [0, 0, 1, 0]
        got = np.asarray(coattention_loss(query[None], np.array([len(query)]), reference[None],
                                          np.array([len(reference)]), probs, 0.3, False))[0]
        np.testing.assert_allclose(got, coattention_np(query, reference, (s, e)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("split", ["val", "test"])
def test_weak_signal_is_in_the_raw_segment_means(demo_pairs, split):
    """The co-attention loss with the ground-truth mask is clearly below the inverted mask's
    (the previous feature model of shared scene prototypes: 0.5645 vs 0.5674, no signal)."""
    gt, inverted = [], []
    for query, reference, (s, e) in demo_pairs[split]:
        if e - s == len(reference):
            continue  # no background: nothing to invert
        gt.append(coattention_np(query, reference, (s, e)))
        inside = np.zeros(len(reference), bool)
        inside[s:e] = True
        flipped = np.concatenate([reference[~inside], reference[inside]])  # background first, as one segment
        inverted.append(coattention_np(query, flipped, (0, int((~inside).sum()))))
    gt, inverted = np.array(gt), np.array(inverted)
    assert len(gt) >= 60
    assert np.mean(inverted - gt) > 0.1, (gt.mean(), inverted.mean())
    assert np.mean(gt < inverted) > 0.9


@pytest.mark.parametrize("split", ["val", "test"])
def test_frame_level_baseline_is_far_from_solving_it_segment_means_are_not(demo_pairs, split):
    """The project's frame-level baseline scores low; minimizing the co-attention loss over all
    segments of the raw features (what weak training asks for) scores far higher."""
    from vreloc_tf.evaluation.baselines import frame_level_segment

    frame_level, coattention = [], []
    for query, reference, gt in demo_pairs[split]:
        frame_level.append(iou(frame_level_segment(query, reference), gt))
        coattention.append(iou(best_coattention_segment(query, reference), gt))
    assert map_at_1(frame_level) < 0.25, map_at_1(frame_level)
    assert map_at_1(coattention) > map_at_1(frame_level) + 0.25, (map_at_1(frame_level), map_at_1(coattention))


def test_cli_synth(tmp_path, capsys):
    from vreloc import cli

    assert cli.main(["synth", "--out", str(tmp_path / "s"), "--dim", "4", "--seed", "2"]) == 0
    assert "synth: wrote" in capsys.readouterr().out
    check_activitynet_format(str(tmp_path / "s"), 4)
