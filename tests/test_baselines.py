"""Baselines against brute-force references; the statistical prior on the real split geometry."""
import json
import os

import numpy as np
import pytest

from helpers import records as F
from vreloc_tf import baselines, metrics, schema
from vreloc.cli import main as cli_main
from vreloc_tf.entry_index import load_index


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
        assert results[-1] == baselines.run_baseline(method, data_dir, "test", pairs, verbose=False)
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
        baselines.run_baseline("median", data_dir)


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
        result = baselines.run_baseline("prior", d, "test", seed=seed)
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
    from vreloc_tf.evaluate import resolve_pairs
    from vreloc_tf.input_pipeline import evaluation_plan

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
    assert baselines.run_baseline("query-free", data_dir, "test", other_file, verbose=False) == \
        baselines.run_baseline("query-free", data_dir, "test", pairs_file, verbose=False)


def test_cli_query_free_on_the_tiny_data(tiny_data_dir, tmp_path, capsys):
    out = str(tmp_path / "qf.json")
    assert cli_main(["baseline", "--method", "query-free", "--data", tiny_data_dir, "--json", out]) == 0
    with open(out) as fh:
        result = json.load(fh)
    assert result["method"] == "query-free" and result["split"] == "test" and result["pairs"] > 0
    assert all(0.0 <= v <= 100.0 for v in result["map_at_1"].values()) and 0.0 <= result["average"] <= 100.0
    assert "query-free" in capsys.readouterr().out


# --- window matcher (issue #26 item 4) ----------------------------------------------------------

def _brute_force_window_match(query, reference):
    """Every (start, end) tried one by one, each mean taken row by row (the rule of baselines.window_match)."""
    q, r = np.asarray(query, np.float64), np.asarray(reference, np.float64)
    centre = np.mean(r, axis=0)

    def unit(v):
        n = np.sqrt(np.sum(v * v))
        return v / n if n > 0 else v

    def cos(a, b):
        na, nb = np.sqrt(np.sum(a * a)), np.sqrt(np.sum(b * b))
        return 0.0 if na <= 1e-9 or nb <= 1e-9 else float(np.dot(a, b) / (na * nb))

    rows = [unit(x - centre) for x in r]
    qm = np.mean([unit(x - centre) for x in q], axis=0)
    longest = min(len(r), 2 * len(q))
    shortest = min(max(1, len(q) // 2), longest)
    found = []
    for start in range(len(r)):
        for end in range(start + 1, len(r) + 1):
            if shortest <= end - start <= longest:
                inside = np.mean(rows[start:end], axis=0)
                rest = rows[:start] + rows[end:]
                outside = np.mean(rest, axis=0) if rest else np.zeros(r.shape[1])
                found.append((cos(qm, inside) - cos(qm, outside), start, end))
    best = max(f[0] for f in found)
    return min((s, e - s) for v, s, e in found if v >= best - 1e-9)


def test_window_match_matches_a_brute_force_search_with_ties():
    rng = np.random.default_rng(26)
    cases = 0
    for _ in range(300):  # small integers in few dims: repeated rows, exact ties and cancelling means
        lq, lr, d = int(rng.integers(1, 7)), int(rng.integers(1, 13)), int(rng.integers(1, 4))
        q = rng.integers(-1, 2, (lq, d)).astype(np.float64)
        r = rng.integers(-1, 2, (lr, d)).astype(np.float64)
        s, k = _brute_force_window_match(q, r)
        assert baselines.window_match_segment(q, r) == (s, s + k), (q, r)
        cases += 1
    for _ in range(200):  # continuous features, scales varying per row
        lq, lr, d = int(rng.integers(1, 9)), int(rng.integers(1, 25)), int(rng.integers(1, 7))
        q = rng.normal(size=(lq, d)) * rng.uniform(0.1, 3.0, (lq, 1)) + rng.normal(size=d)
        r = rng.normal(size=(lr, d)) * rng.uniform(0.1, 3.0, (lr, 1)) + rng.normal(size=d)
        s, k = _brute_force_window_match(q, r)
        assert baselines.window_match_segment(q, r) == (s, s + k), (q, r)
        cases += 1
    assert cases == 500


def test_window_match_edge_lengths_and_zero_problems():
    rng = np.random.default_rng(3)
    assert baselines.window_match_lengths(1, 1) == (1, 1)
    assert baselines.window_match_lengths(1, 9) == (1, 2)
    assert baselines.window_match_lengths(7, 100) == (3, 14)
    assert baselines.window_match_lengths(10, 3) == (3, 3)  # shorter than floor(Lq/2): the whole reference
    assert baselines.window_match_segment(rng.normal(size=(4, 5)), rng.normal(size=(1, 5))) == (0, 1)
    assert baselines.window_match_segment(rng.normal(size=(10, 5)), rng.normal(size=(3, 5))) == (0, 3)
    s, e = baselines.window_match_segment(rng.normal(size=(1, 5)), rng.normal(size=(9, 5)))
    assert 1 <= e - s <= 2 and 0 <= s and e <= 9
    ref = rng.normal(size=(12, 4))
    # a query equal to the reference's mean has no direction: every candidate scores 0 -> [0, K0)
    assert baselines.window_match_segment(np.tile(ref.mean(axis=0), (6, 1)), ref) == (0, 3)
    assert baselines.window_match_segment(np.zeros((4, 3)), np.zeros((8, 3))) == (0, 2)
    with pytest.raises(ValueError, match="non-finite"):
        baselines.window_match_segment(np.full((2, 4), np.nan), ref)
    with pytest.raises(ValueError):
        baselines.window_match_segment(np.zeros((0, 4)), ref)


def test_window_match_finds_a_planted_query_exactly():
    """A pattern pasted over [start, start + length) of a noisy reference is found to the step: the
    query is the same pattern on the same scene (what centring on the reference's mean removes).
    D = 128, like real features, keeps a noise row's cosine to the query small (~1/sqrt(D))."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        d, lr, lq = 128, 60, 8
        pattern = rng.normal(size=d)
        pattern *= 3.0 / np.linalg.norm(pattern)
        scene = 2.0 * rng.normal(size=d)
        start, length = int(rng.integers(0, lr - 12)), int(rng.integers(5, 13))
        ref = scene + rng.normal(size=(lr, d))
        ref[start:start + length] = scene + pattern + 0.3 * rng.normal(size=(length, d))
        query = scene + pattern + 0.3 * rng.normal(size=(lq, d))
        assert baselines.window_match_segment(query, ref) == (start, start + length), seed


def test_window_match_never_reads_padding():
    rng = np.random.default_rng(4)
    n = 40
    q_len, r_len = rng.integers(1, 9, n), rng.integers(1, 18, n)
    queries = [rng.normal(size=(k, 5)) for k in q_len]
    refs = [rng.normal(size=(k, 5)) for k in r_len]
    want = [baselines.window_match_segment(q, r) for q, r in zip(queries, refs)]
    for fill in (0.0, 1e6, np.nan):
        qp, rp = np.full((n, 10, 5), fill), np.full((n, 20, 5), fill)
        if fill == 1e6:
            qp, rp = rng.normal(scale=fill, size=qp.shape), rng.normal(scale=fill, size=rp.shape)
        for i in range(n):
            qp[i, :q_len[i]] = queries[i]
            rp[i, :r_len[i]] = refs[i]
        s, e = baselines.window_match_batch(qp, q_len, rp, r_len)
        assert list(zip(s.tolist(), e.tolist())) == want, fill


def test_window_match_end_to_end_beats_random(data_dir, tmp_path):
    pairs_file = str(tmp_path / "pairs.json")
    wm = baselines.run_baseline("window-match", data_dir, "test", pairs_file, verbose=False)
    rnd = baselines.run_baseline("random", data_dir, "test", pairs_file, verbose=False)
    assert wm["method"] == "Window matcher" and wm["pairs"] == rnd["pairs"] > 0
    assert wm["average"] > rnd["average"] + 10.0, (wm, rnd)
    # the same result re-scored by hand from the records: the query is its entry's ground truth
    recs = {r.entry_index: r for r in schema.read_records(data_dir, "test")}
    with open(pairs_file) as fh:
        plist = json.load(fh)["pairs"]
    ious = []
    for p in plist:
        q, r = recs[p["query"]], recs[p["reference"]]
        s, e = baselines.window_match_segment(q.features[q.groundtruth[0]:q.groundtruth[1]], r.features)
        ious.append(metrics.temporal_iou(s, e, *r.groundtruth))
    assert wm["map_at_1"] == metrics.map_at_1(ious)


def test_cli_all_lists_the_window_matcher(tiny_data_dir, tmp_path, capsys):
    out = str(tmp_path / "all.json")
    assert cli_main(["baseline", "--method", "all", "--data", tiny_data_dir, "--json", out]) == 0
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results][-1] == "Window matcher"
    assert "Window matcher" in capsys.readouterr().out
