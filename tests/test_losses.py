"""Losses against per-example NumPy references; co-attention direction; total_loss switching."""
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from helpers import reference_numpy as ref
from vreloc_tf.config import load_config
from vreloc_tf.model.losses import (coattention_loss, cosine_similarity, has_action, self_target_weight, total_loss,
                                   truncated_mean, truncation_fraction, uses_self_target, weighted_cross_entropy)


def random_probabilities(rng, batch, steps):
    logits = rng.normal(size=(batch, steps, 4)) * 1.5
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


def make_batch(rng, dim=6):
    """A padded batch whose padded tails hold garbage (large values) that must not matter."""
    ref_len = np.array([17, 1, 9, 12], "int32")
    q_len = np.array([5, 2, 1, 4], "int32")
    batch = {
        "query": rng.normal(size=(4, 5, dim)).astype("float32"),
        "query_length": q_len,
        "reference": rng.normal(size=(4, 17, dim)).astype("float32"),
        "reference_length": ref_len,
        "groundtruth": np.array([[3, 9], [0, 1], [8, 9], [0, 12]], "int32"),
    }
    for b in range(4):
        batch["query"][b, q_len[b]:] = 100.0
        batch["reference"][b, ref_len[b]:] = -100.0
    p = random_probabilities(rng, 4, 17)
    p[:, :, :] = np.where((np.arange(17)[None, :] >= ref_len[:, None])[..., None], 0.0, p)  # zeros: log must not NaN
    return batch, p


def test_weighted_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    batch, p = make_batch(rng)
    got = np.asarray(weighted_cross_entropy(p, batch["groundtruth"], batch["reference_length"], 10.0))
    for b, n in enumerate(batch["reference_length"]):
        expected = ref.weighted_cross_entropy(p[b, :n].astype(np.float64), batch["groundtruth"][b], 10.0)
        np.testing.assert_allclose(got[b], expected, rtol=1e-5)
    assert np.all(np.isfinite(got))


def test_an_empty_segment_is_no_action_every_step_background():
    """Negative pairs (vreloc_tf.data.input_pipeline): [-1, -1) or any end <= start labels every valid step
    background, no boundary weight: -mean log p4 over the valid steps; padding changes nothing."""
    rng = np.random.default_rng(30)
    batch, p = make_batch(rng)
    empty = np.array([[-1, -1], [0, 0], [5, 5], [-1, -1]], "int32")
    got = np.asarray(weighted_cross_entropy(p, empty, batch["reference_length"], 10.0))
    for b, n in enumerate(batch["reference_length"]):
        np.testing.assert_allclose(got[b], -np.mean(np.log(np.clip(p[b, :n, 3].astype(np.float64), 1e-7, 1))),
                                   rtol=1e-5)
        np.testing.assert_allclose(got[b], ref.weighted_cross_entropy(p[b, :n].astype(np.float64), empty[b], 10.0),
                                   rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(has_action(np.concatenate([empty, batch["groundtruth"]]))),
                                  [0, 0, 0, 0, 1, 1, 1, 1])


def test_negative_pairs_get_no_coattention_and_keep_no_action_in_the_self_target():
    rng = np.random.default_rng(31)
    batch, p = make_batch(rng)
    negative = np.array([False, True, False, True])
    batch["groundtruth"] = np.where(negative[:, None], -1, batch["groundtruth"]).astype("int32")
    both = load_config("tiny", ["loss.full_losses=weighted_ce+coattention", "loss.coattention_weight=0.5"])
    args = (batch["query"], batch["query_length"], batch["reference"], batch["reference_length"], p, 0.3)
    c = np.asarray(coattention_loss(*args, use_masks=False))
    ce = np.asarray(weighted_cross_entropy(p, batch["groundtruth"], batch["reference_length"], 10.0))
    np.testing.assert_allclose(float(total_loss(both, batch, p, 0)), np.mean(ce + 0.5 * c * ~negative), rtol=1e-6)
    # weak ours: a negative's teacher target is empty; the self target of the average is ignored there
    weak = load_config("tiny", ["supervision=weak", "loss.self_target_weight=0.6", "loss.self_target_start=0",
                                "loss.self_target_ramp_steps=0"])
    del batch["groundtruth"]
    batch["pseudo_groundtruth"] = np.array([[1, 4], [-1, -1], [2, 5], [-1, -1]], "int32")
    batch["self_target"] = np.array([[2, 9], [0, 1], [0, 9], [6, 8]], "int32")
    expected = []
    for b, n in enumerate(batch["reference_length"]):
        pb = p[b, :n].astype(np.float64)
        target = batch["pseudo_groundtruth"][b] if negative[b] else batch["self_target"][b]
        expected.append(0.4 * ref.weighted_cross_entropy(pb, batch["pseudo_groundtruth"][b], 10.0)
                        + 0.6 * ref.weighted_cross_entropy(pb, target, 10.0))
    np.testing.assert_allclose(float(total_loss(weak, batch, p, 10)), np.mean(expected), rtol=1e-5)


@pytest.mark.parametrize("use_masks", [False, True])
def test_coattention_loss_matches_numpy(use_masks):
    rng = np.random.default_rng(1)
    batch, p = make_batch(rng)
    got = np.asarray(coattention_loss(batch["query"], batch["query_length"], batch["reference"],
                                      batch["reference_length"], p, 0.3, use_masks))
    for b in range(4):
        n, m = batch["reference_length"][b], batch["query_length"][b]
        pb = p[b, :n].astype(np.float64)
        mask = None
        if use_masks:  # the predicted action region = the weak decoding segment
            s, e, _ = ref.decode_weak_bruteforce(pb)
            mask = ((np.arange(n) >= s) & (np.arange(n) < e)).astype(np.float64)
        expected = ref.coattention_loss(batch["query"][b, :m].astype(np.float64),
                                        batch["reference"][b, :n].astype(np.float64), pb, 0.3, mask)
        np.testing.assert_allclose(got[b], expected, rtol=1e-5, atol=1e-6)


def test_masks_change_the_loss_and_accept_a_tensor_switch():
    rng = np.random.default_rng(2)
    batch, p = make_batch(rng)
    args = (batch["query"], batch["query_length"], batch["reference"], batch["reference_length"], p, 0.3)
    off = np.asarray(coattention_loss(*args, use_masks=False))
    on = np.asarray(coattention_loss(*args, use_masks=True))
    assert not np.allclose(off, on)
    np.testing.assert_allclose(np.asarray(coattention_loss(*args, use_masks=ops.convert_to_tensor(False))), off,
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(coattention_loss(*args, use_masks=ops.convert_to_tensor(True))), on,
                               rtol=1e-6)


def test_cosine_is_a_similarity():
    x = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0]], "float32")
    np.testing.assert_allclose(np.asarray(cosine_similarity(x, x)), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(cosine_similarity(x, -x)), [-1.0, -1.0], rtol=1e-6)


def test_coattention_direction_mass_on_query_like_frames_lowers_the_loss():
    """Moving p3 onto the frames that look like the query (and p4 off them) must decrease loss^c."""
    rng = np.random.default_rng(3)
    dim, steps = 16, 20
    action_direction = rng.normal(size=dim)
    query = (action_direction + 0.1 * rng.normal(size=(6, dim)))[None].astype("float32")
    reference = rng.normal(size=(1, steps, dim))
    reference[0, 5:11] = action_direction + 0.1 * rng.normal(size=(6, dim))  # the action region
    reference = reference.astype("float32")
    action = np.zeros(steps, bool)
    action[5:11] = True

    def probabilities(weight_on_action):
        p = np.full((1, steps, 4), 0.05, "float32")
        p[0, :, 2] = np.where(action, weight_on_action, 1 - weight_on_action)
        p[0, :, 3] = np.where(action, 1 - weight_on_action, weight_on_action)
        return p / p.sum(axis=-1, keepdims=True)

    losses = [float(np.asarray(coattention_loss(query, [6], reference, [steps], probabilities(w), 0.3))[0])
              for w in (0.1, 0.5, 0.9)]
    assert losses[0] > losses[1] > losses[2], losses

    # and the gradient points the same way: raising action logits on action frames lowers the loss
    logits = tf.Variable(np.log(probabilities(0.5)))
    with tf.GradientTape() as tape:
        loss = coattention_loss(query, [6], reference, [steps], tf.nn.softmax(logits), 0.3)[0]
    grad = tape.gradient(loss, logits).numpy()[0, :, 2]
    assert grad[action].mean() < 0 < grad[~action].mean()


def test_total_loss_combines_as_configured_and_switches_masks_at_step_n():
    rng = np.random.default_rng(4)
    batch, p = make_batch(rng)
    n = 7
    weak = load_config("tiny", ["supervision=weak", "loss.weak_variant=paper", f"loss.coattention_mask_after_steps={n}"])
    ce_only = load_config("tiny", ["loss.full_losses=weighted_ce"])
    both = load_config("tiny", ["loss.full_losses=weighted_ce+coattention", "loss.coattention_weight=0.5",
                                f"loss.coattention_mask_after_steps={n}"])
    args = (batch["query"], batch["query_length"], batch["reference"], batch["reference_length"], p, 0.3)
    c_off = np.mean(np.asarray(coattention_loss(*args, use_masks=False)))
    c_on = np.mean(np.asarray(coattention_loss(*args, use_masks=True)))
    ce = np.mean(np.asarray(weighted_cross_entropy(p, batch["groundtruth"], batch["reference_length"], 10.0)))

    np.testing.assert_allclose(float(total_loss(weak, batch, p, n - 1)), c_off, rtol=1e-6)
    np.testing.assert_allclose(float(total_loss(weak, batch, p, n)), c_on, rtol=1e-6)
    step = tf.Variable(n - 1, dtype=tf.int64)
    compiled = tf.function(lambda: total_loss(weak, batch, p, step))
    np.testing.assert_allclose(float(compiled()), c_off, rtol=1e-6)
    step.assign(n + 5)
    np.testing.assert_allclose(float(compiled()), c_on, rtol=1e-6)
    np.testing.assert_allclose(float(total_loss(ce_only, batch, p, 0)), ce, rtol=1e-6)
    # full supervision: the paper's masks belong to its weak setting, so loss^c runs without them
    np.testing.assert_allclose(float(total_loss(both, batch, p, 100)), ce + 0.5 * c_off, rtol=1e-6)
    np.testing.assert_allclose(float(total_loss(both, batch, p, 0)), ce + 0.5 * c_off, rtol=1e-6)


def test_weak_ours_is_eq19_on_the_pseudo_segments_and_reads_no_groundtruth():
    rng = np.random.default_rng(6)
    batch, p = make_batch(rng)
    ours = load_config("tiny", ["supervision=weak"])
    del batch["groundtruth"]
    pseudo = np.array([[1, 4], [0, 1], [2, 5], [5, 12]], "int32")  # segments the teacher could give
    batch["pseudo_groundtruth"] = pseudo
    expected = np.mean(np.asarray(weighted_cross_entropy(p, pseudo, batch["reference_length"], 10.0)))
    for step in (0, 10_000):  # no masks, no warm-up: the same objective at every step
        np.testing.assert_allclose(float(total_loss(ours, batch, p, step)), expected, rtol=1e-6)
    del batch["pseudo_groundtruth"]
    with pytest.raises(KeyError, match="pseudo_groundtruth"):
        total_loss(ours, batch, p, 0)


def ref_truncated_mean(losses, fraction):
    """NumPy: the mean of the (1 - fraction) smallest losses, at least one kept."""
    ordered = np.sort(np.asarray(losses, np.float64))
    return float(ordered[:max(len(ordered) - int(np.floor(fraction * len(ordered))), 1)].mean())


def test_truncated_mean_matches_numpy_and_keeps_one():
    rng = np.random.default_rng(8)
    losses = rng.gamma(2.0, size=13).astype("float32")
    for fraction in (0.0, 0.1, 0.3, 0.5, 0.99):
        np.testing.assert_allclose(float(truncated_mean(losses, fraction)), ref_truncated_mean(losses, fraction),
                                   rtol=1e-6)
    assert float(truncated_mean(np.array([4.0], "float32"), 0.9)) == 4.0


def test_weak_ours_truncation_drops_the_highest_losses_after_its_ramp():
    rng = np.random.default_rng(9)
    batch, p = make_batch(rng)
    batch["pseudo_groundtruth"] = np.array([[1, 4], [0, 1], [2, 5], [5, 12]], "int32")
    plain = np.asarray(weighted_cross_entropy(p, batch["pseudo_groundtruth"], batch["reference_length"], 10.0))
    truncating = load_config("tiny", ["supervision=weak", "loss.teacher_truncation=0.5",
                                      "loss.teacher_truncation_ramp_steps=100"])
    np.testing.assert_allclose(float(total_loss(truncating, batch, p, 0)), plain.mean(), rtol=1e-6)  # ramp at 0
    np.testing.assert_allclose(float(total_loss(truncating, batch, p, 50)), ref_truncated_mean(plain, 0.25),
                               rtol=1e-6)
    np.testing.assert_allclose(float(total_loss(truncating, batch, p, 5_000)), ref_truncated_mean(plain, 0.5),
                               rtol=1e-6)
    assert truncation_fraction(truncating) == 0.5
    # full supervision and the paper's weak objective never truncate
    assert truncation_fraction(load_config("tiny", ["loss.teacher_truncation=0.5"])) == 0.0
    assert truncation_fraction(load_config("tiny", ["supervision=weak", "loss.weak_variant=paper",
                                                    "loss.teacher_truncation=0.5"])) == 0.0
    with pytest.raises(ValueError, match="teacher_truncation"):
        total_loss(load_config("tiny", ["supervision=weak", "loss.teacher_truncation=1.5"]), batch, p, 0)


def test_weak_ours_blends_the_self_target_by_its_ramped_weight():
    """(1 - w) x Eq. 19 on the teacher's segment + w x Eq. 19 on the self target, against NumPy;
    w is 0 until the start step, then linear up to the weight; padding changes nothing."""
    rng = np.random.default_rng(21)
    batch, p = make_batch(rng)
    batch["pseudo_groundtruth"] = np.array([[1, 4], [0, 1], [2, 5], [5, 12]], "int32")
    batch["self_target"] = np.array([[2, 9], [0, 1], [0, 9], [6, 8]], "int32")
    cfg = load_config("tiny", ["supervision=weak", "loss.self_target_weight=0.6", "loss.self_target_start=100",
                               "loss.self_target_ramp_steps=200"])
    assert uses_self_target(cfg)
    for step, w in ((0, 0.0), (100, 0.0), (150, 0.15), (200, 0.3), (300, 0.6), (10_000, 0.6)):
        assert float(self_target_weight(cfg, step)) == pytest.approx(w, abs=1e-7)
        expected = np.mean([(1 - w) * ref.weighted_cross_entropy(p[b, :n].astype(np.float64),
                                                                 batch["pseudo_groundtruth"][b], 10.0)
                            + w * ref.weighted_cross_entropy(p[b, :n].astype(np.float64), batch["self_target"][b], 10.0)
                            for b, n in enumerate(batch["reference_length"])])
        np.testing.assert_allclose(float(total_loss(cfg, batch, p, step)), expected, rtol=1e-5)
    # no self target in the batch (validation, the label-free criterion): the teacher's part alone
    teacher_only = dict(batch)
    del teacher_only["self_target"]
    plain = np.asarray(weighted_cross_entropy(p, batch["pseudo_groundtruth"], batch["reference_length"], 10.0))
    np.testing.assert_allclose(float(total_loss(cfg, teacher_only, p, 10_000)), plain.mean(), rtol=1e-6)
    # a ramp of 0 switches the weight on at the start step
    sudden = load_config("tiny", ["supervision=weak", "loss.self_target_start=5", "loss.self_target_ramp_steps=0"])
    assert [float(self_target_weight(sudden, t)) for t in (4, 5)] == [0.0, pytest.approx(0.8)]


def test_the_self_target_belongs_to_weak_ours_and_its_settings_are_checked():
    assert uses_self_target(load_config("tiny", ["supervision=weak"]))  # the default
    assert not uses_self_target(load_config("tiny", ["supervision=weak", "loss.self_target_weight=0"]))
    assert not uses_self_target(load_config("tiny", ["supervision=weak", "loss.weak_variant=paper"]))
    assert not uses_self_target(load_config("tiny"))  # full supervision
    for bad, name in (("loss.self_target_weight=1.5", "self_target_weight"),
                      ("loss.self_target_momentum=1.0", "self_target_momentum"),
                      ("loss.self_target_ramp_steps=-1", "self_target_ramp_steps")):
        with pytest.raises(ValueError, match=name):
            uses_self_target(load_config("tiny", ["supervision=weak", bad]))


def test_bad_shapes_are_named():
    p = np.full((2, 5, 4), 0.25, "float32")
    with pytest.raises(ValueError, match="groundtruth"):
        weighted_cross_entropy(p, np.array([1, 3], "int32"), np.array([5, 5], "int32"))
    with pytest.raises(ValueError, match="probabilities"):
        weighted_cross_entropy(p[..., :3], np.array([[1, 3], [0, 2]], "int32"), np.array([5, 5], "int32"))


def test_total_loss_names_what_is_missing():
    rng = np.random.default_rng(5)
    batch, p = make_batch(rng)
    del batch["groundtruth"]
    with pytest.raises(KeyError, match="groundtruth"):
        total_loss(load_config("tiny"), batch, p, 0)
    del batch["query"]
    with pytest.raises(KeyError, match="query"):
        total_loss(load_config("tiny", ["supervision=weak"]), batch, p, 0)
