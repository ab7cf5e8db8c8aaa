"""tf.data input: query/reference pairs read from the TFRecord shards, padded per length bucket.

Design (memory independent of the dataset size): the pairs are *planned* in NumPy from
the small per-entry index (:mod:`vreloc_tf.data.entry_index`: shard, byte offset, video id,
label, window length, ground truth — ~100 bytes an entry), and a generator reads only
the two serialized records of each planned pair by offset; parsing, slicing and padding
run as parallel tf.data maps, followed by prefetch. In memory at any time: the index,
the plan of the current pass (a few int arrays) and the batches in flight.

Plans (per "epoch" = ``steps_per_epoch`` batches; everything is a function of
``(cfg.seed, epoch)`` only, so a run resumed at an epoch boundary sees exactly the
batches an uninterrupted run would):

* **full** — every entry with ground truth is a query once per pass, in a seeded random
  order: the query is its trimmed ground-truth segment; its reference is a uniformly
  random entry of the same class, from a different source video, whose window is at
  least as long as the query; the reference keeps its ground truth as the label.
  *Crop* (Feng et al.'s ``input_functions.sample``): with probability
  ``cfg.data.crop_probability`` the reference window ``[0, L)`` becomes
  ``[a, L - b)`` with ``a ~ U{0..gt_start}`` and ``b ~ U{0..L - gt_end}``, so the
  ground truth ``[gt_start - a, gt_end - a)`` stays inside; otherwise it is kept whole.
  (As in Feng's code the length test uses the uncropped window, so a cropped reference
  may end up shorter than its query.)
* **weak** — the train split is divided by source video into a query part and a
  reference part (:func:`vreloc_tf.data.entry_index.weak_role`, fraction
  ``cfg.data.weak_query_fraction``). Queries come from the query part only, trimmed to
  their own ground-truth segment (a query *is* a trimmed clip by definition; the
  paper's weak setting only forbids reference annotations). References come from the
  reference part only, same class, window at least as long as the query, **always
  whole** (no crop: cropping around the ground truth would use it). The ground truth of
  reference-part entries is dropped while the index is read, the record parser here
  never parses the ``groundtruth`` field, and weak batches carry no ``groundtruth``.
* **negative pairs** (ours, ``cfg.data.negative_pair_rate``, 0 = off): each planned pair is,
  with this probability, made a *negative*: its reference is replaced by a uniformly random
  reference-side entry of ANOTHER class (different source video, window at least as long as
  the query; found by rejection, so memory stays O(index)), kept whole, and its target is
  "no action": the empty segment ``[-1, -1)``, every step background
  (:func:`vreloc_tf.model.losses.step_labels`). Why: a model trained on matching pairs only
  learns "find the action", which scores on a reference with one action even when the query
  shows another (the swapped-query control); a negative teaches it that a reference holds the
  query's action only if the query says so. The class of a reference is a video-level label,
  which the weak setting has (it pairs by class), so weak plans may use negatives too. With
  rate 0 no random number is drawn for it: plans are exactly those of before.
* **distractor splices** (ours, ``cfg.data.distractor_rate``, 0 = off): each positive pair
  gets, with this probability, *two actions* in its reference, the query's class and ANOTHER
  class (a query-side train entry from neither the query's nor the reference's video, found
  by rejection). Full: one of the two windows, chosen with probability 1/2, is the host
  (cropped as above) and the other's ground-truth segment is inserted whole before a
  uniformly random step of the host's background; the target is the query's class's action,
  wherever it ended up -- so half of the targets are inserted clips and half are not, and
  "looks inserted" tells nothing without the query. Weak: the other class's action is
  inserted at the start or the end of the whole reference (it has no ground truth to keep out
  of; an end never splits an action), and the label-free teacher sees the spliced reference.
  Why: on a reference that holds one action, "find the action" scores without reading the
  query (the swapped-query control measures it); with two actions, only the query says which
  one is the answer -- what the ``distractor`` family of ``vreloc synth`` tests. Inserted, not
  overwritten: no step is lost. Rate 0 draws no random number: plans are exactly those of before.

Batching: pairs go to buckets of width ``BUCKET_SPAN`` (30 steps, Feng's
``bucket_span``) by reference length; a bucket that reaches the batch size is emitted
as one batch (padded with zeros to its longest query/reference). Batches are global
batches — Keras splits them across the replicas of the strategy. Lengths travel as
``int32`` ``query_length`` / ``reference_length``.

Batch dict: ``query`` float32 [B, Lq, D], ``query_length`` int32 [B], ``reference``
float32 [B, Lr, D], ``reference_length`` int32 [B], and for full supervision
``groundtruth`` int32 [B, 2] ([start, end) in the reference, end exclusive); for weak
supervision "ours" ``pseudo_groundtruth`` int32 [B, 2], the segment of the label-free teacher
(:mod:`vreloc_tf.model.teacher`), computed in the parse map from the query's whole source window
and the reference -- features only, so weak batches stay independent of reference labels.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from vreloc_tf.config import Config
from vreloc_tf.contract import GROUNDTRUTH, PSEUDO_GROUNDTRUTH, QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH
from vreloc_tf.data.entry_index import QUERY_PART, REFERENCE_PART, EntryIndex, RecordReader, load_index
from vreloc_tf.model.teacher import teacher_segment_tf
from vreloc_tf.errors import InputError

log = logging.getLogger(__name__)

BUCKET_SPAN = 30

# one planned pair: rows in the index (query, reference = the host window), slices [start, end) inside
# each window, the target [start, end) in the reference as trained ((-1, -1) where unknown or empty),
# negative (0/1), then the splice: the inserted row (-1 = none), its slice [start, end), and the step of
# the host slice it is inserted before (the target above counts the inserted steps)
PairPlan = Tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]
NO_ACTION = (-1, -1)  # the target of a negative pair: an empty segment, every step background
NO_DISTRACTOR = (-1, 0, 0, 0)  # no splice: row -1, an empty slice, inserted before step 0
NEGATIVE_TRIES = 64  # rejection draws for a negative's reference before the pair stays positive
DISTRACTOR_TRIES = 64  # rejection draws for a distractor before the pair keeps its one action


def reference_length(plan: PairPlan) -> int:
    """Steps of the planned reference: its slice plus the inserted distractor."""
    return (plan[5] - plan[4]) + (plan[11] - plan[10])


def load_training_index(cfg: Config, data_dir: str, split: str = "train") -> EntryIndex:
    """The index the training plan of ``cfg.supervision`` may see (weak: reference ground truth dropped)."""
    if cfg.supervision == "weak":
        return load_index(data_dir, split, hide_groundtruth_of="reference",
                          query_fraction=cfg.data.weak_query_fraction)
    return load_index(data_dir, split)


class PairPlanner:
    """Draws training pairs from an index (NumPy, seeded); see the module docstring."""

    def __init__(self, index: EntryIndex, supervision: str, crop_probability: float = 0.9,
                 negative_rate: float = 0.0, distractor_rate: float = 0.0):
        if supervision not in ("full", "weak"):
            raise ValueError(f"supervision must be 'full' or 'weak', got {supervision!r}")
        if not 0.0 <= float(negative_rate) < 1.0:
            raise ValueError(f"negative_rate (data.negative_pair_rate) must be in [0, 1), got {negative_rate!r}")
        if not 0.0 <= float(distractor_rate) <= 1.0:
            raise ValueError(f"distractor_rate (data.distractor_rate) must be in [0, 1], got {distractor_rate!r}")
        self.index = index
        self.supervision = supervision
        self.crop_probability = float(crop_probability)
        self.negative_rate = float(negative_rate)
        self.distractor_rate = float(distractor_rate)
        has_gt = index.has_groundtruth
        if supervision == "weak":
            if index.role is None:
                raise ValueError("weak pairs need an index with weak roles (load_training_index)")
            queries = has_gt & (index.role == QUERY_PART)
            references = index.role == REFERENCE_PART
            if np.any(has_gt & references):
                raise AssertionError("weak index holds reference ground truth")
        else:
            queries = has_gt
            references = has_gt
        self.query_rows = np.nonzero(queries)[0]
        self.query_len = (index.groundtruth[:, 1] - index.groundtruth[:, 0]).astype(np.int64)
        by_label = defaultdict(list)
        for row in np.nonzero(references)[0]:
            by_label[int(index.label[row])].append(row)
        self.refs_by_label = {k: np.array(v, dtype=np.int64) for k, v in by_label.items()}
        self.reference_rows = np.nonzero(references)[0]
        self.candidates = {}
        for q in self.query_rows:
            cands = self.refs_by_label.get(int(index.label[q]), np.zeros(0, np.int64))
            ok = (index.video_id[cands] != index.video_id[q]) & (index.length[cands] >= self.query_len[q])
            if np.any(ok):
                self.candidates[int(q)] = cands[ok]
        self.usable = np.array(sorted(self.candidates), dtype=np.int64)
        if self.usable.size == 0:
            raise InputError(f"split '{index.split}': no query has a valid {supervision}-supervision reference "
                             "(same class, different video, window at least as long as the query)")
        log.info("%s pairs: %d of %d queries have a valid reference", supervision, self.usable.size,
                 self.query_rows.size)

    def negative_reference(self, q: int, rng: np.random.Generator) -> Optional[int]:
        """A reference for query row ``q`` of another class (different video, window >= the query),
        by rejection among the reference-side rows; None if ``NEGATIVE_TRIES`` draws find none."""
        index = self.index
        for r in rng.choice(self.reference_rows, size=NEGATIVE_TRIES):
            if (index.label[r] != index.label[q] and index.video_id[r] != index.video_id[q]
                    and index.length[r] >= self.query_len[q]):
                return int(r)
        return None

    def distractor(self, q: int, r: int, rng: np.random.Generator) -> Optional[int]:
        """A train entry with ground truth of another class than query row ``q``, from neither
        ``q``'s nor ``r``'s video, by rejection among the query rows; None if none is drawn."""
        index = self.index
        for d in rng.choice(self.query_rows, size=DISTRACTOR_TRIES):
            if index.label[d] != index.label[q] and index.video_id[d] not in (index.video_id[q], index.video_id[r]):
                return int(d)
        return None

    def crop(self, row: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
        """(start, end) of ``row``'s window after Feng's crop, and its action (start, end) in the slice."""
        length = int(self.index.length[row])
        g0, g1 = (int(x) for x in self.index.groundtruth[row])
        a = b = 0
        if rng.random() < self.crop_probability:
            a = int(rng.integers(0, g0 + 1))
            b = int(rng.integers(0, length - g1 + 1))
        return a, length - b, g0 - a, g1 - a

    def spliced(self, rng: np.random.Generator, q: int, r: int) -> Optional[int]:
        """The distractor row of a pair drawn for splicing (probability ``distractor_rate``), else None."""
        if not (self.distractor_rate and rng.random() < self.distractor_rate):
            return None
        return self.distractor(q, r, rng)

    def full_pair(self, q: int, r: int, rng: np.random.Generator) -> PairPlan:
        """A full pair: ``r`` cropped, its action the target; or, spliced, two actions in one reference.

        A splice is symmetric: with probability 1/2 the host window is ``r`` (its own action the target,
        the other class's action inserted), else the other class's window (its action the distractor,
        ``r``'s action inserted and the target). Why both: an inserted clip comes from another video,
        and where it shows (a jump in the features at its ends) would otherwise say "not the answer"
        without the query; with both roles spliced equally often, only the query tells them apart.
        """
        qs, qe = (int(x) for x in self.index.groundtruth[q])
        d = self.spliced(rng, q, r)
        if d is None:
            return (q, r, qs, qe, *self.crop(r, rng), 0, *NO_DISTRACTOR)
        host, inserted = (r, d) if rng.integers(0, 2) == 0 else (d, r)
        a, e, h0, h1 = self.crop(host, rng)
        i0, i1 = (int(x) for x in self.index.groundtruth[inserted])
        slot = int(rng.integers(0, (h0 + 1) + (e - a - h1 + 1)))  # insertion points outside the host's action
        at = slot if slot <= h0 else h1 + (slot - h0 - 1)
        n = i1 - i0
        if host == r:
            target = (h0 + n, h1 + n) if at <= h0 else (h0, h1)
        else:
            target = (at, at + n)
        return (q, host, qs, qe, a, e, *target, 0, inserted, i0, i1, at)

    def weak_pair(self, q: int, r: int, rng: np.random.Generator) -> PairPlan:
        """A weak pair: ``r`` whole, no target; spliced, another class's action at its start or end
        (no ground truth to keep out of; an end never splits an action). The label-free teacher,
        not a label, then says where the query's action is, so a splice's look cannot stand in
        for the query and one role suffices."""
        length = int(self.index.length[r])
        plan = (q, r, int(self.index.groundtruth[q, 0]), int(self.index.groundtruth[q, 1]), 0, length, *NO_ACTION, 0)
        d = self.spliced(rng, q, r)
        if d is None:
            return (*plan, *NO_DISTRACTOR)
        d0, d1 = (int(x) for x in self.index.groundtruth[d])
        return (*plan, d, d0, d1, length * int(rng.integers(0, 2)))

    def one_pass(self, rng: np.random.Generator) -> Iterator[PairPlan]:
        """Every usable query once, in random order, each with a random valid reference
        (or, with probability ``negative_rate``, a reference of another class and no action;
        a positive pair, with probability ``distractor_rate``, a second action of another class)."""
        gt = self.index.groundtruth
        for q in rng.permutation(self.usable):
            cands = self.candidates[int(q)]
            r = int(cands[rng.integers(cands.size)])
            if self.negative_rate and rng.random() < self.negative_rate:
                other = self.negative_reference(int(q), rng)
                if other is not None:
                    yield (int(q), other, int(gt[q, 0]), int(gt[q, 1]), 0, int(self.index.length[other]),
                           *NO_ACTION, 1, *NO_DISTRACTOR)
                    continue
            yield (self.full_pair if self.supervision == "full" else self.weak_pair)(int(q), r, rng)

    def epoch_batches(self, seed: int, epoch: int, batch_size: int, steps: int) -> Iterator[List[PairPlan]]:
        """``steps`` batches of ``batch_size`` pairs for ``epoch``, bucketed by reference length."""
        rng = np.random.default_rng([int(seed), int(epoch)])
        buckets: Dict[int, List[PairPlan]] = defaultdict(list)
        emitted = 0
        while emitted < steps:
            for plan in self.one_pass(rng):
                key = reference_length(plan) // BUCKET_SPAN
                buckets[key].append(plan)
                if len(buckets[key]) == batch_size:
                    yield buckets.pop(key)
                    emitted += 1
                    if emitted == steps:
                        return


def _record_spec():
    import tensorflow as tf

    # deliberately no "groundtruth": labels come from the plan, never from a reference record
    return {
        "length": tf.io.FixedLenFeature([], tf.int64),
        "feature_dim": tf.io.FixedLenFeature([], tf.int64),
        "features": tf.io.VarLenFeature(tf.float32),
    }


def _parse_slice(serialized, start, end, feature_dim: int):
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, _record_spec())
    dim = tf.cast(parsed["feature_dim"], tf.int32)
    with tf.control_dependencies([tf.debugging.assert_equal(
            dim, feature_dim, message=f"record feature_dim differs from the data manifest's {feature_dim}")]):
        length = tf.cast(parsed["length"], tf.int32)
    feats = tf.reshape(tf.sparse.to_dense(parsed["features"]), tf.stack([length, feature_dim]))
    return feats[start:end]


def teacher_options(cfg: Config) -> Optional[dict]:
    """Arguments of :func:`vreloc_tf.model.teacher.teacher_segment_tf` for weak "ours", else None."""
    if cfg.supervision != "weak" or cfg.loss.weak_variant != "ours":
        return None
    return {"temperature": cfg.loss.teacher_temperature, "threshold_std": cfg.loss.teacher_threshold_std,
            "max_length": cfg.decode.full_max_length}


def _pairs_dataset(generator_fn, feature_dim: int, with_groundtruth: bool, batch_size: int,
                   drop_remainder: bool, teacher: Optional[dict] = None, splices: bool = False):
    """Generator of (query bytes, reference bytes, distractor bytes, slices[10]) -> parsed, padded batches.

    slices: query [start, end), reference [start, end), target [start, end), negative (0/1),
    distractor [start, end) (empty: no splice, its bytes unread) and the reference step it is
    inserted before. ``splices`` False (rate 0, evaluation): no splice step in the graph at all.
    ``teacher`` (weak "ours"): every pair also gets ``pseudo_groundtruth``, the label-free
    teacher's segment, computed from the query's whole source window and the reference --
    except a negative pair, whose target is no action (``NO_ACTION``) whatever the teacher says.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_generator(
        generator_fn,
        output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
                          tf.TensorSpec([10], tf.int32)))

    def parse(q_bytes, r_bytes, d_bytes, s):
        if teacher is None:
            query = _parse_slice(q_bytes, s[0], s[1], feature_dim)
        else:
            query_window = _parse_slice(q_bytes, 0, None, feature_dim)
            query = query_window[s[0]:s[1]]
        reference = _parse_slice(r_bytes, s[2], s[3], feature_dim)
        if splices:
            distractor = tf.cond(s[7] < s[8], lambda: _parse_slice(d_bytes, s[7], s[8], feature_dim),
                                 lambda: tf.zeros([0, feature_dim], tf.float32))
            reference = tf.concat([reference[:s[9]], distractor, reference[s[9]:]], axis=0)
        out = {QUERY: query, QUERY_LENGTH: tf.shape(query)[0], REFERENCE: reference,
               REFERENCE_LENGTH: tf.shape(reference)[0]}
        if with_groundtruth:
            out[GROUNDTRUTH] = s[4:6]
        if teacher is not None:
            pseudo = teacher_segment_tf(query_window, s[0], s[1], reference, **teacher)
            out[PSEUDO_GROUNDTRUTH] = tf.where(s[6] > 0, tf.constant(NO_ACTION, pseudo.dtype), pseudo)
        return out

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def training_dataset(cfg: Config, index: EntryIndex, feature_dim: int, steps_per_epoch: int,
                     start_epoch: int, epochs: int, batch_size: Optional[int] = None):
    """Batches for epochs ``start_epoch .. epochs-1`` (exactly ``steps_per_epoch`` each)."""
    planner = PairPlanner(index, cfg.supervision, cfg.data.crop_probability, cfg.data.negative_pair_rate,
                          cfg.data.distractor_rate)
    batch_size = int(batch_size or cfg.train.batch_size)
    full = cfg.supervision == "full"

    def generate():
        with RecordReader(index) as reader:
            for epoch in range(start_epoch, epochs):
                for batch in planner.epoch_batches(cfg.seed, epoch, batch_size, steps_per_epoch):
                    for q, r, *slices in batch:
                        d = slices[7]
                        yield (reader.read(q), reader.read(r), reader.read(d) if d >= 0 else b"",
                               np.array(slices[:7] + slices[8:], np.int32))

    return _pairs_dataset(generate, feature_dim, full, batch_size, drop_remainder=True,
                          teacher=teacher_options(cfg), splices=planner.distractor_rate > 0)


def evaluation_plan(index: EntryIndex, pairs: Sequence[dict]) -> np.ndarray:
    """int64 [N, 8] rows of (q_row, r_row, q_start, q_end, r_start, r_end, gt_start, gt_end)."""
    q_rows = index.position_of([p["query"] for p in pairs])
    r_rows = index.position_of([p["reference"] for p in pairs])
    gt = index.groundtruth
    for name, rows in (("query", q_rows), ("reference", r_rows)):
        missing = rows[gt[rows, 0] < 0]
        if missing.size:
            raise InputError(f"pair list names {name} entry {int(index.entry_index[missing[0]])} "
                             f"of split '{index.split}', which has no ground truth")
    plan = np.stack([q_rows, r_rows, gt[q_rows, 0], gt[q_rows, 1],
                     np.zeros_like(r_rows), index.length[r_rows], gt[r_rows, 0], gt[r_rows, 1]], axis=1)
    return plan.astype(np.int64)


def evaluation_dataset(index: EntryIndex, plan: np.ndarray, feature_dim: int, batch_size: int = 64,
                       teacher: Optional[dict] = None):
    """Batches of the planned pairs *in plan order* (whole references, no labels in the batch;
    with ``teacher``, the teacher's label-free ``pseudo_groundtruth``)."""
    def generate():
        with RecordReader(index) as reader:
            for q, r, qs, qe, rs, re, _, _ in plan:
                yield (reader.read(int(q)), reader.read(int(r)), b"",
                       np.array([qs, qe, rs, re, *NO_ACTION, 0, *NO_DISTRACTOR[1:]], np.int32))

    return _pairs_dataset(generate, feature_dim, False, batch_size, drop_remainder=False, teacher=teacher)


def length_sorted(plan: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(plan sorted by reference length, the permutation that restores the original order)."""
    order = np.argsort(plan[:, 5] - plan[:, 4], kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return plan[order], inverse
