"""`vreloc quality`: the model rows of docs/QUALITY.md, on every data family, over training seeds.

Why a command of its own: a quality claim is only as good as the data it was measured on.
One command makes every number of docs/QUALITY.md from scratch, the same way each time:

* for every feature family (``vreloc synth --family``; ``benchmark`` = the ``demo`` family
  at the real benchmark geometry, 978 test pairs) one data folder (synth -> ingest, data
  seed 0) and one fixed test pair list;
* the baselines on it (random, statistical prior, frame-level);
* every method (full, weak "ours", weak "paper", Feng et al.'s CGBM, and the ablations) trained with each of the
  training seeds, scored on the test pairs with the model its selection rule picked (for
  weak runs a label-free rule: labels never pick a weak model);
* per method: mean +- std over the seeds of every mAP@1 number, and a 95 % bootstrap
  interval of the seed mean, resampling the test pairs jointly across seeds;
* the targets of issue #10 checked per family: full >= frame-level + 10, weak (ours) >=
  frame-level + 5, weak (ours) >= 0.7 x full.

Everything lands under ``--out`` (data/, runs/, results/); a rerun reuses finished pieces,
so an interrupted study resumes. ``--report FILE`` writes the markdown tables.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vreloc_tf.config import CGBM_METHOD
from vreloc_tf.errors import InputError
from vreloc_tf.files import read_json, write_json_atomic

log = logging.getLogger("vreloc.quality")

BENCHMARK = "benchmark"  # the demo family at the benchmark's real split geometry
BASELINES = ("random", "prior", "frame-level")
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Method:
    """A trained row: supervision, config overrides, and how it is scored."""

    name: str
    supervision: str
    overrides: Tuple[str, ...] = ()
    decode: Optional[str] = None  # None = the run's own rule
    checkpoint: Optional[str] = None  # None = model.keras (the selection rule's pick); "last"
    trains_as: Optional[str] = None  # score another method's runs (evaluation-only ablations)
    about: str = ""


METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("full", "full", about="ours full: Eq. 19 + loss^c, similarity features (tiny)"),
    Method("weak-ours", "weak", about="ours weak: Eq. 19 on the label-free teacher's segments, blended with the "
                                      "segments of the student's running average (the saved model), Eq. 20 "
                                      "decoding"),
    Method("weak-paper", "weak", ("loss.weak_variant=paper",),
           about="the paper's weak objective: co-attention loss with masks, threshold decoding"),
    Method("cgbm", "full", CGBM_METHOD,
           about="Feng et al.'s CGBM (the paper's Table 4 competitor): their model at the config's model.cgbm "
                 "sizes, their loss (Eq. 10) and decoding, full supervision"),
    # ablations: each change of "ours" removed on its own
    Method("full-no-similarity", "full", ("model.similarity_features=false",),
           about="full without the similarity features (the paper's model)"),
    Method("weak-ours-no-similarity", "weak", ("model.similarity_features=false",),
           about="weak ours without the similarity features (the paper's model)"),
    Method("weak-ours-mean-teacher", "weak", ("loss.teacher_temperature=100",),
           about="weak ours, teacher pooling the query frames by their mean (tau=100) instead of a soft maximum"),
    Method("weak-ours-no-self-target", "weak", ("loss.self_target_weight=0",),
           about="weak ours on the teacher's segments alone, without the student's running average"),
    Method("weak-ours-student", "weak", ("loss.self_target_as_model=false",),
           about="weak ours saving and validating the student's own weights instead of its running average"),
    Method("weak-ours-truncate", "weak", ("loss.teacher_truncation=0.3", "loss.self_target_weight=0"),
           about="weak ours without the self target, each batch's 30 % highest-loss pairs dropped instead "
                 "(ramped up over 200 steps): the other remedy for the drift that was tried"),
    Method("weak-ours-threshold-decode", "weak", decode="weak", trains_as="weak-ours",
           about="weak ours scored with the paper's weak threshold rule instead of Eq. 20"),
    Method("weak-ours-last", "weak", checkpoint="last", trains_as="weak-ours",
           about="weak ours, the last checkpoint instead of the label-free pick"),
    Method("weak-paper-last", "weak", ("loss.weak_variant=paper",), checkpoint="last", trains_as="weak-paper",
           about="the paper's weak objective, the last checkpoint"),
)}
MAIN_METHODS = ("full", "weak-ours", "weak-paper")


@dataclass
class Study:
    out: str
    families: Sequence[str]
    seeds: Sequence[int]
    methods: Sequence[str] = MAIN_METHODS
    config: str = "tiny"
    overrides: Sequence[str] = ()
    dim: int = 32
    geometry: str = "default"
    benchmark_splits: Optional[str] = None  # the folder with length.json and the split files
    finished_only: bool = False  # report what earlier runs finished; train nothing
    timings: Dict[str, float] = field(default_factory=dict)

    # -- data ------------------------------------------------------------------------
    def data_dir(self, family: str) -> str:
        return os.path.join(self.out, "data", family)

    def prepare_data(self, family: str) -> str:
        """synth -> ingest for ``family`` (reused when its manifest exists)."""
        from pipeline import ingest_activitynet, synth

        data = self.data_dir(family)
        if os.path.exists(os.path.join(data, "tfrecords", "manifest.json")):
            return os.path.join(data, "tfrecords")
        raw = os.path.join(data, "raw")
        if family == BENCHMARK:
            if not self.benchmark_splits:
                raise InputError("family 'benchmark' needs --benchmark-splits DIR (length.json + train/val/test.json)")
            synth.generate(raw, seed=0, dim=self.dim, lengths=os.path.join(self.benchmark_splits, "length.json"),
                           splits_dir=self.benchmark_splits, family="demo")
        else:
            synth.generate(raw, seed=0, dim=self.dim, family=family, geometry=self.geometry)
        counts = ingest_activitynet.run(os.path.join(raw, synth.HDF5_NAME), raw, os.path.join(data, "tfrecords"))
        bad = [s for s, c in counts.items() if not c.reconciles()]
        if bad:
            raise RuntimeError(f"ingest of {family}: counts do not reconcile for {bad}")
        return os.path.join(data, "tfrecords")

    # -- one method, one seed ----------------------------------------------------------
    def run_dir(self, family: str, method: Method, seed: int) -> str:
        return os.path.join(self.out, "runs", family, method.trains_as or method.name, f"seed-{seed}")

    def result_path(self, family: str, name: str, seed: Optional[int] = None) -> str:
        leaf = f"{name}.json" if seed is None else f"{name}-seed-{seed}.json"
        return os.path.join(self.out, "results", family, leaf)

    def score(self, family: str, method: Method, seed: int, data: str, pairs: str) -> dict:
        from vreloc_tf.config import load_config
        from vreloc_tf.evaluate import evaluate_run
        from vreloc_tf.train import train

        path = self.result_path(family, method.name, seed)
        if os.path.exists(path):
            return read_json(path, "result")
        run = self.run_dir(family, method, seed)
        if not os.path.exists(os.path.join(run, "run.json")):
            trained = METHODS[method.trains_as] if method.trains_as else method
            cfg = load_config(self.config, [f"supervision={trained.supervision}", f"seed={seed}",
                                            *trained.overrides, *self.overrides])
            t0 = time.time()
            train(cfg, data, run, verbose=0, overwrite=True)
            self.timings[f"{family}/{method.name}/{seed}"] = time.time() - t0
        result = evaluate_run(run, data, "test", pairs, decode=method.decode, method=method.name, seed=0,
                              checkpoint=method.checkpoint)
        result["seed"] = seed
        write_json_atomic(path, result)
        return result

    def baselines(self, family: str, data: str, pairs: str) -> Dict[str, dict]:
        from vreloc_tf.baselines import run_baseline

        out = {}
        for name in BASELINES:
            path = self.result_path(family, name)
            if not os.path.exists(path):
                write_json_atomic(path, run_baseline(name, data, "test", pairs, 0, verbose=False))
            out[name] = read_json(path, "result")
        return out

    def run(self, progress=print) -> dict:
        for name in self.methods:
            if name not in METHODS:
                raise InputError(f"--methods: unknown method {name!r}; known: {', '.join(METHODS)}")
        summary = {}
        for family in self.families:
            if self.finished_only and not os.path.exists(self.result_path(family, "frame-level")):
                progress(f"[quality] {family}: nothing finished, left out")
                continue
            data = self.prepare_data(family)
            pairs = os.path.join(self.data_dir(family), "pairs_test.json")
            rows = {name: summarize([r]) for name, r in self.baselines(family, data, pairs).items()}
            for name in self.methods:
                results = []
                for seed in self.seeds:
                    if self.finished_only and not os.path.exists(self.result_path(family, name, seed)):
                        continue
                    progress(f"[quality] {family}: {name}, seed {seed}")
                    results.append(self.score(family, METHODS[name], seed, data, pairs))
                if results:
                    rows[name] = summarize(results)
            summary[family] = {"rows": rows, "checks": targets(rows)}
            write_json_atomic(os.path.join(self.out, "results", family, "summary.json"), summary[family])
            progress(format_family(family, summary[family]))
        return summary


# -- aggregation ---------------------------------------------------------------------------

def summarize(results: List[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Mean and std over seeds of every number, and a 95 % bootstrap interval of the seed mean
    (pairs resampled jointly: the same resampled pairs for every seed)."""
    from vreloc_tf.metrics import THRESHOLD_KEYS, THRESHOLDS

    keys = list(THRESHOLD_KEYS) + ["average"]
    values = np.array([[r["map_at_1"][k] for k in THRESHOLD_KEYS] + [r["average"]] for r in results])
    out = {"method": results[0]["method"], "seeds": len(results), "pairs": results[0]["pairs"],
           "mean": dict(zip(keys, values.mean(axis=0).tolist())),
           "std": dict(zip(keys, values.std(axis=0, ddof=1).tolist() if len(results) > 1 else [0.0] * 6)),
           "per_seed_average": [r["average"] for r in results],
           "selection": results[0].get("selection")}
    ious = np.array([r["ious"] for r in results])  # [seeds, pairs]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ious.shape[1], size=(samples, ious.shape[1]))
    hits = ious[:, None, :] > np.asarray(THRESHOLDS)[None, :, None]  # [S, T, N]
    rates = 100.0 * hits[:, :, picks].mean(axis=(0, 3))  # [T, samples]: mean over seeds and pairs
    average = rates.mean(axis=0)
    out["ci95_average"] = [float(np.percentile(average, 2.5)), float(np.percentile(average, 97.5))]
    return out


def targets(rows: Dict[str, dict]) -> Dict[str, dict]:
    """Issue #10's targets on one family (seed means of the average)."""
    avg = {name: row["mean"]["average"] for name, row in rows.items()}
    checks = {}
    if "full" in avg:
        checks["full >= frame-level + 10"] = {"value": avg["full"] - avg["frame-level"], "met":
                                              avg["full"] >= avg["frame-level"] + 10}
    if "weak-ours" in avg:
        checks["weak (ours) >= frame-level + 5"] = {"value": avg["weak-ours"] - avg["frame-level"],
                                                    "met": avg["weak-ours"] >= avg["frame-level"] + 5}
        if "full" in avg:
            checks["weak (ours) >= 0.7 x full"] = {"value": avg["weak-ours"] / max(avg["full"], 1e-9),
                                                   "met": avg["weak-ours"] >= 0.7 * avg["full"]}
    return checks


ROW_ORDER = ("full", "weak-ours", "weak-paper", "cgbm", "frame-level", "prior", "random")
ROW_NAMES = {"full": "ours full", "weak-ours": "ours weak (ours)", "weak-paper": "ours weak (paper)",
             "cgbm": "CGBM", "frame-level": "FL Baseline", "prior": "Stat. prior", "random": "Random"}


def format_family(family: str, summary: dict, markdown: bool = False) -> str:
    """One family's rows as a table (mean +- std over seeds; 95 % CI of the mean average)."""
    from vreloc_tf.metrics import THRESHOLD_KEYS

    rows = summary["rows"]
    order = [n for n in ROW_ORDER if n in rows] + sorted(n for n in rows if n not in ROW_ORDER)
    head = ["mAP@1"] + list(THRESHOLD_KEYS) + ["Avg.", "95% CI (Avg.)", "seeds"]
    lines = []
    for name in order:
        r = rows[name]
        cells = [f"{r['mean'][k]:.1f} ± {r['std'][k]:.1f}" if r["seeds"] > 1 else f"{r['mean'][k]:.1f}"
                 for k in list(THRESHOLD_KEYS) + ["average"]]
        lo, hi = r["ci95_average"]
        lines.append([ROW_NAMES.get(name, name)] + cells + [f"[{lo:.1f}, {hi:.1f}]", str(r["seeds"])])
    checks = [f"{k}: {v['value']:.2f} -> {'met' if v['met'] else 'MISSED'}" for k, v in summary["checks"].items()]
    pairs = rows[order[0]]["pairs"]
    if markdown:
        text = "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
        text += "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
        return text + f"\n\n{pairs} test pairs. Targets: " + "; ".join(checks) + "\n"
    widths = [max(len(str(row[i])) for row in [head] + lines) + 2 for i in range(len(head))]
    text = [f"{family} ({pairs} test pairs)"]
    text += ["".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in [head] + lines]
    return "\n".join(text + ["targets: " + "; ".join(checks)])


def write_report(study: Study, summary: dict, path: str, command: str) -> str:
    """The tables as markdown (the body of docs/QUALITY.md's results section)."""
    parts = [f"Made by `{command}` ({time.strftime('%Y-%m-%d')}).\n"]
    for family, fam in summary.items():
        parts.append(f"### {family}\n\n" + format_family(family, fam, markdown=True))
    used = [m for m in study.methods if m in METHODS]
    parts.append("Methods: " + "; ".join(f"`{m}` = {METHODS[m].about}" for m in used) + ".\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write("\n".join(parts))
    return path


def load_summaries(out: str, families: Sequence[str]) -> dict:
    return {f: read_json(os.path.join(out, "results", f, "summary.json"), "quality summary") for f in families}


__all__ = ["Study", "METHODS", "summarize", "targets", "format_family", "write_report", "load_summaries"]
