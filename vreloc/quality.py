"""`vreloc quality`: every row of docs/QUALITY.md, remade by one command.

Why a command of its own: a quality claim is only as good as the data it was measured on and the
care given to the rivals. One command trains, evaluates and writes the whole page, the same way
each time, and keeps every run folder so that a second call resumes instead of retraining:

* **Two draws.** Design choices were made, and rivals are tuned, on data seed
  ``TUNING_DATA_SEED`` (the tuning draw, its val pairs only). The published tables come from
  ``REPORTING_DATA_SEED``, chosen once and never tuned on.
* **Every family** (``vreloc synth --family``) at the benchmark's real split geometry (its
  split files and video lengths, 978 test pairs; ``--geometry`` names one of synth's own for a
  quick try): one data folder per draw and one fixed test pair list.
* **Fair rivals.** Every tuned method (ours full and weak, the paper's weak objective, Feng et
  al.'s CGBM) gets the same grid, ``LEARNING_RATES``, with its checkpoint (= its number of steps)
  picked by its own selection rule on the tuning draw's val pairs (labelled val mAP for full
  supervision, the label-free objective for weak: labels never pick a weak model).
* **Controls as rows**: the training-free baselines (random, prior, Feng's frame-level, the
  stronger window matcher, the query-free rule) and each of our models scored with swapped
  queries (``vreloc evaluate --control swapped-query``).
* **Honest intervals** (vreloc_tf.evaluation.bootstrap): classes and seeds resampled, and paired intervals
  for the difference between ours and each rival on the same test pairs.
* **Provenance per row**: the machine, the commit and the config digest each run was trained with.

The study makes its data and trains its runs with the pipeline's own jobs (vreloc/orchestrator.py:
``featuregen`` with a :class:`FeatureSource` of the study's draw, family and geometry, and
``train_model``); what is its own is the draws, the fixed test pair lists, tuning, scoring and the page.

Layout under ``--out``: ``draw-<seed>/data/<family>/``, ``draw-<seed>/runs/<family>/<method>/
lr-<rate>/seed-<s>/``, ``draw-<seed>/results/<family>/*.json``, ``tuning/<family>/<method>.json``.
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vreloc.orchestrator import BASELINES, BENCHMARK_GEOMETRY, FeatureSource, featuregen, train_model
from vreloc_tf.data.schema import MANIFEST_NAME
from vreloc_tf.evaluation.baselines import run_baseline
from vreloc_tf.evaluation.bootstrap import cluster_bootstrap, paired_difference
from vreloc_tf.config import CGBM_METHOD, load_config
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.data.entry_index import load_index
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import evaluate_run
from vreloc_tf.evaluation.separation import score_auc
from vreloc_tf.files import read_json, write_json_atomic
from vreloc_tf.evaluation.metrics import THRESHOLD_KEYS
from vreloc_tf.data.pairs import load_pairs, make_pair_file, save_pairs

log = logging.getLogger("vreloc.quality")

BENCHMARK = BENCHMARK_GEOMETRY  # as a geometry: the benchmark's split files; as a family (older studies): demo on them
FAMILIES = ("demo", "substates", "periodic", "shots", "distractor")
TUNING_DATA_SEED = 0  # every design choice of docs/QUALITY_HISTORY.md was made on this draw
REPORTING_DATA_SEED = 20261207  # chosen once on 2026-12-07, before any run on it; nobody tunes on it
TRAINING_FREE = BASELINES  # the pipeline's evaluator scores the same training-free rows
LEARNING_RATES = (0.001, 0.003)  # the tuning grid, the same for every tuned method: the native rates of
# every method (Feng et al.'s and the paper's 0.001, configs/tiny.yaml's 0.003)
BOOTSTRAP_SAMPLES = 2000
RECORDS = "tfrecords"  # a family's data folder: raw/ (synth's output) and tfrecords/ (the ingested data)
SWAPPED = "+swapped"  # suffix of a control row: the method's runs scored with swapped queries


@dataclass(frozen=True)
class Method:
    """A trained row: supervision, config, overrides, whether it is tuned, and how it is scored."""

    name: str
    supervision: str
    overrides: Tuple[str, ...] = ()
    config: Optional[str] = None  # None = the study's config (tiny)
    tuned: bool = True  # gets the learning-rate grid on the tuning draw
    max_seeds: Optional[int] = None  # None = every study seed
    decode: Optional[str] = None  # None = the run's own rule
    checkpoint: Optional[str] = None  # None = model.keras (the selection rule's pick); "last"
    trains_as: Optional[str] = None  # score another method's runs (evaluation-only ablations)
    controlled: bool = False  # also scored with swapped queries (a control row)
    about: str = ""


# ours weak trains with negative pairs at this rate: chosen on the tuning draw's val pairs, 5 families x
# rates 0 / 0.25 / 0.5, training seeds 0-1 (docs/QUALITY_HISTORY.md, "Negative pairs"); full trains without
WEAK_NEGATIVES = ("data.negative_pair_rate=0.25",)

METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("full", "full", controlled=True,
           about="ours full: Eq. 19 + loss^c, similarity features (configs/tiny.yaml)"),
    Method("weak-ours", "weak", WEAK_NEGATIVES, controlled=True,
           about="ours weak: Eq. 19 on the label-free teacher's segments blended with those of the student's "
                 "running average (the saved model), a quarter of the pairs negative (another class, no "
                 "action), Eq. 20 decoding (configs/tiny.yaml)"),
    Method("weak-paper", "weak", ("loss.weak_variant=paper",),
           about="the paper's weak objective: co-attention loss with masks, threshold decoding"),
    Method("cgbm", "full", CGBM_METHOD,
           about="Feng et al.'s CGBM (the paper's Table 4 competitor): their model at the config's model.cgbm "
                 "sizes, their loss (Eq. 10) and decoding, full supervision"),
    Method("paper-size-full", "full", ("data.feature_dim=null",), config="full", max_seeds=1,
           controlled=True, about="the recommended configs/full.yaml (the paper's size and schedule, our "
                                  "similarity features), tuned like the others, one seed"),
    Method("paper-size-weak", "weak", ("data.feature_dim=null",), config="weak", max_seeds=1,
           controlled=True, about="the recommended configs/weak.yaml (the paper's size and schedule, our "
                                  "similarity features, weak objective and negative pairs), tuned like the "
                                  "others, one seed"),
    # ablations: each change of "ours" removed on its own (not tuned: the tuned rate of their base)
    Method("full-no-similarity", "full", ("model.similarity_features=false",), tuned=False,
           about="full without the similarity features (the paper's model)"),
    Method("weak-ours-no-similarity", "weak", (*WEAK_NEGATIVES, "model.similarity_features=false"), tuned=False,
           about="weak ours without the similarity features (the paper's model)"),
    Method("weak-ours-no-self-target", "weak", (*WEAK_NEGATIVES, "loss.self_target_weight=0"), tuned=False,
           about="weak ours on the teacher's segments alone, without the student's running average"),
    Method("weak-ours-no-negatives", "weak", tuned=False,
           about="weak ours trained on matching pairs only (no negative pairs)"),
    Method("weak-ours-threshold-decode", "weak", decode="weak", trains_as="weak-ours",
           about="weak ours scored with the paper's weak threshold rule instead of Eq. 20"),
    Method("weak-ours-last", "weak", checkpoint="last", trains_as="weak-ours",
           about="weak ours, the last checkpoint instead of the label-free pick"),
)}
MAIN_METHODS = ("full", "weak-ours", "weak-paper", "cgbm", "paper-size-full", "paper-size-weak")
RIVALS = {"full": "cgbm", "weak-ours": "weak-paper", "paper-size-full": "cgbm", "paper-size-weak": "weak-paper"}
PAIRS = (("full", "weak-ours"), ("paper-size-full", "paper-size-weak"))  # (full, weak) of one model size
TIED_RATE = {"full-no-similarity": "full", "weak-ours-no-similarity": "weak-ours",
             "weak-ours-no-self-target": "weak-ours", "weak-ours-no-negatives": "weak-ours"}  # ablations train at their base's tuned rate


def provenance() -> dict:
    """Where a run was trained: machine, commit (``+dirty`` with uncommitted tracked changes)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+dirty"
    cpu = platform.processor() or platform.machine()
    return {"machine": f"{platform.node()} ({os.cpu_count()} cores, {cpu})", "commit": commit}


@dataclass
class Study:
    out: str
    families: Sequence[str]
    seeds: Sequence[int]
    methods: Sequence[str] = MAIN_METHODS
    config: str = "tiny"
    overrides: Sequence[str] = ()
    dim: int = 32
    geometry: str = BENCHMARK  # the benchmark's real split geometry; or a key of pipeline.synth.GEOMETRIES
    benchmark_splits: Optional[str] = None  # the folder with length.json and the split files
    finished_only: bool = False  # report what earlier runs finished; train nothing
    tune: bool = True  # False: every method at its config's rate (the page says "untuned")
    learning_rates: Sequence[float] = LEARNING_RATES
    reporting_seed: int = REPORTING_DATA_SEED
    bootstrap_samples: int = BOOTSTRAP_SAMPLES
    timings: Dict[str, float] = field(default_factory=dict)
    unfinished: Dict[str, List[str]] = field(default_factory=dict)  # --finished-only: rows left out, per family

    # -- data ------------------------------------------------------------------------
    def draw_dir(self, draw: int) -> str:
        return os.path.join(self.out, f"draw-{draw}")

    def data_dir(self, draw: int, family: str) -> str:
        return os.path.join(self.draw_dir(draw), "data", family)

    def pairs_file(self, draw: int, family: str) -> str:
        return os.path.join(self.data_dir(draw, family), "pairs_test.json")

    def feature_source(self, draw: int, family: str) -> FeatureSource:
        """``family``'s synthetic data on data seed ``draw`` at the study's geometry and dim."""
        benchmark = BENCHMARK in (family, self.geometry)
        return FeatureSource(family="demo" if family == BENCHMARK else family,
                             geometry=BENCHMARK if benchmark else self.geometry, seed=draw, dim=self.dim,
                             splits=(self.benchmark_splits or None) if benchmark else None)

    def prepare_data(self, draw: int, family: str) -> str:
        """The pipeline's feature stage (synth -> ingest) of ``family`` on data seed ``draw`` in
        ``data_dir/{raw,tfrecords}``, and its test pair list (each reused when present)."""
        data = self.data_dir(draw, family)
        records = os.path.join(data, RECORDS)
        if not os.path.exists(os.path.join(records, MANIFEST_NAME)):
            featuregen(data, None, self.feature_source(draw, family), data_name=RECORDS)
        if not os.path.exists(self.pairs_file(draw, family)):
            save_pairs(make_pair_file(records, "test", draw), self.pairs_file(draw, family))
        return records

    def pair_classes(self, draw: int, family: str) -> np.ndarray:
        """The class of every test pair's reference, in pair-list order (the bootstrap's clusters)."""
        records = os.path.join(self.data_dir(draw, family), RECORDS)
        index = load_index(records, "test")
        pairs = load_pairs(self.pairs_file(draw, family), "test")
        return index.label[index.position_of([p["reference"] for p in pairs])].astype(np.int64)

    # -- runs ------------------------------------------------------------------------
    def run_dir(self, draw: int, family: str, method: Method, rate: float, seed: int) -> str:
        return os.path.join(self.draw_dir(draw), "runs", family, method.trains_as or method.name,
                            f"lr-{rate:g}", f"seed-{seed}")

    def base_config(self, method: Method, seed: int, rate: Optional[float] = None):
        trained = METHODS[method.trains_as] if method.trains_as else method
        extra = [f"train.learning_rate={rate!r}"] if rate is not None else []
        return load_config(trained.config or self.config,
                           [f"supervision={trained.supervision}", f"seed={seed}", *trained.overrides,
                            *self.overrides, *extra])

    def train_run(self, draw: int, family: str, method: Method, rate: float, seed: int, data: str) -> str:
        run = self.run_dir(draw, family, method, rate, seed)
        if not os.path.exists(os.path.join(run, "run.json")):
            if self.finished_only:
                raise FileNotFoundError(run)
            cfg = self.base_config(method, seed, rate)
            where = provenance()  # before training: the code the run starts with
            t0 = time.time()
            # Keras's progress (a bar at a terminal, a line per validation in a log): a run takes minutes
            train_model(cfg, Dataset.open(data), run, overwrite=True)
            self.timings[f"draw-{draw}/{family}/{method.name}/lr-{rate:g}/{seed}"] = time.time() - t0
            write_json_atomic(os.path.join(run, "provenance.json"), where)
        return run

    # -- tuning ------------------------------------------------------------------------
    def tuning_path(self, family: str, name: str) -> str:
        return os.path.join(self.out, "tuning", family, f"{name}.json")

    def rate(self, family: str, method: Method, progress: Callable[[str], None]) -> Tuple[float, bool]:
        """(learning rate, tuned?) of ``method`` on ``family``: the grid's pick on the tuning draw."""
        name = method.trains_as or method.name
        base = METHODS[name]
        if name in TIED_RATE:
            return self.rate(family, METHODS[TIED_RATE[name]], progress)
        if not (self.tune and base.tuned):
            return float(self.base_config(base, 0).train.learning_rate), False
        path = self.tuning_path(family, name)
        if os.path.exists(path):
            return float(read_json(path, "tuning")["chosen"]), True
        if self.finished_only:
            raise FileNotFoundError(path)  # tuning not finished: the row is left out
        data = self.prepare_data(TUNING_DATA_SEED, family)
        trials = []
        for rate in self.learning_rates:
            progress(f"[quality] {family}: tuning {name}, learning rate {rate:g} (draw {TUNING_DATA_SEED}, val pairs)")
            trials.append(tuning_score(self.train_run(TUNING_DATA_SEED, family, base, rate, 0, data), rate))
        best = pick_trial(trials)
        write_json_atomic(path, {"method": name, "family": family, "draw": TUNING_DATA_SEED, "grid": trials,
                                 "chosen": best["learning_rate"], "criterion": best["criterion"]})
        return float(best["learning_rate"]), True

    def tuned_names(self) -> List[str]:
        """The methods whose tuning this study's rows use (an ablation's is its base's), in METHODS order:
        the page lists those, not every tuning the --out folder happens to hold."""
        used = set()
        for name in self.methods:
            base = METHODS[name].trains_as or name
            used.add(TIED_RATE.get(base, base))
        return [n for n in METHODS if n in used]

    # -- scoring -----------------------------------------------------------------------
    def result_path(self, draw: int, family: str, name: str, rate: Optional[float] = None,
                    seed: Optional[int] = None) -> str:
        leaf = name if rate is None else f"{name}-lr-{rate:g}-seed-{seed}"
        return os.path.join(self.draw_dir(draw), "results", family, f"{leaf}.json")

    def score(self, family: str, method: Method, rate: float, tuned: bool, seed: int, swapped: bool) -> dict:
        draw = self.reporting_seed
        name = method.name + (SWAPPED if swapped else "")
        path = self.result_path(draw, family, name, rate, seed)
        if os.path.exists(path):
            # the same training either way; whether its rate was the grid's pick is this study's to say
            # (a row kept from an untuned study becomes tuned when the grid picks the same rate)
            return dict(read_json(path, "result"), tuned=tuned)
        data = self.prepare_data(draw, family)
        run = self.train_run(draw, family, method, rate, seed, data)
        result = evaluate_run(Run.open(run), Dataset.open(data), "test", self.pairs_file(draw, family), decode=method.decode,
                              method=name, seed=draw, checkpoint=method.checkpoint,
                              control="swapped-query" if swapped else None)
        info = read_json(os.path.join(run, "run.json"), "run")
        prov_path = os.path.join(run, "provenance.json")
        result.update({"seed": seed, "learning_rate": rate, "tuned": tuned,
                       "provenance": {**(read_json(prov_path, "provenance") if os.path.exists(prov_path)
                                         else {"machine": "unknown", "commit": "unknown"}),
                                      "config_digest": info.get("extra", {}).get("config_digest"),
                                      "train_seconds": info.get("train_seconds")}})
        write_json_atomic(path, result)
        return result

    def baselines(self, family: str) -> Dict[str, dict]:
        draw = self.reporting_seed
        out = {}
        for name in TRAINING_FREE:
            path = self.result_path(draw, family, name)
            if not os.path.exists(path):
                if self.finished_only:
                    continue
                data = self.prepare_data(draw, family)
                result = run_baseline(name, Dataset.open(data), "test", self.pairs_file(draw, family), draw, verbose=False)
                write_json_atomic(path, dict(result, provenance=provenance()))
            out[name] = read_json(path, "result")
        return out

    def family_rows(self, family: str, progress: Callable[[str], None]) -> Dict[str, List[dict]]:
        """Every row's results (one per seed) on the reporting draw of ``family``."""
        rows = {name: [r] for name, r in self.baselines(family).items()}
        for name in self.methods:
            method = METHODS[name]
            seeds = list(self.seeds)[: method.max_seeds] if method.max_seeds else list(self.seeds)
            try:
                rate, tuned = self.rate(family, method, progress)
            except FileNotFoundError:  # --finished-only: tuning not finished
                self.unfinished.setdefault(family, []).append(f"{name} (tuning)")
                continue
            for swapped in (False, True) if method.controlled else (False,):
                row = method.name + (SWAPPED if swapped else "")
                for seed in seeds:
                    if self.finished_only and not os.path.exists(
                            self.result_path(self.reporting_seed, family, row, rate, seed)):
                        self.unfinished.setdefault(family, []).append(f"{row} seed {seed}")
                        continue
                    progress(f"[quality] {family}: {row}, seed {seed} (learning rate {rate:g})")
                    rows.setdefault(row, []).append(self.score(family, method, rate, tuned, seed, swapped))
        return rows

    def run(self, progress=print) -> dict:
        check_methods(self.methods)
        summary = {}
        for family in self.families:
            draw = self.reporting_seed
            if self.finished_only and not os.path.exists(self.pairs_file(draw, family)):
                progress(f"[quality] {family}: nothing finished, left out")
                self.unfinished[family] = ["every row"]
                continue
            rows = self.family_rows(family, progress)
            classes = self.pair_classes(draw, family)
            summary[family] = summarize_family(rows, classes, self.bootstrap_samples)
            summary[family]["tuning"] = {n: read_json(self.tuning_path(family, n), "tuning")
                                         for n in self.tuned_names() if os.path.exists(self.tuning_path(family, n))}
            write_json_atomic(os.path.join(self.draw_dir(draw), "results", family, "summary.json"), summary[family])
            progress(format_family(family, summary[family]))
        return summary


def check_methods(names: Sequence[str]) -> None:
    for name in names:
        if name not in METHODS:
            raise InputError(f"--methods: unknown method {name!r}; known: {', '.join(METHODS)}")


# -- tuning --------------------------------------------------------------------------------

def tuning_score(run_dir: str, rate: float) -> dict:
    """The run's own selection score at the checkpoint it picked (val pairs of the tuning draw):
    labelled val mAP@1 (higher is better) for full supervision, the label-free objective (lower is
    better) for weak supervision."""
    info = read_json(os.path.join(run_dir, "run.json"), "run")
    history = info.get("extra", {}).get("validation_history", [])
    at = [h for h in history if h.get("step") == info.get("best_step")]
    if not at:
        raise RuntimeError(f"{run_dir}: run.json has no validation at its selected step {info.get('best_step')}")
    criterion = "val_map" if info["selection"] == "val_map" else "label_free"
    value = float(at[-1]["average"] if criterion == "val_map" else at[-1]["objective"])
    return {"learning_rate": rate, "criterion": criterion, "value": value, "step": int(info["best_step"])}


def pick_trial(trials: List[dict]) -> dict:
    """The best trial (val mAP: highest; label-free objective: lowest); ties: the smaller rate."""
    sign = -1.0 if trials[0]["criterion"] == "val_map" else 1.0
    return min(trials, key=lambda t: (sign * t["value"], t["learning_rate"]))


# -- aggregation ---------------------------------------------------------------------------

def summarize(results: List[dict], classes: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """One row: mean and std over seeds of every number, and the 95 % cluster bootstrap interval
    of the mean average (classes and seeds resampled; vreloc_tf.evaluation.bootstrap)."""
    keys = list(THRESHOLD_KEYS) + ["average"]
    values = np.array([[r["map_at_1"][k] for k in THRESHOLD_KEYS] + [r["average"]] for r in results])
    ious = np.array([r["ious"] for r in results], dtype=np.float64)
    ci = cluster_bootstrap(ious, classes, samples=samples, seed=seed)
    first = results[0]
    return {"method": first["method"], "seeds": len(results), "pairs": first["pairs"],
            "mean": dict(zip(keys, values.mean(axis=0).tolist())),
            "std": dict(zip(keys, values.std(axis=0, ddof=1).tolist() if len(results) > 1 else [0.0] * len(keys))),
            "per_seed_average": [r["average"] for r in results], "ci95_average": [ci["lo"], ci["hi"]],
            "learning_rate": first.get("learning_rate"), "tuned": first.get("tuned"),
            "provenance": [dict(r["provenance"], seed=r.get("seed")) for r in results if "provenance" in r]}


def summarize_family(rows: Dict[str, List[dict]], classes: np.ndarray, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Every row, the paired differences of ours against each comparison, and the targets."""
    summary = {name: summarize(results, classes, samples) for name, results in rows.items()}
    ious = {name: np.array([r["ious"] for r in results], dtype=np.float64) for name, results in rows.items()}
    differences = {}
    for ours in ("full", "weak-ours", "paper-size-full", "paper-size-weak"):
        if ours not in ious:
            continue
        for other in (RIVALS[ours], "query-free", "window-match", "frame-level"):
            if other in ious:
                differences[f"{ours} - {other}"] = paired_difference(ious[ours], ious[other], classes,
                                                                     samples=samples, seed=0)
    aucs = {ours: swapped_score_auc(rows.get(ours, []), rows.get(ours + SWAPPED, [])) for ours in RIVALS}
    return {"rows": summary, "differences": differences, "checks": targets(summary, differences, aucs)}


def swapped_score_auc(true: List[dict], swapped: List[dict]) -> Optional[float]:
    """Mean over seeds of the ROC AUC of the decoder's scores, true query against swapped
    (vreloc_tf.evaluation.separation): whether the model's confidence reads the query even where
    its answer does not move. None where a run's result predates ``segment_scores``."""
    by_seed = {r.get("seed"): r for r in swapped}
    aucs = []
    for r in true:
        other = by_seed.get(r.get("seed"))
        if other is None or "segment_scores" not in r or "segment_scores" not in other:
            return None
        aucs.append(score_auc(r["segment_scores"], other["segment_scores"]))
    return float(np.mean(aucs)) if aucs else None


def targets(rows: Dict[str, dict], differences: Dict[str, dict],
            score_aucs: Optional[Dict[str, Optional[float]]] = None) -> Dict[str, dict]:
    """Issue #26's targets on one family (seed means of the average; paired intervals where named;
    a swapped-query target carries its method's score AUC where ``score_aucs`` has one)."""
    avg = {name: row["mean"]["average"] for name, row in rows.items()}
    checks = {}
    for ours in ("full", "weak-ours", "paper-size-full", "paper-size-weak"):
        if ours not in avg:
            continue
        if "query-free" in avg:
            d = differences[f"{ours} - query-free"]
            checks[f"{ours} >= query-free + 10"] = {"value": avg[ours] - avg["query-free"],
                                                    "met": avg[ours] >= avg["query-free"] + 10,
                                                    "interval": [d["lo"], d["hi"]], "threshold": 10.0}
        rival = RIVALS[ours]
        if rival in avg:
            d = differences[f"{ours} - {rival}"]
            checks[f"{ours} >= {rival} (tuned)"] = {"value": avg[ours] - avg[rival], "met": avg[ours] >= avg[rival],
                                                    "interval": [d["lo"], d["hi"]], "threshold": 0.0}
        if ours + SWAPPED in avg:
            ratio = avg[ours + SWAPPED] / max(avg[ours], 1e-9)
            # a model that found nothing cannot collapse: the control needs a true score above query-free
            checks[f"{ours} swapped <= 0.3 x true"] = {"value": ratio, "met": ratio <= 0.3 and avg[ours] > avg.get(
                "query-free", 0.0)}
            if (score_aucs or {}).get(ours) is not None:
                checks[f"{ours} swapped <= 0.3 x true"]["score_auc"] = score_aucs[ours]
    for full, weak in PAIRS:
        if full in avg and weak in avg:
            ratio = avg[weak] / max(avg[full], 1e-9)
            checks[f"{weak} >= 0.85 x {full}"] = {"value": ratio, "met": ratio >= 0.85}
    for c in checks.values():  # met on the means, and is the paired interval past the line too?
        if "interval" in c:
            c["established"] = c["interval"][0] > c["threshold"]
    return checks


def verdict(check: dict) -> str:
    """'met', 'MISSED', or 'met, CI not above X' where the mean passes but its paired interval reaches the line."""
    if not check["met"]:
        return "MISSED"
    if check.get("established") is False:
        return f"met, CI not above {check['threshold']:g}"
    return "met"


ROW_ORDER = ("full", "full" + SWAPPED, "weak-ours", "weak-ours" + SWAPPED, "weak-paper", "cgbm",
             "paper-size-full", "paper-size-full" + SWAPPED, "paper-size-weak", "paper-size-weak" + SWAPPED,
             "window-match", "query-free", "frame-level", "prior", "random")
ROW_NAMES = {"full": "ours full", "weak-ours": "ours weak (ours)", "weak-paper": "ours weak (paper)",
             "cgbm": "CGBM", "paper-size-full": "ours full, paper size", "paper-size-weak": "ours weak, paper size",
             "window-match": "Window matcher", "query-free": "Query-free", "frame-level": "FL Baseline",
             "prior": "Stat. prior", "random": "Random"}


def row_name(name: str) -> str:
    base = name[: -len(SWAPPED)] if name.endswith(SWAPPED) else name
    text = ROW_NAMES.get(base, base)
    return text + ", swapped query" if name.endswith(SWAPPED) else text


def format_family(family: str, summary: dict, markdown: bool = False) -> str:
    """One family's rows as a table (mean +- std over seeds; 95 % CI of the mean average)."""
    rows = summary["rows"]
    order = [n for n in ROW_ORDER if n in rows] + sorted(n for n in rows if n not in ROW_ORDER)
    head = ["mAP@1"] + list(THRESHOLD_KEYS) + ["Avg.", "95% CI (Avg.)", "seeds", "lr"]
    lines = []
    for name in order:
        r = rows[name]
        cells = [f"{r['mean'][k]:.1f} ± {r['std'][k]:.1f}" if r["seeds"] > 1 else f"{r['mean'][k]:.1f}"
                 for k in list(THRESHOLD_KEYS) + ["average"]]
        lo, hi = r["ci95_average"]
        rate = r.get("learning_rate")
        lr = "" if rate is None else f"{rate:g}" + ("" if r.get("tuned") else " (untuned)")
        lines.append([row_name(name)] + cells + [f"[{lo:.1f}, {hi:.1f}]", str(r["seeds"]), lr])
    checks = [f"{k}: {v['value']:.2f}" + (f" [{v['interval'][0]:.1f}, {v['interval'][1]:.1f}]" if "interval" in v else "")
              + f" -> {verdict(v)}" for k, v in summary["checks"].items()]
    pairs = rows[order[0]]["pairs"]
    if markdown:
        text = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
        text += "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
        return text + f"\n\n{pairs} test pairs.\n"
    widths = [max(len(str(row[i])) for row in [head] + lines) + 2 for i in range(len(head))]
    text = [f"{family} ({pairs} test pairs)"]
    text += ["".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [head] + lines]
    return "\n".join(text + ["targets: " + "; ".join(checks)])


def load_summaries(out: str, families: Sequence[str], reporting_seed: int = REPORTING_DATA_SEED) -> dict:
    return {f: read_json(os.path.join(out, f"draw-{reporting_seed}", "results", f, "summary.json"), "quality summary")
            for f in families}


__all__ = ["Study", "METHODS", "check_methods", "MAIN_METHODS", "FAMILIES", "summarize", "summarize_family", "targets",
           "format_family", "tuning_score", "pick_trial", "provenance", "load_summaries"]
