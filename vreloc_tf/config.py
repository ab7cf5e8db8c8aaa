"""Typed configuration: one dataclass tree, loaded from plain YAML.

Why a typed tree instead of a dict: a misspelt key or a string where a number
belongs must fail at start-up with the file and key named, not hours into a
run. For the same reason every number and list has a legal range (``RANGES``:
a batch of 0, -5 steps, no heads), checked whenever a config is loaded and
again by ``train`` before it writes anything. The paper's settings are the defaults (see ``configs/paper_full.yaml``
for the source of each number); ``configs/*.yaml`` only state what differs.

``supervision`` (``full`` | ``weak``) is the one top-level switch between the
two training modes, so ``--set supervision=weak`` turns any config into its
weakly supervised twin.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, List, Literal, Optional, Sequence

import yaml

from vreloc_tf import contract
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path
from vreloc_tf.suggest import closest

# The shipped configs: the repository's top-level configs/ (a checkout, an editable install), which a
# wheel installs as the data package vreloc_tf/configs (setup.py's package_dir); the first that exists.
_HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIRS = (os.path.join(_HERE, "configs"), os.path.join(os.path.dirname(_HERE), "configs"))
CONFIG_DIR = next((d for d in CONFIG_DIRS if os.path.isdir(d)), CONFIG_DIRS[-1])


class ConfigError(InputError):
    """A configuration file or override is wrong; the message names the key and the source."""


def _unknown_key_hint(key: str, names, parent: str) -> str:
    """``(did you mean train.steps?)`` for the closest known key (difflib), else the known keys of the section."""
    match = closest(str(key), sorted(names))
    if match:
        return f"(did you mean {parent + '.' if parent else ''}{match}?)"
    return f"(known keys{' of ' + parent if parent else ''}: {', '.join(sorted(names))})"


@dataclass
class HeadGroup:
    """A group of multiscale-attention heads sharing kernel size and dilation (Table 1 row)."""

    heads: int = 8
    kernel_size: int = 3
    dilation: int = 1
    filters: int = 32  # "number of kernels" in Table 1; also the d_k of the 1/sqrt(d_k) scaling


def _table1_heads() -> List[HeadGroup]:
    # Table 1: 8 heads each of (kernel, dilation) = (1,1), (3,1), (3,2), (3,3), (3,4), 32 kernels.
    return [HeadGroup(8, k, d, 32) for k, d in [(1, 1), (3, 1), (3, 2), (3, 3), (3, 4)]]


@dataclass
class DataConfig:
    # The feature dim the model expects (d_f = d_q = d_r = 500 after PCA, Implementation Details).
    # The data decides: null = whatever the data folder holds; a number is checked against the
    # data's manifest (see vreloc_tf.data.artifacts.Dataset.check_feature_dim).
    feature_dim: Optional[int] = contract.FEATURE_DIM
    # Reference window of `vreloc locate` on long videos (the splits cut windows to 300 features).
    max_window: int = contract.MAX_WINDOW
    crop_probability: float = 0.9  # reference cropped around its ground truth (Feng et al.'s code)
    weak_query_fraction: float = 0.5  # share of train source videos that give weak queries (Dataset section)
    # ours, not the paper (0 = off, the paper): share of training pairs whose reference shows another class
    # and whose target is no action (vreloc_tf.data.input_pipeline, "negative pairs")
    negative_pair_rate: float = 0.0
    # ours, not the paper (0 = off, the paper): share of matching training pairs whose reference also holds
    # another class's action, inserted outside its own (vreloc_tf.data.input_pipeline, "distractor splices")
    distractor_rate: float = 0.0


@dataclass
class CGBMConfig:
    """Feng et al.'s CGBM (``model.architecture: cgbm``, vreloc_tf.model.cgbm). The defaults are the flags and
    constants of their code (fengyang0317/video_reloc); configs/cgbm.yaml names the line of each."""

    memory_dim: int = 128  # mem_dim: the video LSTM shared by query and reference (match.py flag mem_dim)
    attention_dim: int = 128  # att_dim: attention, matching LSTMs and localization LSTM (match.py flag att_dim)
    bilinear_factors: int = 8  # k of the factorized bilinear matching (match_cell_wrapper.py, bilinear(k=8))
    dropout: float = 0.4  # 1 - keep_prob on the video LSTM outputs (match.py flag keep_prob = 0.6)
    matching_dropout: float = 0.2  # 1 - (keep_prob + 0.2) on the matching outputs (match.py)


@dataclass
class ModelConfig:
    # multiscale_attention = the paper's model (vreloc_tf.model.functional); cgbm = Feng et al.'s CGBM, the paper's
    # Table 4 competitor (vreloc_tf.model.cgbm; configs/cgbm.yaml). Both keep the same inputs and outputs.
    architecture: Literal["multiscale_attention", "cgbm"] = "multiscale_attention"
    hidden_dim: int = 128  # d_h (Implementation Details)
    lstm_dim: int = 128  # d_l (Implementation Details)
    encoder_kernel_size: int = 3  # Eq. 7 1-D conv; the paper gives no size (our choice)
    multiscale: bool = True  # Table 2 ablation switch: False = every head kernel 3, dilation 1
    self_attention: bool = True  # Table 2 ablation switch: False = no H^satt input
    self_attention_heads: int = 2  # h = 2 (Implementation Details)
    self_attention_key_dim: int = 32  # d_k = 32 (Implementation Details)
    heads: List[HeadGroup] = field(default_factory=_table1_heads)  # k = 40 heads (Table 1)
    dropout_before_bilstm: float = 0.4  # (Implementation Details)
    dropout_after_bilstm: float = 0.2  # (Implementation Details)
    # Ours, not in the paper (off in the paper's configs): parameter-free similarity features
    # (vreloc_tf.model.layers.SimilarityFeatures) next to H^matt and H^satt; docs/QUALITY_HISTORY.md has the ablation.
    similarity_features: bool = False
    similarity_temperature: float = 0.2  # tau of their soft maximum over query frames (ours)
    cgbm: CGBMConfig = field(default_factory=CGBMConfig)  # read only when architecture = cgbm


@dataclass
class LossConfig:
    # Weak supervision: "paper" = the co-attention loss with masks (Eqs. 13-18, Implementation
    # Details), kept exact so Table 2's row stays reproducible; "ours" (the project's default) =
    # Eq. 19 on the label-free teacher's pseudo segments (vreloc_tf.model.teacher; docs/QUALITY_HISTORY.md).
    weak_variant: Literal["ours", "paper"] = "ours"
    teacher_temperature: float = 0.2  # ours: soft maximum over query frames (vreloc_tf.model.teacher)
    teacher_threshold_std: float = 0.5  # ours: a step is "action" above mean + 0.5 std of its score
    # ours: once the student overtakes its teacher it starts to fit the teacher's errors (the drift
    # measured on `demo`, docs/QUALITY_HISTORY.md). Each batch's highest-loss pairs, this fraction of them, are
    # left out (the small-loss rule of learning with noisy labels, co-teaching, Han et al. 2018),
    # ramped up linearly from 0 at step 0 over `teacher_truncation_ramp_steps`; 0 = off.
    teacher_truncation: float = 0.0
    teacher_truncation_ramp_steps: int = 200
    # ours: the default remedy for that drift (docs/QUALITY_HISTORY.md has the ablation). A running
    # average of the student's weights (momentum `self_target_momentum`; a mean teacher, Tarvainen &
    # Valpola 2017; vreloc_tf.model.student_average) decodes a second segment per pair (Eq. 20), and the
    # target is the teacher's segment with weight 1 - w and the average's with w: w ramps linearly from
    # 0 at step `self_target_start` to `self_target_weight` at `self_target_start + self_target_ramp_steps`.
    # 0 = off (the teacher alone).
    self_target_weight: float = 0.8
    self_target_momentum: float = 0.99
    self_target_start: int = 100
    self_target_ramp_steps: int = 200
    # ours, with a self target: the saved model (validation, the selection criterion, model.keras,
    # checkpoints/) holds the running average's weights instead of the student's -- the mean-teacher
    # practice (Tarvainen & Valpola 2017): the average moves less from step to step than the student
    # it follows. false = the student's weights, as before (docs/QUALITY_HISTORY.md has the comparison).
    self_target_as_model: bool = True
    alpha: float = 0.3  # co-attention balance, best in Table 3
    boundary_weight: float = 10.0  # w_i at start/end steps (Eq. 19, following Feng et al.)
    # Weak "paper" only: masks on p3/p4 after 100 iterations (Implementation Details; the paper
    # describes them for the weak setting, so full supervision trains without them).
    coattention_mask_after_steps: int = 100
    # Full supervision: Eq. 19 ("weighted_ce"), Eq. 19 + loss^c (Table 4's best row, the default), or
    # "feng": Feng et al.'s Eq. 10 as their code computes it (Eq. 19's labels and weights, normalised by
    # all valid steps of the batch instead of per example; vreloc_tf.model.losses.feng_cross_entropy).
    full_losses: Literal["weighted_ce", "weighted_ce+coattention", "feng"] = "weighted_ce+coattention"
    coattention_weight: float = 1.0  # weight of loss^c when added to loss^w (Table 4 uses a plain sum)


@dataclass
class TrainConfig:
    batch_size: int = 128  # global batch (Implementation Details)
    learning_rate: float = 1e-3  # initial Adam rate (Implementation Details)
    lr_decay_factor: float = 0.1  # divided by 10 ... (Implementation Details)
    lr_decay_steps: int = 200  # ... every 200 iterations (Implementation Details)
    steps: int = 600  # total iterations; not given in the paper (three decays, our choice)
    clip_norm: float = 5.0  # global-norm clipping, as in Feng et al.'s code
    checkpoint_every: int = 100
    validate_every: int = 100
    validation_pairs: int = 512  # val pairs scored at each validation (0 = all)
    # Which checkpoint becomes model.keras: "last", "val_map" (labelled val mAP@1) or "label_free"
    # (the training objective on val pairs, no reference labels read). null = val_map for full
    # supervision, label_free for weak: a weak model is never picked with labels. (ours)
    selection: Optional[Literal["last", "val_map", "label_free"]] = None
    deterministic: bool = True  # TensorFlow op determinism: the same run gives the same weights (ours)


@dataclass
class DecodeConfig:
    # 1,024 frames / 16 frames per feature = 64 (Implementation Details)
    full_max_length: Optional[int] = contract.FULL_DECODE_MAX_LENGTH
    weak_max_length: Optional[int] = None  # not limited for weak supervision (Implementation Details)
    # The decoding rule (vreloc_tf.model.decoding): null = the training mode's (Config.decode_rule), or one of
    # full (Eq. 20), weak (the threshold rule), feng (Feng et al.'s decoding loop; limit full_max_length).
    rule: Optional[Literal["full", "weak", "feng"]] = None

    def max_length(self, mode: str) -> Optional[int]:
        """The segment-length limit of decoding rule ``mode`` ('full' | 'weak' | 'feng'); None = unlimited.

        Feng et al.'s loop has the same 64-step (1,024-frame) limit as Eq. 20, so it shares full_max_length."""
        if mode not in contract.DECODE_RULES:
            raise ConfigError(f"decode mode must be one of {', '.join(contract.DECODE_RULES)}, got {mode!r}")
        return self.weak_max_length if mode == "weak" else self.full_max_length


@dataclass
class Config:
    supervision: Literal["full", "weak"] = "full"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    # -- derived views -------------------------------------------------
    @property
    def decode_rule(self) -> str:
        """The decoding rule of this run: ``decode.rule`` if set, else Eq. 20 ('full') wherever p1/p2 are
        trained -- full supervision, and weak "ours", whose pseudo segments train them -- else the weak
        threshold rule."""
        if self.decode.rule is not None:
            return self.decode.rule
        if self.supervision == "weak" and self.loss.weak_variant == "paper":
            return "weak"
        return "full"

    @property
    def decode_max_length(self) -> Optional[int]:
        """The segment-length limit of this run's decoding rule."""
        return self.decode.max_length(self.decode_rule)

    @property
    def selection_rule(self) -> str:
        """The resolved checkpoint-selection rule (see TrainConfig.selection)."""
        if self.train.selection is not None:
            return self.train.selection
        return "val_map" if self.supervision == "full" else "label_free"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A stable hash of every value, for manifests and stage caching."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# Feng et al.'s method on top of any config: their model, their loss and their decoding (the sizes
# come from that config's model.cgbm; configs/cgbm.yaml has all of Feng's settings). The "CGBM" row
# of `vreloc pipeline run --models ...,cgbm`, `vreloc quality --methods cgbm` and `vreloc bench`.
CGBM_METHOD = ("model.architecture=cgbm", "loss.full_losses=feng", "decode.rule=feng")


# ---------------------------------------------------------------------------
# Typed conversion of plain data into the dataclass tree
# ---------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{where}' must be a mapping ({tp.__name__}), got {type(value).__name__} {value!r}")
        return _build(tp, value, where, source)
    if origin is typing.Union:
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, where, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: key '{where}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{source}: key '{where}' must be one of {_type_name(tp)}, got {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{where}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{source}: key '{where}' must be null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a type the loader was not taught
        raise ConfigError(f"{source}: key '{where}' has unsupported type {tp!r}")
    raise ConfigError(f"{source}: key '{where}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{where}' {_unknown_key_hint(key, names, prefix)}")
        kwargs[key] = _convert(value, hints[key], where, source)
    return cls(**kwargs)


# ---------------------------------------------------------------------------
# Legal ranges: a type-correct value can still be impossible (a batch of 0, -5 steps, no heads)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Range:
    """A closed or open interval of legal numbers (``None`` = unbounded on that side)."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # True: ``low`` itself is not legal
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is None and self.high is None:
            return "a finite number"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {num(self.high)}"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {num(self.low)}"
        return f"in {'(' if self.low_open else '['}{num(self.low)}, {num(self.high)}{')' if self.high_open else ']'}"


AT_LEAST_1 = Range(1)  # sizes, counts of steps and heads
AT_LEAST_0 = Range(0)  # step counts where 0 means "at once" or "off"
POSITIVE = Range(0, low_open=True)  # rates, temperatures, norms
FRACTION = Range(0, 1)  # probabilities and weights, both ends legal
DROPOUT = Range(0, 1, high_open=True)  # dropout 1 drops everything; momentum 1 never moves
OPEN_FRACTION = Range(0, 1, low_open=True, high_open=True)
ANY_FINITE = Range()
NON_EMPTY = "a non-empty list"

# The legal range of every number and list of the tree, by section class and field name.
# tests/test_run_guards.py checks that every int, float and list field has an entry, so a
# new field cannot skip validation.
RANGES = {
    "Config": {"seed": Range(0, 2 ** 32 - 1)},  # NumPy's seed range (keras.utils.set_random_seed)
    "DataConfig": {"feature_dim": AT_LEAST_1, "max_window": AT_LEAST_1, "crop_probability": FRACTION,
                   "weak_query_fraction": OPEN_FRACTION,  # both parts of the train split must be non-empty
                   "negative_pair_rate": DROPOUT,  # rate 1 would leave no matching pair to learn from
                   "distractor_rate": FRACTION},
    "HeadGroup": {"heads": AT_LEAST_1, "kernel_size": AT_LEAST_1, "dilation": AT_LEAST_1, "filters": AT_LEAST_1},
    "CGBMConfig": {"memory_dim": AT_LEAST_1, "attention_dim": AT_LEAST_1, "bilinear_factors": AT_LEAST_1,
                   "dropout": DROPOUT, "matching_dropout": DROPOUT},
    "ModelConfig": {"hidden_dim": AT_LEAST_1, "lstm_dim": AT_LEAST_1, "encoder_kernel_size": AT_LEAST_1,
                    "self_attention_heads": AT_LEAST_1, "self_attention_key_dim": AT_LEAST_1, "heads": NON_EMPTY,
                    "dropout_before_bilstm": DROPOUT, "dropout_after_bilstm": DROPOUT,
                    "similarity_temperature": POSITIVE},
    "LossConfig": {"teacher_temperature": POSITIVE, "teacher_threshold_std": ANY_FINITE,
                   "teacher_truncation": DROPOUT, "teacher_truncation_ramp_steps": AT_LEAST_0,
                   "self_target_weight": FRACTION, "self_target_momentum": DROPOUT,
                   "self_target_start": AT_LEAST_0, "self_target_ramp_steps": AT_LEAST_0,
                   "alpha": FRACTION, "boundary_weight": POSITIVE, "coattention_mask_after_steps": AT_LEAST_0,
                   "coattention_weight": AT_LEAST_0},
    "TrainConfig": {"batch_size": AT_LEAST_1, "learning_rate": POSITIVE,
                    "lr_decay_factor": Range(0, 1, low_open=True),  # 1 = constant rate
                    "lr_decay_steps": AT_LEAST_1, "steps": AT_LEAST_1, "clip_norm": POSITIVE,
                    "checkpoint_every": AT_LEAST_1, "validate_every": AT_LEAST_1,
                    "validation_pairs": AT_LEAST_0},  # 0 = every val pair
    "DecodeConfig": {"full_max_length": AT_LEAST_1, "weak_max_length": AT_LEAST_1},  # null = unlimited
}


def _range_problems(node: Any, prefix: str) -> List[tuple]:
    """(dotted key, value, legal range) of every value of ``node``'s subtree outside its range."""
    problems = []
    rules = RANGES.get(type(node).__name__, {})
    for f in dataclasses.fields(node):
        key, value = f"{prefix}.{f.name}" if prefix else f.name, getattr(node, f.name)
        rule = rules.get(f.name)
        if dataclasses.is_dataclass(value):
            problems += _range_problems(value, key)
            continue
        if isinstance(value, list):
            if rule == NON_EMPTY and not value:
                problems.append((key, value, NON_EMPTY))
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    problems += _range_problems(item, f"{key}[{i}]")
            continue
        if isinstance(rule, Range) and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value not in rule:
            problems.append((key, value, rule))
    return problems


def validate(cfg: "Config", source: str = "<config>", overridden: Sequence[str] = ()) -> "Config":
    """``cfg`` itself if every value is in its legal range, else a ConfigError naming each key at
    fault, its value and its range. ``source`` is blamed, or ``--set`` for the keys (and their
    sub-keys) named in ``overridden``.

    Why here: training writes the config into its run folder, and a resumed run must keep it; an
    impossible value found only inside TensorFlow is an internal error and leaves that file behind,
    so the corrected rerun is refused as "a different config". Checked at load time, nothing is
    written until the config is known to be legal.
    """
    def blamed(key: str) -> str:
        hit = any(key == o or key.startswith((o + ".", o + "[")) for o in overridden)
        return "--set" if hit else source

    problems = [f"{blamed(key)}: key '{key}' must be {rule}, got {value!r}"
                for key, value, rule in _range_problems(cfg, "")]
    if cfg.train.selection == "label_free" and cfg.supervision != "weak":
        problems.append(f"{blamed('train.selection')}: key 'train.selection' is label_free, which needs "
                        f"supervision=weak (full supervision has labels: use val_map or last)")
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(data: dict, source: str = "<dict>", check: bool = True) -> Config:
    """Build a Config from a (possibly partial) mapping; missing keys keep their defaults.

    ``check``: also :func:`validate` the ranges (off only for a file whose overrides are still to come).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    cfg = _build(Config, data, "", source)
    return validate(cfg, source) if check else cfg


def apply_overrides(cfg: Config, overrides: Sequence[str], source: str = "<config>") -> Config:
    """Apply ``section.key=value`` overrides; values are parsed as YAML scalars. The result is
    validated; a value out of range is blamed on ``--set`` if an override set it, else on ``source``."""
    data = cfg.to_dict()
    overridden = []
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node, cls = data, Config
        for depth, key in enumerate(keys):
            names = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
            if key not in names:
                hint = _unknown_key_hint(key, names, ".".join(keys[:depth]))
                raise ConfigError(f"--set {item!r}: unknown key '{'.'.join(keys[:depth + 1])}' {hint}")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                cls = typing.get_type_hints(cls)[key]
                if not dataclasses.is_dataclass(cls):
                    raise ConfigError(f"--set {item!r}: '{'.'.join(keys[:depth + 1])}' is not a section")
                node = node[key]
        overridden.append(dotted.strip())
    return validate(from_dict(data, source="--set", check=False), source, overridden)


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (a name like ``tiny`` resolves to ``configs/tiny.yaml``) and apply overrides."""
    if path is None:
        cfg = Config()
    else:
        resolved = resolve_config_path(path)
        with open(resolved) as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{resolved}: not valid YAML: {exc}") from exc
        cfg = from_dict(data, source=resolved, check=not overrides)  # an override may correct the file
    return apply_overrides(cfg, overrides, source=resolved if path is not None else "<defaults>") if overrides else cfg


def shipped_configs() -> List[str]:
    """The names of the configs that ship with the package (``tiny``, ``paper_full``, ...)."""
    if not os.path.isdir(CONFIG_DIR):
        return []
    return sorted(name[:-len(".yaml")] for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml"))


def resolve_config_path(path: str) -> str:
    """The config file ``path`` names, from any folder: a file that exists there always wins; else
    ``tiny``, ``tiny.yaml`` and ``configs/tiny.yaml`` name the shipped one (CONFIG_DIR)."""
    if os.path.isfile(path):
        return path
    folder, name = os.path.split(os.path.normpath(path))
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    if folder in ("", "configs") and not os.path.isdir(path):
        candidate = os.path.join(CONFIG_DIR, f"{stem}.yaml")
        if os.path.isfile(candidate):
            return candidate
    names = shipped_configs()
    match = closest(stem, names, cutoff=0.5)
    shipped = f"shipped configs: {', '.join(names)}" if names else f"no shipped configs in {CONFIG_DIR}"
    hint = f"did you mean {match}? {shipped}" if match else shipped
    if os.path.isdir(path):
        raise ConfigError(f"config {path!r} is a folder, not a YAML file ({hint})")
    raise ConfigError(f"config file not found: {path!r} ({hint})")


def save_config(cfg: Config, path: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(cfg.to_yaml())
