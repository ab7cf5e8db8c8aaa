"""Feature families of ``vreloc synth``: structurally different models of C3D-like features.

Why several: a number measured on one generator only shows that a model learns that
generator. Quality claims in docs/QUALITY.md hold across these families, each built
around a different way in which two videos of the same action differ (docs/DATA.md
describes each one; this module is the code). Every family maps (video, its action
instances) -> subsampled features [n, D] (one row per 16 frames), deterministically
from (seed, dim, video index), so any split geometry can be filled with any family.

A family is a class with ``__init__(seed, dim)`` and ``video(vid_index, n, instances)``;
``FAMILIES`` maps its name to it. A family with ``needs_geometry = True`` (``distractor``)
also places things by the split geometry: ``plan(geometry)`` runs first and returns counts.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from vreloc_tf.errors import InputError

N_DISTRACTOR_CLASSES = 40  # "other activity" classes of the backgrounds (labels in no split)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------- demo
# The feature model's components (docs/DATA.md: what each stands for and why).
COMMON_NORM = 0.8  # component shared by every clip
SCENE_NORM = 0.3  # per-video appearance
ACTION_NORM = 1.5  # class signature inside an instance
POSE_CORRELATION = 0.9  # cosine between a class's start and end poses
SIGNATURE_JITTER = 0.3  # per-instance deviation from the class's poses
DISTRACTOR_NORM = 1.0  # other activity in the background
DEMO_DISTRACTOR_CLASSES = 30
MEAN_GAP_BETWEEN_EPISODES = 25.0  # one other-activity episode per 25 features on average
JITTER_NORM = 4.0  # per-clip jitter on moving clips (norm of one feature's jitter)
SENSOR_NOISE_NORM = 0.2  # white noise on every clip



class DemoFamily:
    """The first generator (kept as ``demo``): a class pose that moves from a start to an end pose,
    hidden per clip under clip-grid jitter that cancels over a run of moving clips.

    Components (docs/DATA.md says what each stands for and why): a component shared by every
    clip, a weak per-video scene, the class signature inside an instance, distractor episodes
    in the background, clip-grid jitter on moving clips, and white sensor noise.
    """

    def __init__(self, seed: int, dim: int):
        if dim < 2:
            raise InputError(f"family 'demo' needs --dim >= 2, got {dim}")
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 7919])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.action_dim = max(1, dim // 2)
        self.u_action = basis[:, : self.action_dim].T.astype(np.float32)  # [dA, D]: where activities live
        self.common = unit_rows(rng.standard_normal((1, dim)))[0] * COMMON_NORM  # [D], shared by every clip
        self._signatures: Dict[int, np.ndarray] = {}

    def signature(self, label: int) -> np.ndarray:
        """The class's [2, dA] start and end poses (unit vectors, cosine ~POSE_CORRELATION), fixed by seed and label."""
        if label not in self._signatures:
            rng = np.random.default_rng([self.seed, 104729, int(label) & 0x7FFFFFFF])
            poses = unit_rows(rng.standard_normal((2, self.action_dim)))
            poses[1] = POSE_CORRELATION * poses[0] + np.sqrt(1.0 - POSE_CORRELATION ** 2) * poses[1]
            self._signatures[label] = unit_rows(poses)
        return self._signatures[label]

    def video(self, vid_index: int, n: int, instances: list) -> np.ndarray:
        """Subsampled features [n, D] float32 of one video."""
        return self._features(vid_index, n, instances, ())

    def _add_instance(self, rng, inst, activity: np.ndarray, motion: np.ndarray, edges: np.ndarray) -> None:
        """One instance of class ``inst.label``: its signature moving from start to end pose, with the
        per-instance jitter and amplitude; marks its clips moving and them plus one each side in ``edges``."""
        n, d_a = activity.shape
        s, e = max(0, inst.start), min(n, inst.end)
        if e <= s:
            return
        sig = self.signature(inst.label) + (SIGNATURE_JITTER / np.sqrt(d_a)) * rng.standard_normal((2, d_a))
        sig = unit_rows(sig) * ACTION_NORM * rng.uniform(0.85, 1.15)
        w = np.linspace(0.0, 1.0, e - s, dtype=np.float32)[:, None]
        activity[s:e] += (1 - w) * sig[0] + w * sig[1]
        motion[s:e] = 1.0
        edges[max(0, s - 1):min(n, e + 1)] = True

    def _features(self, vid_index: int, n: int, instances: list, unannotated: list) -> np.ndarray:
        """:meth:`video`, plus ``unannotated`` instances drawn exactly like annotated ones (the
        ``distractor`` family's second actions). Their draws come from a stream of their own and
        the background episodes are cut around them without changing any other draw, so with no
        ``unannotated`` instances these are demo's bytes and with some, demo's bytes everywhere
        but on them and their edge features."""
        rng = np.random.default_rng([self.seed, 31337, vid_index])
        d_a, dim = self.action_dim, self.dim
        activity = np.zeros((n, d_a), np.float32)
        motion = np.zeros(n, np.float32)  # 1 on clips with movement (actions and other activity)
        occupied = np.zeros(n, bool)
        for inst in instances:
            self._add_instance(rng, inst, activity, motion, occupied)
        second = np.zeros(n, bool)  # clips of unannotated instances and their edge features
        rng_second = np.random.default_rng([self.seed, SECOND_ACTION_FEATURE_STREAM, vid_index])
        for inst in unannotated:
            self._add_instance(rng_second, inst, activity, motion, second)
        # Other activity in the background: distractor classes, never a split's class.
        for _ in range(rng.poisson(n / MEAN_GAP_BETWEEN_EPISODES)):
            length = int(rng.integers(3, 21))
            start = int(rng.integers(0, max(1, n - length + 1)))
            span = np.arange(start, min(n, start + length))
            span = span[~occupied[span]]
            if span.size == 0:
                continue
            sig = self.signature(-1 - int(rng.integers(0, DEMO_DISTRACTOR_CLASSES)))
            span = span[~second[span]]  # after the draw: the draws stay demo's
            activity[span] += DISTRACTOR_NORM * sig[0]
            motion[span] = 1.0
        scene = unit_rows(rng.standard_normal((1, dim)))[0] * SCENE_NORM
        # Clip-grid jitter on moving clips: differences of a white process, so it cancels
        # over any contiguous run of moving clips (see the module docstring).
        white = rng.standard_normal((n + 1, dim)).astype(np.float32)
        jitter = (white[1:] - white[:-1]) * (JITTER_NORM / np.sqrt(2 * dim)) * motion[:, None]
        sensor = rng.standard_normal((n, dim)).astype(np.float32) * (SENSOR_NOISE_NORM / np.sqrt(dim))
        return (self.common + scene + activity @ self.u_action + jitter + sensor).astype(np.float32)


# --------------------------------------------------------------------------- the other families


def ar1_noise(rng: np.random.Generator, n: int, dim: int, rho: float, std: float) -> np.ndarray:
    """Temporally correlated noise [n, dim]: AR(1) with coefficient ``rho`` and stationary std ``std``."""
    e = rng.standard_normal((n, dim)).astype(np.float32)
    out = np.empty_like(e)
    out[0] = e[0]
    scale = np.sqrt(1.0 - rho * rho)
    for t in range(1, n):
        out[t] = rho * out[t - 1] + scale * e[t]
    return out * std


def _background_spans(rng, n, occupied, rate, min_len, max_len):
    """Random distractor spans (Poisson, ``rate`` per step) clipped to free steps."""
    for _ in range(rng.poisson(n * rate)):
        length = int(rng.integers(min_len, max_len + 1))
        start = int(rng.integers(0, max(1, n - length + 1)))
        span = np.arange(start, min(n, start + length))
        span = span[~occupied[span]]
        if span.size >= 2:
            yield span


def _instance_spans(instances: list, n: int):
    occupied = np.zeros(n, bool)
    spans = []
    for inst in instances:
        s, e = max(0, inst.start), min(n, inst.end)
        if e > s:
            spans.append((inst, s, e))
            occupied[max(0, s - 1):min(n, e + 1)] = True
    return spans, occupied


class SubstatesFamily:
    """Ordered sub-states in a shared low-dimensional subspace, under a dominant per-video scene.

    An action class is a sequence of 3-5 sub-states (unit vectors in an activity subspace
    shared by all classes, D/4 dims, at most 16); an instance visits them in order, each for
    a random share of its length. Each video adds its own scene vector (norm 2, twice the
    activity's), so raw cosine similarity mostly measures "same video"; noise is AR(1)
    (rho 0.8) and the background holds idle wandering and distractor activities.
    """

    SCENE_NORM, ACTION_NORM, COMMON_NORM = 2.0, 1.0, 1.0

    def __init__(self, seed: int, dim: int):
        if dim < 4:
            raise InputError(f"family 'substates' needs --dim >= 4, got {dim}")
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 5501])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.activity_dim = max(2, min(16, dim // 4))
        self.u_activity = basis[:, :self.activity_dim].T.astype(np.float32)
        self.common = unit_rows(rng.standard_normal((1, dim)))[0] * self.COMMON_NORM
        self._states: Dict[int, np.ndarray] = {}

    def states(self, label: int) -> np.ndarray:
        if label not in self._states:
            rng = np.random.default_rng([self.seed, 977, label & 0x7FFFFFFF])
            self._states[label] = unit_rows(rng.standard_normal((int(rng.integers(3, 6)), self.activity_dim)))
        return self._states[label]

    @staticmethod
    def trajectory(rng, states: np.ndarray, length: int) -> np.ndarray:
        """[length, dA]: the sub-states in order, random shares, one-step smoothed transitions."""
        k = len(states)
        bounds = np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.ones(k) * 3.0))]) * length
        index = np.clip(np.searchsorted(bounds, np.arange(length) + 0.5, side="right") - 1, 0, k - 1)
        path = states[index].astype(np.float32)
        if length > 2:
            path[1:-1] = 0.25 * path[:-2] + 0.5 * path[1:-1] + 0.25 * path[2:]
        return path

    def video(self, vid_index: int, n: int, instances: list) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 4242, vid_index])
        activity = np.zeros((n, self.activity_dim), np.float32)
        spans, occupied = _instance_spans(instances, n)
        for inst, s, e in spans:
            states = self.states(inst.label)
            states = unit_rows(states + 0.25 / np.sqrt(self.activity_dim) * rng.standard_normal(states.shape))
            activity[s:e] = self.trajectory(rng, states, e - s) * self.ACTION_NORM * rng.uniform(0.8, 1.2)
        for span in _background_spans(rng, n, occupied, 1 / 30.0, 4, 24):
            states = self.states(-1 - int(rng.integers(0, N_DISTRACTOR_CLASSES)))
            activity[span] = self.trajectory(rng, states, span.size) * rng.uniform(0.6, 1.0)
        idle = ar1_noise(rng, n, self.activity_dim, 0.9, 0.15)
        scene = unit_rows(rng.standard_normal((1, self.dim)))[0] * self.SCENE_NORM
        noise = ar1_noise(rng, n, self.dim, 0.8, 0.5 / np.sqrt(self.dim))
        return (self.common + scene + (activity + idle) @ self.u_activity + noise).astype(np.float32)


class PeriodicFamily:
    """Repetitive actions of class-specific rhythm, seen through a non-negative (ReLU) feature map.

    A 12-d latent state moves along a class-specific periodic orbit (period 3-10 steps, three
    harmonics) while the action lasts, with a per-instance tempo (x0.8-1.25) and phase; the
    background wanders slowly (AR(1), rho 0.95) with distractor orbits. Each video has a
    6-d latent scene. Features are ReLU(W [latent, scene] + b) plus one-sided noise: scene
    and action mix non-linearly, as they do in a CNN's activations.
    """

    LATENT, SCENE = 12, 6

    def __init__(self, seed: int, dim: int):
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 8080])
        self.w = rng.standard_normal((dim, self.LATENT + self.SCENE)).astype(np.float32) / np.sqrt(self.LATENT)
        self.bias = np.float32(-0.3)
        self._orbits: Dict[int, tuple] = {}

    def orbit(self, label: int):
        if label not in self._orbits:
            rng = np.random.default_rng([self.seed, 313, label & 0x7FFFFFFF])
            period = rng.uniform(3.0, 10.0)
            coef = rng.standard_normal((3, 2, self.LATENT)).astype(np.float32) / np.sqrt(self.LATENT)
            coef *= np.array([1.0, 0.5, 0.3], np.float32)[:, None, None]
            offset = rng.standard_normal(self.LATENT).astype(np.float32) * 0.6 / np.sqrt(self.LATENT)
            self._orbits[label] = (period, coef, offset)
        return self._orbits[label]

    def motion(self, rng, label: int, length: int, amplitude: float) -> np.ndarray:
        period, coef, offset = self.orbit(label)
        period *= rng.uniform(0.8, 1.25)
        phase = rng.uniform(0, 2 * np.pi)
        t = np.arange(length, dtype=np.float32)
        z = np.tile(offset, (length, 1))
        for h in range(3):
            angle = 2 * np.pi * (h + 1) * t / period + phase * (h + 1)
            z += np.cos(angle)[:, None] * coef[h, 0] + np.sin(angle)[:, None] * coef[h, 1]
        return z * amplitude * 2.0

    def video(self, vid_index: int, n: int, instances: list) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 6161, vid_index])
        z = ar1_noise(rng, n, self.LATENT, 0.95, 0.15)
        spans, occupied = _instance_spans(instances, n)
        for inst, s, e in spans:
            z[s:e] += self.motion(rng, inst.label, e - s, rng.uniform(0.8, 1.2))
        for span in _background_spans(rng, n, occupied, 1 / 35.0, 5, 24):
            z[span] += self.motion(rng, -1 - int(rng.integers(0, N_DISTRACTOR_CLASSES)), span.size,
                                   rng.uniform(0.5, 1.0))
        scene = rng.standard_normal(self.SCENE).astype(np.float32) * 1.5
        latent = np.concatenate([z, np.tile(scene, (n, 1))], axis=1)
        x = np.maximum(latent @ self.w.T + self.bias, 0.0)
        x += 0.15 * np.abs(rng.standard_normal(x.shape)).astype(np.float32)
        return (x - 0.35).astype(np.float32)


class ShotsFamily:
    """Camera cuts that ignore the action, soft action boundaries, heavy-tailed noise and drift.

    Each video alternates between 2-3 camera set-ups (strong scene vectors) in shots of ~16
    steps, cut at random times, so the scene changes inside actions and inside backgrounds
    alike. An action is a class pose plus a class motion direction, faded in and out
    (soft boundaries), sometimes occluded for two steps. Noise is Student-t (3 degrees of
    freedom) on top of a slow random-walk drift.
    """

    def __init__(self, seed: int, dim: int):
        if dim < 3:
            raise InputError(f"family 'shots' needs --dim >= 3, got {dim}")
        self.seed, self.dim = seed, dim
        rng = np.random.default_rng([seed, 9191])
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.activity_dim = max(2, dim // 3)
        self.u_activity = basis[:, :self.activity_dim].T.astype(np.float32)
        self.common = unit_rows(rng.standard_normal((1, dim)))[0] * 1.2
        self._classes: Dict[int, tuple] = {}

    def signature(self, label: int):
        if label not in self._classes:
            rng = np.random.default_rng([self.seed, 5150, label & 0x7FFFFFFF])
            self._classes[label] = tuple(unit_rows(rng.standard_normal((2, self.activity_dim))))
        return self._classes[label]

    def action(self, rng, label: int, length: int, amplitude: float) -> np.ndarray:
        pose, motion = self.signature(label)
        t = (np.arange(length) + 0.5) / length
        envelope = np.clip(np.minimum(t, 1 - t) * rng.uniform(4, 10), 0, 1) ** 0.7
        wobble = np.sin(2 * np.pi * t * rng.uniform(1, 3) + rng.uniform(0, 2 * np.pi))
        a = envelope[:, None] * (pose[None] + 0.6 * wobble[:, None] * motion[None])
        if length > 6 and rng.random() < 0.3:
            k = int(rng.integers(1, length - 2))
            a[k:k + 2] *= 0.3
        return (a * amplitude * 1.3).astype(np.float32)

    def video(self, vid_index: int, n: int, instances: list) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 2727, vid_index])
        setups = unit_rows(rng.standard_normal((int(rng.integers(2, 4)), self.dim))) * 1.8
        scene = np.zeros((n, self.dim), np.float32)
        t, current = 0, int(rng.integers(len(setups)))
        while t < n:
            shot = int(rng.geometric(1 / 14.0)) + 2
            scene[t:t + shot] = setups[current]
            current = (current + int(rng.integers(1, len(setups)))) % len(setups)
            t += shot
        activity = np.zeros((n, self.activity_dim), np.float32)
        spans, occupied = _instance_spans(instances, n)
        for inst, s, e in spans:
            activity[s:e] += self.action(rng, inst.label, e - s, rng.uniform(0.8, 1.2))
        for span in _background_spans(rng, n, occupied, 1 / 30.0, 4, 20):
            activity[span] += self.action(rng, -1 - int(rng.integers(0, N_DISTRACTOR_CLASSES)), span.size,
                                          rng.uniform(0.5, 1.0))
        drift = np.cumsum(rng.standard_normal((n, self.dim)).astype(np.float32), axis=0) * (0.05 / np.sqrt(self.dim))
        noise = rng.standard_t(3, size=(n, self.dim)).astype(np.float32) * (0.35 / np.sqrt(self.dim))
        return (self.common + scene + activity @ self.u_activity + drift + noise).astype(np.float32)


# --------------------------------------------------------------------------- distractor
# A second, unannotated action of another class of the video's split (issue #26 item 3).
# Called the *second action* in the code: the "distractor" episodes/classes above are the
# background's other activity, of classes in no split.
SECOND_ACTION_PLAN_STREAM = 2601  # rng stream of the plan (class, lengths, places), apart from every feature draw
SECOND_ACTION_FEATURE_STREAM = 2602  # rng stream of the second actions' features: the rest of a video stays demo's draw
MIN_SECOND_ACTION = 4  # shortest a second action is cut to where its drawn length does not fit: the shortest
#                        instance of the synthetic geometries (pipeline.synth.ACTION_LENGTHS); shorter would be a
#                        blip, not an action (a drawn length below it, as the benchmark has, is kept as drawn)
SECOND_ACTION_MARGIN = 1  # quiet features kept between a second action and an annotated instance or another second
#                           action, so that two never merge into one run of movement (demo's episodes keep the same)


@dataclasses.dataclass
class Instance:
    """One action instance in one video, in the subsampled feature index space
    (pipeline.synth's geometries and the distractor family's second actions)."""

    label: int
    start: int
    end: int  # exclusive


@dataclasses.dataclass
class VideoPlan:
    """The second actions of one video and why it has none where it has none."""

    video_id: str
    split: Optional[str]
    label: Optional[int]  # the second action's class (None: the split has no other class)
    actions: List = dataclasses.field(default_factory=list)  # Instance, sorted
    drawn_lengths: List[int] = dataclasses.field(default_factory=list)  # before any cut to fit, per action
    windows: List[Tuple[int, int]] = dataclasses.field(default_factory=list)  # the video's entry windows
    no_room: int = 0  # windows without a second action: no free run of the shortest length in them


def free_runs(free: np.ndarray, lo: int, hi: int) -> List[Tuple[int, int]]:
    """Maximal runs [a, b) of True in ``free[lo:hi]``, in video coordinates."""
    x = np.concatenate([[False], free[lo:hi], [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(x))
    return [(lo + int(a), lo + int(b)) for a, b in zip(edges[0::2], edges[1::2])]


class DistractorFamily(DemoFamily):
    """The ``demo`` family plus a second, unannotated action in every video.

    Every video also holds instances of a second action: a class drawn among the *other*
    classes of the video's split, each instance made exactly like a real instance of that
    class (its signature, jitter and amplitude, a length drawn from that class's real
    instances) but in no split entry, so never a ground truth nor a query. Its instances lie
    inside the video's entry windows (what the model sees as a reference), never on an
    annotated instance or next to one: one per window where room allows, one instance shared
    by two neighbouring windows where it fits in both. A window whose free room is shorter
    than the drawn length gets it cut to the longest free run (not below
    ``MIN_SECOND_ACTION``); a window without even that gets none. So a reference holds a
    real action of its class and one of another class, and finding "an action" is not enough.

    Outside the second actions (and their edge features) a video is the ``demo`` family's
    bytes for the same seed, so ``demo`` against ``distractor`` measures only what the second
    action does. Needs the geometry: :meth:`plan` (``pipeline.synth.generate`` calls it)
    before :meth:`video`.
    """

    needs_geometry = True

    def __init__(self, seed: int, dim: int):
        if dim < 2:
            raise InputError(f"family 'distractor' needs --dim >= 2, got {dim}")
        super().__init__(seed, dim)
        self.plans: Optional[Dict[int, VideoPlan]] = None  # video index -> plan

    def plan(self, geometry) -> Dict[str, object]:
        """Place the second actions of every video of ``geometry`` (a ``pipeline.synth.Geometry``);
        returns the counts (:func:`plan_counts`). Deterministic from (seed, video index)."""
        split_of: Dict[str, str] = {}
        windows: Dict[str, set] = {}
        classes: Dict[str, set] = {}
        for split, entries in geometry.splits.items():
            for k, entry in enumerate(entries):
                try:
                    vid, label = entry["id"], int(entry["label"])
                    lo, hi = (int(v) for v in entry["location"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise InputError(f"family 'distractor': {split} entry {k} is malformed ({exc!r})") from None
                if vid not in geometry.n_feat:
                    raise InputError(f"family 'distractor': {split} entry {k} names video {vid!r}, "
                                     f"which the geometry has no length for")
                split_of.setdefault(vid, split)  # a video in two splits takes its first (none is, in any geometry)
                windows.setdefault(vid, set()).add((max(0, lo), min(geometry.n_feat[vid], hi)))
                classes.setdefault(split, set()).add(label)
        lengths: Dict[int, List[int]] = {}  # class -> lengths of its real instances
        for vid, instances in sorted(geometry.instances.items()):
            if vid in split_of:
                for inst in instances:
                    if inst.end > inst.start:
                        lengths.setdefault(int(inst.label), []).append(int(inst.end - inst.start))
        self.plans = {}
        for k, vid in enumerate(geometry.video_ids()):
            n, instances = geometry.n_feat[vid], geometry.instances.get(vid, [])
            split = split_of.get(vid)
            rng = np.random.default_rng([self.seed, SECOND_ACTION_PLAN_STREAM, k])
            own = {int(i.label) for i in instances}
            others = sorted(c for c in classes.get(split, ()) if c not in own and c in lengths)
            plan = VideoPlan(vid, split, None, windows=sorted(windows.get(vid, ())))
            self.plans[k] = plan
            if not others:
                continue
            plan.label = others[int(rng.integers(len(others)))]
            pool = lengths[plan.label]
            free = np.ones(n, bool)
            for inst in instances:
                free[max(0, inst.start - SECOND_ACTION_MARGIN):min(n, inst.end + SECOND_ACTION_MARGIN)] = False
            for lo, hi in plan.windows:
                if any(lo <= a.start and a.end <= hi for a in plan.actions):
                    continue  # holds one already (placed for its neighbour)
                want = int(pool[int(rng.integers(len(pool)))])
                runs = free_runs(free, lo, hi)
                longest = max((b - a for a, b in runs), default=0)
                if longest < min(want, MIN_SECOND_ACTION):
                    plan.no_room += 1
                    continue
                length = min(want, longest)
                # every start that fits, scored by how many windows still without one it would lie in
                starts = np.concatenate([np.arange(a, b - length + 1) for a, b in runs if b - a >= length])
                open_windows = [(wl, wh) for wl, wh in plan.windows
                                if not any(wl <= a.start and a.end <= wh for a in plan.actions)]
                score = sum(((starts >= wl) & (starts + length <= wh)).astype(int) for wl, wh in open_windows)
                best = starts[score == score.max()]
                start = int(best[int(rng.integers(best.size))])
                plan.actions.append(Instance(plan.label, start, start + length))
                plan.drawn_lengths.append(want)
                free[max(0, start - SECOND_ACTION_MARGIN):min(n, start + length + SECOND_ACTION_MARGIN)] = False
            order = np.argsort([a.start for a in plan.actions], kind="stable")
            plan.actions = [plan.actions[i] for i in order]
            plan.drawn_lengths = [plan.drawn_lengths[i] for i in order]
        return plan_counts(self.plans.values(), geometry.splits)

    def second_actions(self, vid_index: int) -> list:
        """The second actions (``Instance``) planned for video ``vid_index``."""
        if self.plans is None:
            raise RuntimeError("family 'distractor' places its second actions from the split geometry: "
                               "call plan(geometry) before video() (pipeline.synth.generate does)")
        if vid_index not in self.plans:
            raise RuntimeError(f"family 'distractor': video index {vid_index} is not in the planned geometry "
                               f"({len(self.plans)} videos)")
        return self.plans[vid_index].actions

    def video(self, vid_index: int, n: int, instances: list) -> np.ndarray:
        """Subsampled features [n, D] float32: demo's video plus its planned second actions."""
        return self._features(vid_index, n, instances, self.second_actions(vid_index))


def plan_counts(plans, splits: Dict[str, List[dict]]) -> Dict[str, object]:
    """Counts of a ``distractor`` plan: videos with and without a second action (with + without =
    videos), second actions and how many were cut to fit, and per split how many entry windows
    (the references) hold one whole."""
    plans = list(plans)
    by_id = {p.video_id: p for p in plans}
    windows = {}
    for split, entries in splits.items():
        holding = 0
        for entry in entries:
            plan = by_id.get(entry["id"])
            lo, hi = (int(v) for v in entry["location"])
            holding += bool(plan) and any(lo <= a.start and a.end <= hi for a in plan.actions)
        windows[split] = {"entries": len(entries), "holding": int(holding)}
    with_ = sum(bool(p.actions) for p in plans)
    return {
        "videos": len(plans), "with": with_, "without": len(plans) - with_,
        "without_no_other_class": sum(p.label is None for p in plans),
        "without_no_room": sum(p.label is not None and not p.actions for p in plans),
        "second_actions": sum(len(p.actions) for p in plans),
        "shortened": sum(a.end - a.start < want for p in plans for a, want in zip(p.actions, p.drawn_lengths)),
        "windows_without_room": sum(p.no_room for p in plans),
        "windows": windows,
    }


FAMILIES = {"demo": DemoFamily, "substates": SubstatesFamily, "periodic": PeriodicFamily, "shots": ShotsFamily,
            "distractor": DistractorFamily}


def make_family(name: str, seed: int, dim: int):
    """The feature model of family ``name`` (InputError naming the known families otherwise)."""
    if name not in FAMILIES:
        raise InputError(f"--family {name!r}: unknown feature family; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name](seed, dim)
