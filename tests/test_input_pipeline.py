"""tf.data pairing: protocol rules, batches against a NumPy reference, determinism/resume,
and the weak pipeline never seeing reference ground truth."""
import dataclasses

import numpy as np
import pytest

from helpers import records as F
from vreloc_tf.data import schema
from vreloc_tf.config import load_config
from vreloc_tf.data.entry_index import QUERY_PART, REFERENCE_PART, load_index, weak_role
from vreloc_tf.data.input_pipeline import (BUCKET_SPAN, PairPlanner, load_training_index, reference_length,
                                           training_dataset)

DIM = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return F.make_data_dir(str(tmp_path_factory.mktemp("pipe_data")), dim=DIM, per_class=12)


def _cfg(*overrides):
    return load_config("tiny", [f"data.feature_dim={DIM}", "train.batch_size=4", *overrides])


def _batches(cfg, data_dir, steps=3, start=0, epochs=2):
    index = load_training_index(cfg, data_dir)
    ds = training_dataset(cfg, index, DIM, steps, start, epochs)
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_full_plans_follow_the_protocol_and_the_crop_rule(data_dir):
    index = load_index(data_dir, "train")
    planner = PairPlanner(index, "full", crop_probability=0.9)
    rng = np.random.default_rng(0)
    plans = [p for _ in range(20) for p in planner.one_pass(rng)]
    cropped = 0
    for q, r, qs, qe, rs, re, gs, ge, negative, *_ in plans:
        assert negative == 0  # data.negative_pair_rate defaults to 0
        assert index.label[q] == index.label[r] and index.video_id[q] != index.video_id[r]
        assert (qs, qe) == tuple(index.groundtruth[q])
        assert index.length[r] >= qe - qs
        g0, g1 = index.groundtruth[r]
        assert 0 <= rs <= g0 and g1 <= re <= index.length[r]  # the crop keeps the ground truth inside
        assert (gs, ge) == (g0 - rs, g1 - rs) and 0 <= gs < ge <= re - rs
        cropped += (rs, re) != (0, index.length[r])
    assert 0.6 < cropped / len(plans) <= 0.9 + 0.05
    never = PairPlanner(index, "full", crop_probability=0.0)
    assert all((p[4], p[5]) == (0, index.length[p[1]]) for p in never.one_pass(rng))


def test_batches_equal_a_numpy_reference(data_dir):
    cfg = _cfg()
    batches = _batches(cfg, data_dir)
    index = load_index(data_dir, "train")
    records = {r.entry_index: r for r in schema.read_records(data_dir, "train")}
    planner = PairPlanner(index, "full", cfg.data.crop_probability)
    expected = [b for e in range(2) for b in planner.epoch_batches(cfg.seed, e, 4, 3)]
    assert len(batches) == len(expected) == 6
    for got, plans in zip(batches, expected):
        assert got["query_length"].dtype == np.int32 and got["reference_length"].dtype == np.int32
        assert got["groundtruth"].dtype == np.int32 and got["query"].dtype == np.float32
        for i, (q, r, qs, qe, rs, re, gs, ge, *_) in enumerate(plans):
            qf = records[int(index.entry_index[q])].features[qs:qe]
            rf = records[int(index.entry_index[r])].features[rs:re]
            assert got["query_length"][i] == len(qf) and got["reference_length"][i] == len(rf)
            np.testing.assert_array_equal(got["query"][i, :len(qf)], qf)
            np.testing.assert_array_equal(got["reference"][i, :len(rf)], rf)
            assert not got["query"][i, len(qf):].any() and not got["reference"][i, len(rf):].any()
            np.testing.assert_array_equal(got["groundtruth"][i], [gs, ge])
        buckets = set(got["reference_length"] // BUCKET_SPAN)
        assert len(buckets) == 1  # one length bucket per batch


def test_batches_are_deterministic_and_each_epoch_stands_alone(data_dir):
    cfg = _cfg()
    a = _batches(cfg, data_dir)
    _assert_same_batches(a, _batches(cfg, data_dir))
    _assert_same_batches(a[3:], _batches(cfg, data_dir, start=1))  # what a run resumed at epoch 1 sees
    other = _batches(_cfg("seed=1"), data_dir)
    assert any(not np.array_equal(x["query"], y["query"]) or x["query"].shape != y["query"].shape
               for x, y in zip(a, other))


def _corrupt_reference_groundtruth(src, dst, fraction):
    """Copy a data folder, replacing the ground truth of every weak reference-part train entry."""
    records = schema.read_records(src, "train")
    changed = 0
    for r in records:
        if weak_role(r.video_id, fraction) == REFERENCE_PART:
            new = (0, 1) if tuple(r.groundtruth) != (0, 1) else (1, 2)
            r.groundtruth = new
            changed += 1
    F.write_split(dst, "train", records, shards=3)
    for split in ("val", "test"):
        F.write_split(dst, split, schema.read_records(src, split))
    F.write_manifest(dst, DIM, {})
    return changed


def test_weak_batches_never_see_reference_groundtruth(data_dir, tmp_path):
    cfg = _cfg("supervision=weak")
    changed = _corrupt_reference_groundtruth(data_dir, str(tmp_path), cfg.data.weak_query_fraction)
    assert changed > 0
    weak_clean, weak_corrupt = _batches(cfg, data_dir), _batches(cfg, str(tmp_path))
    _assert_same_batches(weak_clean, weak_corrupt)
    assert all("groundtruth" not in b for b in weak_clean)
    # weak "ours" batches carry the label-free teacher's segments instead, inside every reference
    for b in weak_clean:
        pseudo, lengths = np.asarray(b["pseudo_groundtruth"]), np.asarray(b["reference_length"])
        assert np.all(0 <= pseudo[:, 0]) and np.all(pseudo[:, 0] < pseudo[:, 1]) and np.all(pseudo[:, 1] <= lengths)
    paper = _batches(_cfg("supervision=weak", "loss.weak_variant=paper"), data_dir)
    assert all("pseudo_groundtruth" not in b for b in paper)
    # the corruption is visible to a pipeline that does read reference ground truth
    full_clean, full_corrupt = _batches(_cfg(), data_dir), _batches(_cfg(), str(tmp_path))
    assert any(not np.array_equal(x["groundtruth"], y["groundtruth"]) for x, y in zip(full_clean, full_corrupt))


def test_weak_plans_take_queries_and_references_from_their_own_parts(data_dir):
    cfg = _cfg("supervision=weak")
    index = load_training_index(cfg, data_dir)
    assert not np.any(index.has_groundtruth[index.role == REFERENCE_PART])
    planner = PairPlanner(index, "weak")
    plans = list(planner.one_pass(np.random.default_rng(0)))
    assert plans
    for q, r, qs, qe, rs, re, gs, ge, negative, *_ in plans:
        assert negative == 0
        assert index.role[q] == QUERY_PART and index.role[r] == REFERENCE_PART
        assert index.label[q] == index.label[r] and index.length[r] >= qe - qs
        assert (rs, re) == (0, index.length[r]) and (gs, ge) == (-1, -1)  # whole reference, no label
    videos = {v: weak_role(v, 0.5) for v in index.video_id}
    assert {QUERY_PART, REFERENCE_PART} == set(videos.values())


def _ten_passes(data_dir, supervision, **rates):
    """(training index, the plans of ten seeded passes) of a planner with these extra rates."""
    index = load_training_index(_cfg(f"supervision={supervision}"), data_dir)
    planner = PairPlanner(index, supervision, 0.9, **rates)
    return index, [p for seed in range(10) for p in planner.one_pass(np.random.default_rng(seed))]


def _assert_rate_zero_changes_nothing(index, supervision, rate_name):
    """Rate 0 draws no extra random number: the plans of a planner without the option, pair for pair;
    and a rate out of range is refused by name."""
    plain = PairPlanner(index, supervision, 0.9)
    off = PairPlanner(index, supervision, 0.9, **{rate_name: 0.0})
    assert list(plain.one_pass(np.random.default_rng(3))) == list(off.one_pass(np.random.default_rng(3)))
    with pytest.raises(ValueError, match=rate_name):
        PairPlanner(index, supervision, 0.9, **{rate_name: 1.5})


@pytest.mark.parametrize("supervision", ["full", "weak"])
def test_negative_pairs_show_another_class_and_no_action(data_dir, supervision):
    index, plans = _ten_passes(data_dir, supervision, negative_rate=0.4)
    negatives = [p for p in plans if p[8]]
    assert 0.3 < len(negatives) / len(plans) < 0.5
    for q, r, qs, qe, rs, re, gs, ge, *_ in negatives:
        assert index.label[q] != index.label[r] and index.video_id[q] != index.video_id[r]
        assert (qs, qe) == tuple(index.groundtruth[q]) and index.length[r] >= qe - qs
        assert (rs, re) == (0, index.length[r]) and (gs, ge) == (-1, -1)  # whole reference, no action
        if supervision == "weak":
            assert index.role[q] == QUERY_PART and index.role[r] == REFERENCE_PART
    positives = [p for p in plans if not p[8]]
    assert all(index.label[p[0]] == index.label[p[1]] for p in positives)
    _assert_rate_zero_changes_nothing(index, supervision, "negative_rate")
    with pytest.raises(ValueError, match="negative_pair_rate"):
        PairPlanner(index, supervision, 0.9, negative_rate=1.0)  # no matching pair left


@pytest.mark.parametrize("supervision", ["full", "weak"])
def test_negative_batches_carry_the_empty_target(data_dir, supervision):
    cfg = _cfg(f"supervision={supervision}", "data.negative_pair_rate=0.5")
    batches = _batches(cfg, data_dir)
    index = load_training_index(cfg, data_dir)
    planner = PairPlanner(index, supervision, cfg.data.crop_probability, 0.5)
    expected = [b for e in range(2) for b in planner.epoch_batches(cfg.seed, e, 4, 3)]
    key = "groundtruth" if supervision == "full" else "pseudo_groundtruth"
    seen = 0
    for got, plans in zip(batches, expected):
        for i, plan in enumerate(plans):
            target = got[key][i]
            if plan[8]:
                seen += 1
                np.testing.assert_array_equal(target, [-1, -1])
                assert got["reference_length"][i] == index.length[plan[1]]
            else:
                assert 0 <= target[0] < target[1] <= got["reference_length"][i]
    assert seen > 0


def test_weak_role_is_a_stable_fraction_of_videos():
    ids = [f"vid{i:05d}" for i in range(4000)]
    roles = np.array([weak_role(v, 0.3) for v in ids])
    assert abs(np.mean(roles == QUERY_PART) - 0.3) < 0.03
    assert [weak_role(v, 0.3) for v in ids[:50]] == list(roles[:50])
    with pytest.raises(ValueError, match="weak_query_fraction"):
        weak_role("x", 1.0)


def test_feature_dim_mismatch_is_named(data_dir):
    import tensorflow as tf

    cfg = _cfg()
    index = load_training_index(cfg, data_dir)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="feature_dim"):
        for _ in training_dataset(cfg, index, DIM + 1, 1, 0, 1):
            pass


def test_planner_rejects_an_index_without_usable_pairs(data_dir):
    index = load_index(data_dir, "train")
    lonely = dataclasses.replace(index, label=np.arange(len(index)))  # every entry its own class
    with pytest.raises(ValueError, match="no query has a valid"):
        PairPlanner(lonely, "full")
    with pytest.raises(ValueError, match="weak roles"):
        PairPlanner(index, "weak")


@pytest.mark.parametrize("supervision", ["full", "weak"])
def test_distractor_splices_insert_another_class_outside_the_action(data_dir, supervision):
    index, plans = _ten_passes(data_dir, supervision, distractor_rate=0.5)
    spliced = [p for p in plans if p[9] >= 0]
    assert 0.4 < len(spliced) / len(plans) < 0.6
    hosts = 0
    for q, r, qs, qe, rs, re, gs, ge, negative, d, ds, de, at in plans:
        assert negative == 0
        if d < 0:
            assert (ds, de, at) == (0, 0, 0)
            continue
        assert (ds, de) == tuple(index.groundtruth[d]) and ds < de  # the inserted window's whole action
        length = re - rs
        assert reference_length((q, r, qs, qe, rs, re, gs, ge, negative, d, ds, de, at)) == length + de - ds
        if supervision == "weak":
            assert index.label[r] == index.label[q] != index.label[d]
            assert index.video_id[d] not in (index.video_id[q], index.video_id[r])
            assert at in (0, length) and (gs, ge) == (-1, -1)  # an end: never inside an action
            assert index.role[d] == QUERY_PART  # weak distractors come from the query side (labelled)
            continue
        # full: host r and the other class inserted, or host the other class and r's action inserted
        assert (index.label[r] == index.label[q]) != (index.label[d] == index.label[q])
        assert len({index.video_id[q], index.video_id[r], index.video_id[d]}) == 3
        h0, h1 = index.groundtruth[r] - rs  # the host's action in its cropped slice, before the splice
        assert 0 <= rs <= index.groundtruth[r][0] and index.groundtruth[r][1] <= re <= index.length[r]
        assert at <= h0 or at >= h1  # inserted outside the host's action
        if index.label[r] == index.label[q]:
            shift = (de - ds) if at <= h0 else 0
            assert (gs, ge) == (h0 + shift, h1 + shift)
        else:
            assert (gs, ge) == (at, at + de - ds)  # the inserted clip is the answer
        hosts += index.label[r] == index.label[q]
    if supervision == "full":
        assert 0.35 < hosts / len(spliced) < 0.65  # both roles, about equally often
        assert len({p[12] for p in spliced}) > 2  # anywhere in the background, not only at the ends
    _assert_rate_zero_changes_nothing(index, supervision, "distractor_rate")


def test_distractor_batches_equal_a_numpy_reference(data_dir):
    cfg = _cfg("data.distractor_rate=0.7")
    batches = _batches(cfg, data_dir)
    index = load_index(data_dir, "train")
    records = {r.entry_index: r for r in schema.read_records(data_dir, "train")}
    planner = PairPlanner(index, "full", cfg.data.crop_probability, distractor_rate=0.7)
    expected = [b for e in range(2) for b in planner.epoch_batches(cfg.seed, e, 4, 3)]
    seen = 0
    for got, plans in zip(batches, expected):
        for i, (q, r, qs, qe, rs, re, gs, ge, _, d, ds, de, at) in enumerate(plans):
            rf = records[int(index.entry_index[r])].features[rs:re]
            if d >= 0:
                seen += 1
                df = records[int(index.entry_index[d])].features[ds:de]
                rf = np.concatenate([rf[:at], df, rf[at:]])
            assert got["reference_length"][i] == len(rf)
            np.testing.assert_array_equal(got["reference"][i, :len(rf)], rf)
            assert not got["reference"][i, len(rf):].any()
            np.testing.assert_array_equal(got["groundtruth"][i], [gs, ge])
            # the target points at the action of the query's class, wherever the splice put it
            answer = r if index.label[r] == index.label[q] else d
            own = records[int(index.entry_index[answer])].features
            g0, g1 = index.groundtruth[answer]
            np.testing.assert_array_equal(got["reference"][i, gs:ge], own[g0:g1])
        assert len(set(got["reference_length"] // BUCKET_SPAN)) == 1  # buckets count the inserted steps
    assert seen > 0


def test_weak_distractor_batches_keep_the_teacher_inside_the_spliced_reference(data_dir):
    batches = _batches(_cfg("supervision=weak", "data.distractor_rate=0.7"), data_dir)
    plain = _batches(_cfg("supervision=weak"), data_dir)
    assert any(x["reference"].shape != y["reference"].shape or not np.array_equal(x["reference"], y["reference"])
               for x, y in zip(batches, plain))
    for b in batches:
        pseudo, lengths = np.asarray(b["pseudo_groundtruth"]), np.asarray(b["reference_length"])
        assert np.all(0 <= pseudo[:, 0]) and np.all(pseudo[:, 0] < pseudo[:, 1]) and np.all(pseudo[:, 1] <= lengths)
        assert "groundtruth" not in b
