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


@pytest.fixture(scope="module")
def benchmark_synth(tmp_path_factory, shared_splits_dir):
    out = str(tmp_path_factory.mktemp("bench"))
    synth.generate(out, seed=0, dim=8, lengths=os.path.join(shared_splits_dir, "length.json"),
                   splits_dir=shared_splits_dir)
    return out


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
    assert 200 <= len(splits["train"]) <= 500 and all(40 <= len(splits[s]) <= 120 for s in ("val", "test"))
    classes = {s: {e["label"] for e in v} for s, v in splits.items()}
    assert not (classes["train"] & classes["val"]) and not (classes["train"] & classes["test"])
    assert not (classes["val"] & classes["test"])
    videos = {s: {e["id"] for e in v} for s, v in splits.items()}
    assert not (videos["train"] & videos["val"]) and not (videos["val"] & videos["test"])
    check_activitynet_format(out, 8)
    windows = np.array([e["location"][1] - e["location"][0] for v in splits.values() for e in v])
    assert windows.max() <= 300 and np.median(windows) < 80  # skewed short for the demo
    lengths = load(out, "length.json")
    assert all(v["n_feat"] == v["n_frames"] // 16 for v in lengths.values())


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


def frame_level_baseline(query, reference):
    """The paper's frame-level baseline (Feng et al.): cosine of L2-normalized frames, best average segment.

    Per reference frame, the mean cosine to the query frames; the segment is the
    maximum-sum run of (score - threshold), threshold halfway between the median
    and the best frame score (a plain "best average" would pick a single frame).
    """
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    r = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    score = (q @ r.T).mean(0)
    gain = score - 0.5 * (score.max() + np.median(score))
    best, run, start, seg = -np.inf, 0.0, 0, (0, 1)
    for j, g in enumerate(gain):
        if run <= 0:
            run, start = 0.0, j
        run += g
        if run > best:
            best, seg = run, (start, j + 1)
    return seg


def iou(a, b):
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def map_at_1(ious):
    ious = np.asarray(ious)
    return float(np.mean([np.mean(ious > t) for t in (0.5, 0.6, 0.7, 0.8, 0.9)]))


def fixed_width_baseline(query, reference):
    """The project's frame-level baseline (vreloc_tf.baselines): best mean over query-length windows."""
    from vreloc_tf.baselines import frame_level_segment

    return frame_level_segment(query, reference)


@pytest.mark.parametrize("split,decoder,margin", [("train", "max_run", 0.2), ("test", "max_run", 0.2),
                                                  ("test", "fixed_width", 0.1)])
def test_frame_level_baseline_fails_where_a_learnable_projection_succeeds(tmp_path, split, decoder, margin):
    """On D=32 demo data the raw baseline scores low; the same baseline after projecting onto the
    action subspace (what one learned linear layer can do, class-agnostic) scores far higher."""
    baseline = {"max_run": frame_level_baseline, "fixed_width": fixed_width_baseline}[decoder]
    out = str(tmp_path / "d")
    synth.generate(out, seed=0, dim=32)
    model = synth.FeatureModel(0, 32)
    projection = model.u_action.T @ model.u_action
    entries = load(out, f"{split}.json")
    by_class = defaultdict(list)
    for e in entries:
        by_class[e["label"]].append(e)
    rng = np.random.default_rng(0)
    raw, projected = [], []
    with h5py.File(os.path.join(out, synth.HDF5_NAME), "r") as h5:
        feats = {g[2:]: h5[g]["c3d_features"][()][::2] for g in h5}
    for e in entries:
        lo = e["location"][0]
        query = feats[e["id"]][lo + e["groundtruth"][0]: lo + e["groundtruth"][1]]
        refs = [o for o in by_class[e["label"]] if o["id"] != e["id"]
                and o["location"][1] - o["location"][0] >= len(query)]
        o = refs[rng.integers(len(refs))]
        ref = feats[o["id"]][o["location"][0]:o["location"][1]]
        raw.append(iou(baseline(query, ref), o["groundtruth"]))
        projected.append(iou(baseline(query @ projection, ref @ projection), o["groundtruth"]))
    assert len(raw) >= 60
    assert map_at_1(raw) < 0.22, map_at_1(raw)
    assert map_at_1(projected) > map_at_1(raw) + margin, (map_at_1(raw), map_at_1(projected))


def test_cli_synth(tmp_path, capsys):
    from vreloc_tf import cli

    assert cli.main(["synth", "--out", str(tmp_path / "s"), "--dim", "4", "--seed", "2"]) == 0
    assert "synth: wrote" in capsys.readouterr().out
    check_activitynet_format(str(tmp_path / "s"), 4)
