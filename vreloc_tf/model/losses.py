"""Training losses: co-attention (weak supervision, Eqs. 13-18) and weighted cross-entropy (Eq. 19).

All in ``keras.ops`` (backend agnostic). Per-example losses are [B]; :func:`total_loss`
averages them over the batch and combines them as ``cfg`` says:

* ``cfg.supervision == 'weak'``: loss^c only (``loss.weak_variant = paper``, Table 2), or Eq. 19
  on the label-free teacher's pseudo segments (``ours``, the default; vreloc_tf.model.teacher), blended
  with Eq. 19 on the segments of the student's running average (vreloc_tf.model.student_average);
* ``cfg.supervision == 'full'``: loss^w (``full_losses = weighted_ce``),
  loss^w + ``coattention_weight`` * loss^c (``weighted_ce+coattention``, Table 4), or Feng et
  al.'s Eq. 10 as their code computes it (``feng``, :func:`feng_cross_entropy`).

Eq. 19 (ours) and Feng's Eq. 10 (video_reloc, match.py) share the per-step labels (start at
gt[0], end at gt[1] - 1, action inside, background outside, a step's labels sharing its mass)
and the weights (10 at the start and end steps, 1 elsewhere; Feng: ``heavy = 9 * [y1 + y2 >
0.9] + 1``). They differ in the normalisation only: Eq. 19 averages each example over its own
valid steps and then the examples; Feng averages over all valid steps of the batch at once
(``tf.boolean_mask`` then ``reduce_mean``), so a long reference weighs more. (Feng computes the
cross-entropy from the logits; here it is from the probabilities, clipped at 1e-7 -- the same
unless a probability falls below 1e-7. Feng's L2 weight decay defaults to 0, so it is left out.)
"""
from __future__ import annotations

from keras import ops

from vreloc_tf.contract import (GROUNDTRUTH, INPUT_NAMES, PSEUDO_GROUNDTRUTH, QUERY, QUERY_LENGTH, REFERENCE,
                                REFERENCE_LENGTH, SELF_TARGET)
from vreloc_tf.model.decoding import weak_segment

EPSILON = 1e-7  # floor of log arguments and of norms/denominators: no NaN, ever


def _valid_mask(lengths, steps):
    positions = ops.arange(steps, dtype="int32")[None, :]
    return ops.less(positions, ops.cast(lengths, "int32")[:, None])


def step_labels(groundtruth, steps):
    """Per-step targets y [B, Lr, 4] and boundary flags, following Feng et al. (2018).

    start at gt[0], end at gt[1] - 1, action on [gt[0], gt[1]), background elsewhere; a step
    with several labels shares probability mass equally (each row sums to 1). An EMPTY segment
    (gt[1] <= gt[0], e.g. ``[-1, -1)``: a negative pair, vreloc_tf.data.input_pipeline) means no
    action: every step is background and none is a boundary.
    Returns (y, is_boundary [B, Lr] bool).
    """
    gt = ops.cast(groundtruth, "int32")
    positions = ops.arange(steps, dtype="int32")[None, :]
    first, stop = gt[:, 0:1], gt[:, 1:2]
    has_action = ops.greater(stop, first)
    is_start = ops.logical_and(has_action, ops.equal(positions, first))
    is_end = ops.logical_and(has_action, ops.equal(positions, stop - 1))
    is_action = ops.logical_and(ops.greater_equal(positions, first), ops.less(positions, stop))
    labels = ops.cast(ops.stack([is_start, is_end, is_action, ops.logical_not(is_action)], axis=-1), "float32")
    labels = labels / ops.sum(labels, axis=-1, keepdims=True)  # >= 1 label per step (action or background)
    return labels, ops.logical_or(is_start, is_end)


def weighted_cross_entropy(probabilities, groundtruth, reference_length, boundary_weight=10.0):
    """Eq. 19 per example [B]: -(1/l_r) sum_i w_i sum_n y_i^n log p_i^n over the valid steps.

    ``groundtruth`` [B, 2] int is [start, end) relative to the reference (end exclusive) and must
    satisfy 0 <= start < end <= reference_length, or be empty (end <= start: no action, every
    step background -- a negative pair). w_i = ``boundary_weight`` at the start and end
    steps, 1 elsewhere; l_r = the example's valid length (padded steps count for nothing).
    """
    probabilities, groundtruth = ops.convert_to_tensor(probabilities), ops.convert_to_tensor(groundtruth)
    if len(probabilities.shape) != 3 or probabilities.shape[-1] not in (None, 4):
        raise ValueError(f"weighted_cross_entropy: probabilities must be [B, Lr, 4], got {probabilities.shape}")
    if len(groundtruth.shape) != 2 or groundtruth.shape[-1] not in (None, 2):
        raise ValueError(f"weighted_cross_entropy: groundtruth must be [B, 2] ([start, end)), got {groundtruth.shape}")
    p = ops.cast(probabilities, "float32")
    steps = ops.shape(p)[1]
    labels, is_boundary = step_labels(groundtruth, steps)
    weights = ops.where(is_boundary, ops.cast(boundary_weight, "float32"), 1.0)
    per_step = -ops.sum(labels * ops.log(ops.clip(p, EPSILON, 1.0)), axis=-1) * weights  # [B, Lr]
    valid = _valid_mask(reference_length, steps)
    count = ops.cast(ops.maximum(ops.cast(reference_length, "int32"), 1), "float32")
    return ops.sum(ops.where(valid, per_step, 0.0), axis=1) / count


def feng_cross_entropy(probabilities, groundtruth, reference_length, boundary_weight=10.0):
    """Feng et al.'s Eq. 10 as coded, per example [B], so that its batch mean is Feng's loss.

    Feng: sum over the batch of sum_i w_i CE_i over the valid steps, divided by the number of
    valid steps in the batch. Per example: sum_i w_i CE_i / mean_b(l_b) -- the mean over the
    batch of this is exactly that (see the module docstring for how it differs from Eq. 19).
    """
    per_example = weighted_cross_entropy(probabilities, groundtruth, reference_length, boundary_weight)
    lengths = ops.cast(ops.maximum(ops.cast(reference_length, "int32"), 1), "float32")
    return per_example * lengths / ops.maximum(ops.mean(ops.cast(reference_length, "float32")), 1.0)


def has_action(segments):
    """[B] float: 1 where a target segment [start, end) is non-empty, 0 for no action (a negative pair)."""
    segments = ops.cast(segments, "int32")
    return ops.cast(ops.greater(segments[:, 1], segments[:, 0]), "float32")


def cosine_similarity(x, y):
    """Cosine SIMILARITY of the rows of x and y [B, D] -> [B] (0 for a zero vector)."""
    x_norm = ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1)), EPSILON)
    y_norm = ops.maximum(ops.sqrt(ops.sum(ops.square(y), axis=-1)), EPSILON)
    return ops.sum(x * y, axis=-1) / (x_norm * y_norm)


def region_masks(probabilities, reference_length, use_masks):
    """Action and background masks [B, Lr] (float, constant) applied to p3 and p4.

    Without masks (warm-up) both are the valid-step mask. With masks (the paper's
    "Implementation Details"), the predicted action region is the weak decoding segment
    (longest run of p3 above its mean, :func:`vreloc_tf.model.decoding.weak_segment`): the action
    mask is 1 inside it, the background mask 1 on the other valid steps. The masks are
    computed from stop-gradient probabilities, so they are constants for the optimizer.
    ``use_masks`` may be a Python bool or a boolean scalar tensor (e.g. step >= N).
    """
    steps = ops.shape(probabilities)[1]
    valid = _valid_mask(reference_length, steps)
    if isinstance(use_masks, bool) and not use_masks:
        return ops.cast(valid, "float32"), ops.cast(valid, "float32")
    start, end = weak_segment(ops.stop_gradient(probabilities), reference_length)
    positions = ops.arange(steps, dtype="int32")[None, :]
    inside = ops.logical_and(ops.greater_equal(positions, start[:, None]), ops.less(positions, end[:, None]))
    on = ops.cast(use_masks, "bool")
    action = ops.logical_and(valid, ops.logical_or(ops.logical_not(on), inside))
    background = ops.logical_and(valid, ops.logical_or(ops.logical_not(on), ops.logical_not(inside)))
    return (ops.stop_gradient(ops.cast(action, "float32")),
            ops.stop_gradient(ops.cast(background, "float32")))


def coattention_loss(query, query_length, reference, reference_length, probabilities, alpha=0.3,
                     use_masks=False):
    """Co-attention loss (Eqs. 13-18) per example [B], on the input features Q and R.

    q^a = mean of the valid query frames; r^a, r^b = reference features weighted by p3 and p4
    normalized over the valid steps (Eqs. 14-15; masked as in :func:`region_masks` when
    ``use_masks``); loss = exp(-d+) / (exp(-d+) + exp(-d-)) = sigmoid(d- - d+), with
    d+ = cos(q^a, r^a), d- = alpha cos(q^a, r^b) + (1 - alpha) cos(r^a, r^b).

    cos is the cosine SIMILARITY (not 1 - similarity, although the paper says "distance"):
    only then does minimizing the loss do what the paper says it does — pull r^a towards the
    query and push r^b away from both. A test checks this direction.
    """
    query = ops.cast(query, "float32")
    reference = ops.cast(reference, "float32")
    p = ops.cast(probabilities, "float32")
    query_valid = _valid_mask(query_length, ops.shape(query)[1])
    query_count = ops.cast(ops.maximum(ops.cast(query_length, "int32"), 1), "float32")
    query_mean = ops.sum(ops.where(query_valid[:, :, None], query, 0.0), axis=1) / query_count[:, None]

    ref_valid = _valid_mask(reference_length, ops.shape(reference)[1])
    reference = ops.where(ref_valid[:, :, None], reference, 0.0)
    action_mask, background_mask = region_masks(p, reference_length, use_masks)
    action = p[:, :, 2] * action_mask
    background = p[:, :, 3] * background_mask
    g_action = action / ops.maximum(ops.sum(action, axis=1, keepdims=True), EPSILON)
    g_background = background / ops.maximum(ops.sum(background, axis=1, keepdims=True), EPSILON)
    pooled = ops.matmul(ops.stack([g_action, g_background], axis=1), reference)  # [B, 2, D], one pass over R
    r_action, r_background = pooled[:, 0], pooled[:, 1]

    d_pos = cosine_similarity(query_mean, r_action)
    d_neg = alpha * cosine_similarity(query_mean, r_background) + (1.0 - alpha) * cosine_similarity(
        r_action, r_background)
    return ops.sigmoid(d_neg - d_pos)


def per_example_loss(cfg, batch, probabilities, step):
    """The training objective of ``cfg`` for every example of a batch, [B] (see the module docstring).

    * full supervision: Eq. 19 on ``groundtruth`` (+ ``coattention_weight`` x loss^c without
      masks for ``weighted_ce+coattention``, Table 4; the paper's masks belong to its weak setting),
      or Feng et al.'s Eq. 10 (``feng``);
    * weak, ``loss.weak_variant = paper``: loss^c, with the masks from the step
      ``coattention_mask_after_steps`` on (``step`` is an int or a scalar tensor);
    * weak, ``ours``: Eq. 19 on the label-free teacher's ``pseudo_groundtruth`` (vreloc_tf.model.teacher);
      with ``batch["self_target"]`` ([B, 2], the segments of the student's running average,
      vreloc_tf.model.student_average), (1 - w) x that + w x Eq. 19 on the self target,
      w = :func:`self_target_weight` at ``step``.

    Also the label-free selection criterion: the mean of this on val pairs reads no labels in weak mode
    (vreloc_tf.training.fit.objective_on_plan adds the running average's segments when the config uses them).
    """
    for key in INPUT_NAMES:
        if key not in batch:
            raise KeyError(f"total_loss: batch has no '{key}' (keys: {sorted(batch)})")

    def coattention(use_masks):
        return coattention_loss(batch[QUERY], batch[QUERY_LENGTH], batch[REFERENCE],
                                batch[REFERENCE_LENGTH], probabilities, cfg.loss.alpha, use_masks)

    def cross_entropy(key, what):
        if key not in batch:
            raise KeyError(f"total_loss: {what} needs batch['{key}'] ([B, 2] int, [start, end))")
        return weighted_cross_entropy(probabilities, batch[key], batch[REFERENCE_LENGTH], cfg.loss.boundary_weight)

    if cfg.supervision == "weak":
        if cfg.loss.weak_variant == "paper":
            return coattention(ops.greater_equal(step, cfg.loss.coattention_mask_after_steps))
        if cfg.loss.weak_variant == "ours":
            loss = cross_entropy(PSEUDO_GROUNDTRUTH, "weak supervision (ours)")
            if SELF_TARGET not in batch:
                return loss
            weight = self_target_weight(cfg, step)
            # a negative pair (teacher target empty: no action) keeps no action in the blended target
            negative = ops.logical_not(ops.cast(has_action(batch[PSEUDO_GROUNDTRUTH]), "bool"))[:, None]
            target = ops.where(negative, ops.cast(batch[PSEUDO_GROUNDTRUTH], "int32"),
                               ops.cast(batch[SELF_TARGET], "int32"))
            return (1.0 - weight) * loss + weight * weighted_cross_entropy(
                probabilities, target, batch[REFERENCE_LENGTH], cfg.loss.boundary_weight)
        raise ValueError(f"total_loss: unknown cfg.loss.weak_variant {cfg.loss.weak_variant!r}")
    if cfg.supervision != "full":
        raise ValueError(f"total_loss: cfg.supervision must be 'full' or 'weak', got {cfg.supervision!r}")
    if cfg.loss.full_losses == "feng":
        if GROUNDTRUTH not in batch:
            raise KeyError(f"total_loss: full supervision needs batch['{GROUNDTRUTH}'] ([B, 2] int, [start, end))")
        return feng_cross_entropy(probabilities, batch[GROUNDTRUTH], batch[REFERENCE_LENGTH],
                                  cfg.loss.boundary_weight)
    loss = cross_entropy(GROUNDTRUTH, "full supervision")
    if cfg.loss.full_losses == "weighted_ce":
        return loss
    if cfg.loss.full_losses == "weighted_ce+coattention":
        # loss^c pulls the action region towards the query: only where the reference holds it
        return loss + cfg.loss.coattention_weight * coattention(False) * has_action(batch[GROUNDTRUTH])
    raise ValueError(f"total_loss: unknown cfg.loss.full_losses {cfg.loss.full_losses!r}")


def uses_self_target(cfg) -> bool:
    """Whether training blends the student's running average into the target (weak "ours", weight > 0)."""
    if cfg.supervision != "weak" or cfg.loss.weak_variant != "ours":
        return False
    weight, momentum = float(cfg.loss.self_target_weight), float(cfg.loss.self_target_momentum)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"loss.self_target_weight must be in [0, 1], got {weight}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"loss.self_target_momentum must be in [0, 1), got {momentum}")
    for key in ("self_target_start", "self_target_ramp_steps"):
        if int(getattr(cfg.loss, key)) < 0:
            raise ValueError(f"loss.{key} must be >= 0, got {getattr(cfg.loss, key)}")
    return weight > 0.0


def average_is_model(cfg) -> bool:
    """Whether the saved model holds the student's running average (weak "ours" with a self target
    and ``loss.self_target_as_model``) rather than the student's own weights."""
    return uses_self_target(cfg) and bool(cfg.loss.self_target_as_model)


def self_target_weight(cfg, step):
    """w at ``step`` (int or scalar tensor): 0 until ``self_target_start``, then linear up to
    ``self_target_weight`` over ``self_target_ramp_steps`` (at once if 0), then constant."""
    start, ramp = float(cfg.loss.self_target_start), float(cfg.loss.self_target_ramp_steps)
    t = ops.cast(step, "float32")
    progress = ops.cast(ops.greater_equal(t, start), "float32") if ramp == 0 else ops.clip((t - start) / ramp, 0.0, 1.0)
    return float(cfg.loss.self_target_weight) * progress


def truncation_fraction(cfg) -> float:
    """The fraction of highest-loss pairs weak "ours" leaves out (``loss.teacher_truncation``), else 0."""
    if cfg.supervision != "weak" or cfg.loss.weak_variant != "ours":
        return 0.0
    value = float(cfg.loss.teacher_truncation)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"loss.teacher_truncation must be in [0, 1), got {value}")
    return value


def truncated_mean(losses, fraction):
    """The mean of the (1 - fraction) smallest entries of ``losses`` [B] (at least one kept).

    The small-loss rule of learning with noisy labels (co-teaching, Han et al. 2018): once a
    model has learnt what is common, the pairs it disagrees with most are the likeliest to
    carry a wrong label, and fitting them is what makes it drift. ``fraction`` may be a tensor.
    """
    losses = ops.convert_to_tensor(losses)
    count = ops.shape(losses)[0]
    drop = ops.cast(ops.floor(ops.cast(fraction, "float32") * ops.cast(count, "float32")), "int32")
    keep = ops.maximum(ops.cast(count, "int32") - drop, 1)
    threshold = ops.take(ops.sort(losses), keep - 1)
    kept = ops.cast(ops.less_equal(losses, threshold), losses.dtype)
    return ops.sum(losses * kept) / ops.maximum(ops.sum(kept), 1.0)


def total_loss(cfg, batch, probabilities, step):
    """The scalar training loss: :func:`per_example_loss` averaged over the batch.

    Weak "ours" with ``loss.teacher_truncation`` > 0 averages only the smallest losses
    (:func:`truncated_mean`); the dropped fraction ramps up linearly from 0 at step 0 to
    ``teacher_truncation`` at ``teacher_truncation_ramp_steps``.
    """
    losses = per_example_loss(cfg, batch, probabilities, step)
    fraction = truncation_fraction(cfg)
    if fraction:
        ramp = max(int(cfg.loss.teacher_truncation_ramp_steps), 1)
        progress = ops.minimum(ops.cast(step, "float32") / float(ramp), 1.0)
        return truncated_mean(losses, fraction * progress)
    return ops.mean(losses)
