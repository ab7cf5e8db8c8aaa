"""Baselines against brute-force references; the statistical prior on the real split geometry."""
import json
import os

import numpy as np
import pytest

from helpers import records as F
from vreloc_tf.evaluation import baselines
from vreloc_tf.evaluation import metrics
from vreloc_tf.data import schema
from vreloc_tf.data.artifacts import Dataset
from vreloc.cli import main as cli_main
from vreloc_tf.data.entry_index import load_index


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return F.make_data_dir(str(tmp_path_factory.mktemp("base_data")), dim=6)


def test_random_segments_are_seeded_non_empty_and_inside():
    lengths = np.random.default_rng(0).integers(1, 50, 300)
    s, e = baselines.random_segments(lengths, seed=3)
    assert np.all((0 <= s) & (s < e) & (e <= lengths))
    s2, e2 = baselines.random_segments(lengths, seed=3)
    np.testing.assert_array_equal(s, s2)
    assert not np.array_equal(s, baselines.random_segments(lengths, seed=4)[0])
    ones = baselines.random_segments(np.ones(5, int), 0)
    assert ones[0].tolist() == [0] * 5 and ones[1].tolist() == [1] * 5


def test_prior_segments_round_to_nearest_index():
    lengths = np.arange(1, 200)
    s, e = baselines.prior_segments(lengths, 0.3265, 0.6509)
    for L, a, b in zip(lengths, s, e):
        want_s = min(int(0.3265 * L + 0.5), L - 1)
        want_e = min(max(int(0.6509 * L + 0.5), want_s + 1), L)
        assert (a, b) == (want_s, want_e)


def test_frame_level_matches_a_brute_force_search():
    rng = np.random.default_rng(5)
    for _ in range(30):
        lq, lr, d = rng.integers(1, 8), rng.integers(1, 25), 5
        q, r = rng.normal(size=(lq, d)), rng.normal(size=(lr, d))
        w = min(lq, lr)
        best, best_score = None, -np.inf
        for s in range(lr - w + 1):
            score = np.mean([[np.dot(r[i], q[j]) / np.linalg.norm(r[i]) / np.linalg.norm(q[j])
                              for j in range(lq)] for i in range(s, s + w)])
            if score > best_score + 1e-12:
                best, best_score = (s, s + w), score
        assert baselines.frame_level_segment(q, r) == best


def test_train_prior_is_the_mean_normalized_groundtruth(data_dir):
    recs = schema.read_records(data_dir, "train")
    want = (np.mean([r.groundtruth[0] / r.length for r in recs]), np.mean([r.groundtruth[1] / r.length for r in recs]))
    np.testing.assert_allclose(baselines.train_prior(data_dir), want, rtol=1e-12)


def test_cli_scores_every_baseline_on_one_pair_list(data_dir, tmp_path, capsys):
    pairs = str(tmp_path / "pairs.json")
    results = []
    for method in baselines.METHODS:
        out = str(tmp_path / f"{method}.json")
        assert cli_main(["baseline", "--method", method, "--data", data_dir, "--split", "test",
                         "--pairs", pairs, "--json", out]) == 0
        with open(out) as fh:
            results.append(json.load(fh))
        assert results[-1] == baselines.run_baseline(method, Dataset.open(data_dir), "test", pairs, verbose=False)
    printed = capsys.readouterr()
    assert "mean start" in printed.err
    assert all(r["pairs"] == results[0]["pairs"] and r["split"] == "test" for r in results)
    # the frame-level result re-scored by hand from the pair list
    index = load_index(data_dir, "test")
    recs = {r.entry_index: r for r in schema.read_records(data_dir, "test")}
    with open(pairs) as fh:
        plist = json.load(fh)["pairs"]
    ious = []
    for p in plist:
        q, r = recs[p["query"]], recs[p["reference"]]
        s, e = baselines.frame_level_segment(q.features[q.groundtruth[0]:q.groundtruth[1]], r.features)
        ious.append(metrics.temporal_iou(s, e, *r.groundtruth))
    assert results[2]["map_at_1"] == metrics.map_at_1(ious)
    assert len(index) == len(recs)
    assert cli_main(["evaluate", "--table", *(str(tmp_path / f"{m}.json") for m in baselines.METHODS)]) == 0
    table = capsys.readouterr().out
    for name in ("Random", "Stat. prior", "FL Baseline"):
        assert name in table


def test_unknown_method_is_named(data_dir):
    with pytest.raises(ValueError, match="unknown baseline 'median'"):
        baselines.run_baseline("median", Dataset.open(data_dir))


def _write_geometry_split(splits_dir, data_dir, split):
    """Records with the benchmark's windows, labels and ground truth (1-d zero features)."""
    with open(os.path.join(splits_dir, f"{split}.json")) as fh:
        entries = json.load(fh)
    records = [schema.Record(video_id=e["id"], split=split, entry_index=i, label=e["label"],
                             window=tuple(e["location"]), groundtruth=tuple(e["groundtruth"]),
                             features=np.zeros((e["location"][1] - e["location"][0], 1), np.float32))
               for i, e in enumerate(entries)]
    F.write_split(data_dir, split, records, shards=1)
    return len(records)


def test_prior_reproduces_the_papers_statistical_prior_row(shared_splits_dir, tmp_path, capsys):
    """Table 4, Stat. prior: 25.4 at IoU 0.5 and 10.7 on average; train means 0.3265 / 0.6509."""
    d = str(tmp_path)
    counts = {s: _write_geometry_split(shared_splits_dir, d, s) for s in ("train", "test")}
    F.write_manifest(d, 1, counts)
    ms, me = baselines.train_prior(d)
    assert abs(ms - 0.3265) < 5e-4 and abs(me - 0.6509) < 5e-4
    for seed in (0, 1):
        result = baselines.run_baseline("prior", Dataset.open(d), "test", seed=seed)
        assert result["pairs"] == 978
        assert abs(result["map_at_1"]["0.5"] - 25.4) <= 1.0, result
        assert abs(result["average"] - 10.7) <= 1.0, result
    assert "mean start 0.3267, mean end 0.6510" in capsys.readouterr().err


# --- query-free control -------------------------------------------------------------------------

def _brute_force_best(d):
    """[start, end) maximizing sum(d[start:end]) by trying every segment; ties -> earliest, then shortest."""
    best, seg = -np.inf, None
    for start in range(len(d)):
        for end in range(start + 1, len(d) + 1):
            value = float(np.sum(d[start:end]))
            if value > best:
                best, seg = value, (start, end)
    return seg


def _brute_force_query_free(reference):
    x = np.asarray(reference, np.float64)
    s = np.array([np.sqrt(np.sum((row - x.mean(axis=0)) ** 2)) for row in x])
    return _brute_force_best(s - s.mean())


def test_max_sum_segment_matches_every_segment_with_exact_ties():
    rng = np.random.default_rng(11)
    for _ in range(400):  # small integers: exact sums, so many exact ties
        d = rng.integers(-3, 4, rng.integers(1, 16)).astype(np.float64)
        assert baselines.max_sum_segment(d) == _brute_force_best(d), d
    assert baselines.max_sum_segment(np.array([1.0, -1.0, 1.0])) == (0, 1)  # earliest, then shortest
    assert baselines.max_sum_segment(np.array([-2.0, -1.0, -1.0])) == (1, 2)  # all <= 0: single best step
    assert baselines.max_sum_segment(np.zeros(5)) == (0, 1)
    assert baselines.max_sum_segment(np.array([-5.0])) == (0, 1)


def test_query_free_segment_matches_a_brute_force_search():
    for seed in range(60):
        rng = np.random.default_rng(seed)
        for length in (1, 2, 3, 7, 20):
            ref = rng.normal(size=(length, 4)) * rng.uniform(0.1, 3.0, size=(length, 1))
            assert baselines.query_free_segment(ref) == _brute_force_query_free(ref), (seed, length)
    # all-equal norms (identical rows; +-v about a zero mean): every term is 0 -> the first step
    assert baselines.query_free_segment(np.full((6, 3), 0.1)) == (0, 1)
    v = np.array([0.3, -1.7, 2.2])
    assert baselines.query_free_segment(np.stack([v, -v, v, -v])) == (0, 1)
    assert baselines.query_free_segment(np.ones((1, 5))) == (0, 1)


def test_query_free_never_reads_padding():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 15, 40)
    refs = [rng.normal(size=(n, 5)) for n in lengths]
    want = [baselines.query_free_segment(r) for r in refs]
    for fill in (0.0, 1e6, np.nan):
        padded = np.full((len(refs), 20, 5), fill)
        if fill != 0.0 and not np.isnan(fill):
            padded = rng.normal(scale=fill, size=padded.shape)
        for i, r in enumerate(refs):
            padded[i, :len(r)] = r
        s, e = baselines.query_free_batch(padded, lengths)
        assert list(zip(s.tolist(), e.tolist())) == want


def test_query_free_never_reads_the_query(data_dir, tmp_path):
    from vreloc_tf.evaluation.scoring import resolve_pairs
    from vreloc_tf.data.input_pipeline import evaluation_plan

    pairs_file = str(tmp_path / "pairs.json")
    index, pairs = resolve_pairs(data_dir, "test", pairs_file, 0)
    plan = evaluation_plan(index, pairs)
    assert len(plan) >= 3
    permuted = plan.copy()
    order = np.roll(np.arange(len(plan)), 1)
    permuted[:, [0, 2, 3]] = plan[order][:, [0, 2, 3]]  # every pair gets another pair's query
    assert not np.array_equal(permuted[:, 0], plan[:, 0])
    got = baselines.query_free_segments(index, plan, 6)
    again = baselines.query_free_segments(index, permuted, 6)
    np.testing.assert_array_equal(got[0], again[0])
    np.testing.assert_array_equal(got[1], again[1])
    # the same through run_baseline and a pair list whose queries are permuted
    with open(pairs_file) as fh:
        doc = json.load(fh)
    moved = [dict(p) for p in doc["pairs"]]
    for p, src in zip(moved, order):
        for key in ("query", "query_video"):
            if key in doc["pairs"][src]:
                p[key] = doc["pairs"][src][key]
    doc["pairs"] = moved
    other_file = str(tmp_path / "pairs_permuted.json")
    with open(other_file, "w") as fh:
        json.dump(doc, fh)
    assert baselines.run_baseline("query-free", Dataset.open(data_dir), "test", other_file, verbose=False) == \
        baselines.run_baseline("query-free", Dataset.open(data_dir), "test", pairs_file, verbose=False)


def test_cli_query_free_on_the_tiny_data(tiny_data_dir, tmp_path, capsys):
    out = str(tmp_path / "qf.json")
    assert cli_main(["baseline", "--method", "query-free", "--data", tiny_data_dir, "--json", out]) == 0
    with open(out) as fh:
        result = json.load(fh)
    assert result["method"] == "query-free" and result["split"] == "test" and result["pairs"] > 0
    assert all(0.0 <= v <= 100.0 for v in result["map_at_1"].values()) and 0.0 <= result["average"] <= 100.0
    assert "query-free" in capsys.readouterr().out


# --- window matcher (issue #26 item 4) ----------------------------------------------------------

def _random_basis(rng, d, k):
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return q[:, :k]


def _brute_force_window_match(query, reference, basis=None):
    """Every (start, end) tried one by one, each step's score computed row by row (the rule of
    baselines.window_match): (start, end) of the largest sum, ties -> earliest start, then shortest."""
    q, r = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    v = np.eye(r.shape[1]) if basis is None else np.asarray(basis, np.float64)
    centre = np.mean(r, axis=0)
    direction = np.mean([v.T @ (x - centre) for x in q], axis=0)
    norm = np.sqrt(np.sum(direction * direction))
    if norm <= 1e-9:
        d = np.zeros(len(r))
    else:
        d = np.array([float(np.dot(v.T @ (x - centre), direction / norm)) for x in r])
        d = d - np.mean(d)
    best, seg = -np.inf, None
    for start in range(len(r)):
        for end in range(start + 1, len(r) + 1):
            value = float(np.sum(d[start:end]))
            if value > best:
                best, seg = value, (start, end)
    return seg


def test_window_match_matches_a_brute_force_search():
    rng = np.random.default_rng(26)
    cases = 0
    for _ in range(400):  # continuous features, scales varying per row, with and without a subspace
        lq, lr, d = int(rng.integers(1, 9)), int(rng.integers(1, 25)), int(rng.integers(1, 7))
        q = rng.normal(size=(lq, d)) * rng.uniform(0.1, 3.0, (lq, 1)) + rng.normal(size=d)
        r = rng.normal(size=(lr, d)) * rng.uniform(0.1, 3.0, (lr, 1)) + rng.normal(size=d)
        basis = None if cases % 3 == 0 else _random_basis(rng, d, int(rng.integers(1, d + 1)))
        assert baselines.window_match_segment(q, r, basis) == _brute_force_window_match(q, r, basis), (q, r, basis)
        cases += 1
    assert cases == 400
    # the per-step scores themselves, row by row
    q, r, v = rng.normal(size=(5, 7)), rng.normal(size=(30, 7)), _random_basis(rng, 7, 3)
    u = np.mean([v.T @ (x - r.mean(axis=0)) for x in q], axis=0)
    want = np.array([v.T @ (x - r.mean(axis=0)) for x in r]) @ (u / np.linalg.norm(u))
    np.testing.assert_allclose(baselines.window_match_scores(q, r, v), want - want.mean(), atol=1e-12)
    np.testing.assert_allclose(np.sum(want), 0.0, atol=1e-12)  # centred on c: the scores sum to zero


def test_window_match_basis_keeps_the_directions_above_the_median_eigenvalue():
    rng = np.random.default_rng(8)
    rot = _random_basis(rng, 6, 6)
    values = np.array([5.0, 0.1, 3.0, 0.2, 0.3, 4.0])
    basis = baselines.window_match_basis_from_covariance(rot @ np.diag(values) @ rot.T)
    assert basis.shape == (6, 3)  # median 1.65: 5, 4 and 3 are kept
    want = rot[:, [0, 5, 2]]
    np.testing.assert_allclose(basis @ basis.T, want @ want.T, atol=1e-10)  # the same subspace (the projector)
    np.testing.assert_allclose(np.abs(np.sum(basis * want, axis=0)), 1.0, atol=1e-10)  # largest first
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    odd = baselines.window_match_basis_from_covariance(np.diag([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert odd.shape == (5, 3)  # odd D: the median eigenvalue itself is kept
    np.testing.assert_allclose(np.abs(odd), np.eye(5)[:, [4, 3, 2]], atol=1e-12)
    assert baselines.window_match_basis_from_covariance(np.eye(4)).shape == (4, 4)  # no preferred direction
    assert baselines.window_match_basis_from_covariance(np.zeros((1, 1))).shape == (1, 1)
    with pytest.raises(ValueError):
        baselines.window_match_basis_from_covariance(np.zeros((2, 3)))


def test_window_match_covariance_is_the_train_entries_spread_about_their_own_means(data_dir):
    recs = schema.read_records(data_dir, "train")
    rows = np.concatenate([r.features.astype(np.float64) - r.features.astype(np.float64).mean(axis=0) for r in recs])
    cov, count = baselines.within_reference_covariance(data_dir, 6)
    assert count == sum(r.length for r in recs) == len(rows)
    np.testing.assert_allclose(cov, rows.T @ rows / len(rows), rtol=1e-10, atol=1e-12)
    basis, want = baselines.window_match_basis(data_dir, 6), np.linalg.eigh(rows.T @ rows)[1][:, 3:]
    np.testing.assert_allclose(basis @ basis.T, want @ want.T, atol=1e-8)  # the top 3 of 6 directions


def test_window_match_statistic_reads_the_train_split_only(data_dir, tmp_path):
    """The subspace comes from train alone: new val/test features leave it bit-identical (and the
    predictions on the unchanged pairs' features follow); new train features change it."""
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(data_dir, copy)
    rng = np.random.default_rng(9)
    for split in ("val", "test"):
        recs = schema.read_records(copy, split)
        for r in recs:
            r.features = (rng.normal(size=r.features.shape) * 5.0).astype(np.float32)
        for path in schema.shard_files(copy, split):
            os.remove(path)
        F.write_split(copy, split, recs)
    original = baselines.window_match_basis(data_dir, 6)
    np.testing.assert_array_equal(baselines.window_match_basis(copy, 6), original)
    np.testing.assert_array_equal(baselines.window_match_basis(data_dir, 6, split="train"), original)
    recs = schema.read_records(copy, "train")
    for r in recs:
        r.features = (rng.normal(size=r.features.shape) * np.arange(1, 7)).astype(np.float32)
    for path in schema.shard_files(copy, "train"):
        os.remove(path)
    F.write_split(copy, "train", recs)
    changed = baselines.window_match_basis(copy, 6)
    assert not np.allclose(changed @ changed.T, original @ original.T)
    # by construction the new train spread is largest along the last three axes
    np.testing.assert_allclose(changed @ changed.T, np.diag([0, 0, 0, 1.0, 1.0, 1.0]), atol=0.15)


def test_window_match_edge_cases_and_zero_problems():
    rng = np.random.default_rng(3)
    assert baselines.window_match_segment(rng.normal(size=(4, 5)), rng.normal(size=(1, 5))) == (0, 1)
    ref = rng.normal(size=(12, 4))
    # a query equal to the reference's mean has no direction: every step scores 0 -> [0, 1)
    assert baselines.window_match_segment(np.tile(ref.mean(axis=0), (6, 1)), ref) == (0, 1)
    assert baselines.window_match_segment(np.zeros((4, 3)), np.zeros((8, 3))) == (0, 1)
    # a query direction orthogonal to the subspace: no direction either
    e = np.eye(4)
    assert baselines.window_match_segment(ref.mean(axis=0) + e[3] * np.ones((3, 1)), ref, e[:, :2]) == (0, 1)
    s, e_, score = baselines.window_match(rng.normal(size=(3, 4)), ref)
    assert 0 <= s < e_ <= 12 and score >= 0
    with pytest.raises(ValueError, match="non-finite"):
        baselines.window_match_segment(np.full((2, 4), np.nan), ref)
    with pytest.raises(ValueError):
        baselines.window_match_segment(np.zeros((0, 4)), ref)
    with pytest.raises(ValueError, match="basis"):
        baselines.window_match_segment(ref[:3], ref, np.eye(3))


def test_window_match_finds_a_planted_pattern_exactly():
    """A pattern pasted over [start, start + length) of a noisy reference is found to the step: the
    query is the same pattern on the same scene (what centring on the reference's mean removes). The
    maximum-sum segment takes in any neighbouring step that scores above the mean, so the per-step
    noise is kept well below the pattern (norm 0.57 vs 3; with norm 3.4 noise the edges move by a step
    in a few seeds out of 20)."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        d, lr, lq = 128, 60, 8
        pattern = rng.normal(size=d)
        pattern *= 3.0 / np.linalg.norm(pattern)
        scene = 2.0 * rng.normal(size=d)
        start, length = int(rng.integers(0, lr - 12)), int(rng.integers(5, 13))
        ref = scene + 0.05 * rng.normal(size=(lr, d))
        ref[start:start + length] = scene + pattern + 0.05 * rng.normal(size=(length, d))
        query = scene + pattern + 0.05 * rng.normal(size=(lq, d))
        assert baselines.window_match_segment(query, ref) == (start, start + length), seed


def test_window_match_finds_a_planted_action_under_another_videos_scene():
    """The same with the query taken from another video whose scene (norm 4) is twice the action's
    (norm 2), as in the substates family, and the subspace estimated from "train" videos built the
    same way (actions of random classes in a shared 8-d subspace, scenes in any direction)."""
    d, k = 128, 8
    rng = np.random.default_rng(100)
    activity_space = _random_basis(rng, d, k)

    def action(rng):
        a = rng.normal(size=k)
        return activity_space @ (a * 2.0 / np.linalg.norm(a))

    def scene(rng):
        s = rng.normal(size=d)
        return 4.0 * s / np.linalg.norm(s)

    rows = []
    for _ in range(60):
        n, a0, al = 60, int(rng.integers(0, 40)), int(rng.integers(5, 20))
        x = scene(rng) + 0.02 * rng.normal(size=(n, d))
        x[a0:a0 + al] += action(rng)
        rows.append(x - x.mean(axis=0))
    rows = np.concatenate(rows)
    basis = baselines.window_match_basis_from_covariance(rows.T @ rows / len(rows))
    assert basis.shape == (d, d // 2)
    assert np.linalg.norm(basis.T @ activity_space) ** 2 > 0.99 * k  # the action's directions are kept
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lr, lq = 60, 8
        start, length = int(rng.integers(0, lr - 12)), int(rng.integers(5, 13))
        pattern = action(rng)
        ref = scene(rng) + 0.02 * rng.normal(size=(lr, d))
        ref[start:start + length] += pattern
        query = scene(rng) + pattern + 0.02 * rng.normal(size=(lq, d))
        assert baselines.window_match_segment(query, ref, basis) == (start, start + length), seed


def test_window_match_ignores_what_the_subspace_drops():
    """A component outside the subspace added to the query (another video's scene there) changes no
    score; with the whole space it does."""
    rng = np.random.default_rng(12)
    basis = _random_basis(rng, 10, 4)
    outside = (np.eye(10) - basis @ basis.T) @ rng.normal(size=10) * 5.0
    q, r = rng.normal(size=(6, 10)), rng.normal(size=(40, 10))
    np.testing.assert_allclose(baselines.window_match_scores(q + outside, r, basis),
                               baselines.window_match_scores(q, r, basis), atol=1e-12)
    assert not np.allclose(baselines.window_match_scores(q + outside, r), baselines.window_match_scores(q, r))


def test_window_match_never_reads_padding():
    rng = np.random.default_rng(4)
    n = 40
    q_len, r_len = rng.integers(1, 9, n), rng.integers(1, 18, n)
    queries = [rng.normal(size=(k, 5)) for k in q_len]
    refs = [rng.normal(size=(k, 5)) for k in r_len]
    for basis in (None, _random_basis(rng, 5, 3)):
        want = [baselines.window_match_segment(q, r, basis) for q, r in zip(queries, refs)]
        for fill in (0.0, 1e6, np.nan):
            qp, rp = np.full((n, 10, 5), fill), np.full((n, 20, 5), fill)
            if fill == 1e6:
                qp, rp = rng.normal(scale=fill, size=qp.shape), rng.normal(scale=fill, size=rp.shape)
            for i in range(n):
                qp[i, :q_len[i]] = queries[i]
                rp[i, :r_len[i]] = refs[i]
            s, e = baselines.window_match_batch(qp, q_len, rp, r_len, basis)
            assert list(zip(s.tolist(), e.tolist())) == want, fill


def test_window_match_end_to_end_beats_random(data_dir, tmp_path, capsys):
    pairs_file = str(tmp_path / "pairs.json")
    wm = baselines.run_baseline("window-match", Dataset.open(data_dir), "test", pairs_file)
    assert "window matcher: 3 of 6 within-reference directions from train" in capsys.readouterr().err
    rnd = baselines.run_baseline("random", Dataset.open(data_dir), "test", pairs_file, verbose=False)
    assert wm["method"] == "Window matcher" and wm["pairs"] == rnd["pairs"] > 0 and wm["subspace_dim"] == 3
    assert wm["average"] > rnd["average"] + 10.0, (wm, rnd)
    # the same result re-scored by hand from the records: the query is its entry's ground truth, the
    # subspace the train split's
    basis = baselines.window_match_basis(data_dir, 6)
    recs = {r.entry_index: r for r in schema.read_records(data_dir, "test")}
    with open(pairs_file) as fh:
        plist = json.load(fh)["pairs"]
    ious = []
    for p in plist:
        q, r = recs[p["query"]], recs[p["reference"]]
        s, e = baselines.window_match_segment(q.features[q.groundtruth[0]:q.groundtruth[1]], r.features, basis)
        ious.append(metrics.temporal_iou(s, e, *r.groundtruth))
    assert wm["map_at_1"] == metrics.map_at_1(ious)


def test_cli_all_lists_the_window_matcher(tiny_data_dir, tmp_path, capsys):
    out = str(tmp_path / "all.json")
    assert cli_main(["baseline", "--method", "all", "--data", tiny_data_dir, "--json", out]) == 0
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results][-1] == "Window matcher"
    assert "Window matcher" in capsys.readouterr().out
