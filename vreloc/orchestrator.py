"""`vreloc pipeline run`: the whole job as TFX-style stages with manifests and caching.

Why stages with manifests: each stage (FeatureGen, Trainer, Evaluator, Pusher)
records what it read, what it wrote, the config hash, the code version and its
timings in ``WORKDIR/<stage>/stage.json``. A rerun compares the stage's input
fingerprint with the recorded one and skips a stage whose inputs and config did
not change; ``--force STAGE`` reruns it (and, as its outputs change, everything
after it).

Each stage is a function that calls the library (``pipeline.synth.generate``, the
Beam launchers, ``vreloc_tf.training.run.train``, the evaluation and baseline functions,
``serving.export.export_model``) and hands typed artifacts on
(:mod:`vreloc_tf.data.artifacts`); a stage's folder layout is its own business. ``featuregen`` and
``train_model`` are also `vreloc quality`'s feature and training jobs (vreloc/quality.py)::

    WORKDIR/
      featuregen/  stage.json, raw/ (synthetic ActivityNet-format input), data/ (TFRecords + manifest;
                   from ingest-activitynet, or from extract-video for a folder of videos)
      trainer/     stage.json, full/ and weak/ (training run folders; cgbm/ with --models ...,cgbm)
      evaluator/   stage.json, pairs_<split>.json, results_<split>.json, table_<split>.txt, blessing.json,
                   figure4_<model>_test_pair0.png
      pusher/      stage.json, serving/<model name>_<model>/<version>/ (SavedModels for TF Serving)

The models (``--models``, default ``full,weak``): ``full`` and ``weak`` are the config in either
supervision, ``cgbm`` is Feng et al.'s CGBM on the same config (``vreloc_tf.config.CGBM_METHOD``:
their model at the config's ``model.cgbm`` sizes, their loss and decoding), the "CGBM" row.

Blessing is decided by name: a model is blessed when its val average beats the
frame-level baseline's (results are keyed by method id, ``model:full``,
``baseline:frame-level``, ...).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from pipeline import synth
from pipeline.backbones import BackboneOptions
from serving.client import predict
from serving.export import export_model
from vreloc_tf import __version__
from vreloc_tf.data import schema
from vreloc_tf.data.artifacts import Dataset, Export, Run
from vreloc_tf.evaluation.baselines import run_baseline
from vreloc_tf.config import CGBM_METHOD, Config, apply_overrides
from vreloc_tf.contract import END, FEATURE_DIM, SCORE, START
from vreloc_tf.errors import InputError
from vreloc_tf.evaluation.scoring import evaluate_run, save_results
from vreloc_tf.files import atomic_path, clear_folder, read_json, write_json_atomic
from vreloc_tf.evaluation.metrics import format_table

log = logging.getLogger("vreloc.pipeline")

STAGES = ("featuregen", "trainer", "evaluator", "pusher")
SPLITS = ("val", "test")
MODELS = ("full", "weak", "cgbm")  # what --models may name
DEFAULT_MODELS = ("full", "weak")
BASELINES = ("random", "prior", "frame-level", "window-match", "query-free")
BLESSING_YARDSTICK = "baseline:frame-level"  # a model is blessed if its val average beats this method's
STAGE_FILE = "stage.json"
VIDEO_ANNOTATIONS = "annotations.json"  # a video folder: DIR/annotations.json + DIR/videos/*
VIDEO_DIR = "videos"
SYNTH = "synth"
BENCHMARK_GEOMETRY = "benchmark"  # synthetic data at the benchmark's split geometry (FeatureSource.splits)


class StageFailed(RuntimeError):
    """A stage ran but did not produce what it should (e.g. counts that do not reconcile)."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tree_fingerprint(path: str) -> str:
    """A cheap fingerprint of a file, or of a folder's files: names, sizes, mtimes."""
    if os.path.isfile(path):
        files = [path]
    else:
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    return _hash([(os.path.relpath(f, path), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files])


# -- the stages: library calls with typed artifacts in and out ----------------------

@dataclass(frozen=True)
class FeatureSource:
    """Where FeatureGen takes its data from: ``synth``, an ActivityNet-format folder, or a video folder.

    Synthetic data takes its seed and feature dim from the config unless ``seed``/``dim`` say otherwise
    (`vreloc quality` draws its data on a seed of its own), and its split geometry from ``geometry``:
    one of synth's own, or ``benchmark`` (:data:`BENCHMARK_GEOMETRY`), the benchmark's real geometry
    read from ``splits`` (a folder with length.json and the split files).
    """

    data: str = SYNTH
    family: str = "demo"  # feature family of synthetic data (pipeline.families)
    geometry: str = "default"  # split geometry of synthetic data (pipeline.synth.GEOMETRIES, or BENCHMARK_GEOMETRY)
    runner: Optional[str] = None  # Beam runner (default DirectRunner)
    backbone: Optional[BackboneOptions] = None  # how a video folder's frames become features (extract-video)
    seed: Optional[int] = None  # data seed of synthetic data (None: the config's seed)
    dim: Optional[int] = None  # feature dim of synthetic data (None: the config's, else the contract's)
    splits: Optional[str] = None  # the benchmark geometry's folder (length.json + train/val/test.json)

    def __post_init__(self):
        synthetic = (self.family != "demo" or self.geometry != "default" or self.seed is not None
                     or self.dim is not None or self.splits is not None)
        if self.data != SYNTH and synthetic:
            raise InputError(f"--family/--geometry describe generated data (--data {SYNTH}); --data {self.data} "
                             f"brings its own features and splits")
        if (self.geometry == BENCHMARK_GEOMETRY) != (self.splits is not None):
            raise InputError("the benchmark geometry needs --benchmark-splits DIR "
                             "(length.json + train/val/test.json; `vreloc benchmark fetch`)"
                             if self.splits is None else
                             f"{self.splits}: split files are the {BENCHMARK_GEOMETRY} geometry's; "
                             f"got geometry {self.geometry!r}")

    def fingerprint(self) -> dict:
        synth_geometry = {"geometry": self.geometry} if self.data == SYNTH and self.geometry != "default" else {}
        # each only when given, so work folders made before it stay valid
        synth_own = {**({"seed": self.seed} if self.seed is not None else {}),
                     **({"dim": self.dim} if self.dim is not None else {}),
                     **({"splits": _tree_fingerprint(self.splits)} if self.splits is not None else {})}
        return {"data": self.data, "family": self.family if self.data == SYNTH else None,
                **synth_geometry, **synth_own,
                "source": None if self.data == SYNTH else _tree_fingerprint(self.data),
                **({"c3d": None, "random_c3d": False} if self.backbone is None else {"backbone": {
                    **dataclasses.asdict(self.backbone),
                    "weights": self.backbone.weights and (_tree_fingerprint(self.backbone.weights)
                                                          if os.path.exists(self.backbone.weights)
                                                          else self.backbone.weights)}})}


def _check_reconciled(job: str, counts: dict) -> None:
    bad = {split: c for split, c in counts.items() if not c.reconciles()}
    if bad:
        raise StageFailed(f"{job}: read != written + dead-lettered for {sorted(bad)}: {bad}")


def featuregen(folder: str, cfg: Optional[Config], source: FeatureSource, data_name: str = "data") -> Dataset:
    """The data folder ``folder/<data_name>`` from synthetic data (made in ``folder/raw``), an
    ActivityNet-format folder or raw videos; its counts must reconcile (:class:`StageFailed`).

    ``cfg`` gives what ``source`` leaves out: the seed and feature dim of synthetic data, the PCA
    size of video features (None when ``source`` names them all, as `vreloc quality`'s does).
    """
    runner = {"runner": source.runner} if source.runner else {}
    data_dir = os.path.join(folder, data_name)
    if source.data == SYNTH:
        src = os.path.join(folder, "raw")
        seed = cfg.seed if source.seed is None else source.seed
        dim = source.dim or cfg.data.feature_dim or FEATURE_DIM
        if source.splits is not None:  # the benchmark's geometry
            synth.generate(src, seed=seed, dim=dim, lengths=os.path.join(source.splits, "length.json"),
                           splits_dir=source.splits, family=source.family)
        else:
            synth.generate(src, seed=seed, dim=dim, family=source.family, geometry=source.geometry)
    else:
        src = os.path.abspath(source.data)
    hdf5 = os.path.join(src, synth.HDF5_NAME)
    if os.path.exists(hdf5):
        # heavy: Apache Beam, only in a featuregen stage that runs (cached stages load nothing)
        from pipeline import ingest_activitynet

        _check_reconciled("ingest-activitynet", ingest_activitynet.run(hdf5, src, data_dir, **runner))
    elif os.path.exists(os.path.join(src, VIDEO_ANNOTATIONS)) and os.path.isdir(os.path.join(src, VIDEO_DIR)):
        if source.backbone is None or (source.backbone.weights is None and source.backbone.random_seed is None):
            raise InputError(f"--data {source.data} holds raw videos: give --weights FILE|HANDLE "
                             f"(or --random-weights for a demo), and --backbone clip for CLIP")
        # heavy: Apache Beam and TensorFlow, only in a featuregen stage that runs on videos
        from pipeline import extract_video

        counts = extract_video.run(os.path.join(src, VIDEO_DIR, "*"), data_dir,
                                   annotations=os.path.join(src, VIDEO_ANNOTATIONS), backbone=source.backbone,
                                   n_components=cfg.data.feature_dim or FEATURE_DIM, **runner)
        _check_reconciled("extract-video", counts)
    else:
        raise InputError(f"--data {source.data}: expected an ActivityNet-format folder ({synth.HDF5_NAME} and "
                         f"train/val/test.json) or a video folder ({VIDEO_ANNOTATIONS} in ActivityNet's "
                         f"annotation format and the videos under {VIDEO_DIR}/)")
    return Dataset.open(data_dir)


def model_config(cfg: Config, model: str) -> Config:
    """The config of one of MODELS: ``cfg`` in full or weak supervision, or Feng et al.'s CGBM on it."""
    if model == "cgbm":
        return apply_overrides(dataclasses.replace(cfg, supervision="full"), CGBM_METHOD)
    if model not in MODELS:
        raise InputError(f"--models: unknown model {model!r}; known: {', '.join(MODELS)}")
    return dataclasses.replace(cfg, supervision=model)


def parse_models(text: str) -> tuple:
    """``--models full,weak,cgbm`` -> ('full', 'weak', 'cgbm'): known names, each once, in the given order."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise InputError(f"--models {text!r}: expected a comma-separated list of {', '.join(MODELS)}")
    return names


def train_model(cfg: Config, dataset: Dataset, run_dir: str, **options) -> Run:
    """Train (or resume) ``cfg`` on ``dataset`` in the run folder ``run_dir``; its :class:`Run`.

    The one training job of the trainer stage and of `vreloc quality`; ``options`` go to
    :func:`vreloc_tf.training.run.train` (``verbose``, ``overwrite``, ...)."""
    # heavy: TensorFlow, only where a run trains (cached stages and `vreloc quality --finished-only` load nothing)
    from vreloc_tf.training.run import train

    return train(cfg, dataset, run_dir, **options)


def trainer(folder: str, cfg: Config, dataset: Dataset, models=DEFAULT_MODELS) -> Dict[str, Run]:
    """One run per model of ``models`` (default: full and weak) on ``dataset``, in ``folder/<model>``."""
    return {model: train_model(model_config(cfg, model), dataset, os.path.join(folder, model)) for model in models}


def evaluator(folder: str, seed: int, dataset: Dataset, runs: Dict[str, Run]) -> dict:
    """Models and baselines on the fixed val and test pair lists, the blessing, and Figure-4 PNGs."""
    # heavy: TensorFlow, only in an evaluator stage that runs (cached stages load nothing)
    from vreloc_tf.evaluation.visualize import visualize_pair

    results: Dict[str, Dict[str, dict]] = {}
    for split in SPLITS:
        pairs = os.path.join(folder, f"pairs_{split}.json")
        rows = {f"model:{mode}": evaluate_run(run, dataset, split, pairs, seed=seed)
                for mode, run in runs.items()}
        rows.update({f"baseline:{method}": run_baseline(method, dataset, split, pairs, seed)
                     for method in BASELINES})
        results[split] = rows
        save_results(rows, os.path.join(folder, f"results_{split}.json"))
        with atomic_path(os.path.join(folder, f"table_{split}.txt")) as tmp, open(tmp, "w") as fh:
            fh.write(format_table(list(rows.values())) + "\n")
    yardstick = results["val"][BLESSING_YARDSTICK]["average"]
    blessing = {}
    for mode in runs:
        average = results["val"][f"model:{mode}"]["average"]
        blessing[mode] = {"blessed": average > yardstick, "val_average": average,
                          "frame_level_val_average": yardstick}
    write_json_atomic(os.path.join(folder, "blessing.json"), blessing)
    figures = {}
    for mode, run in runs.items():  # what each model attends to on the first test pair (paper Figure 4)
        out = os.path.join(folder, f"figure4_{mode}_test_pair0.png")
        visualize_pair(run, dataset, "test", 0, out, os.path.join(folder, "pairs_test.json"), seed)
        figures[mode] = out
    return {"results": results, "blessing": blessing, "figures": figures}


def pusher(folder: str, runs: Dict[str, Run], blessing: dict, model_name: str) -> Dict[str, Export]:
    """Export each blessed run as the next version of ``folder/serving/<model_name>_<mode>``."""
    pushed = {}
    for mode, run in runs.items():
        verdict = blessing[mode]
        if not verdict["blessed"]:
            log.warning("Pusher: the %s model is not blessed (val average %.1f <= frame-level %.1f); not pushed",
                        mode, verdict["val_average"], verdict["frame_level_val_average"])
            continue
        pushed[mode] = export_model(run, os.path.join(folder, "serving", f"{model_name}_{mode}"))
    return pushed


# -- the engine ----------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    inputs: Callable[[], dict]  # what the stage reads (fingerprinted)
    body: Callable[[str], dict]  # runs the stage in its folder, returns its outputs (JSON-ready)
    keep: tuple = ()  # entries of the stage folder that survive a rerun with new inputs


class PipelineRun:
    def __init__(self, workdir: str, cfg: Config, config_source: str, source: FeatureSource, force: List[str],
                 model_name: str = "vreloc", serve_check: bool = True, models=DEFAULT_MODELS):
        self.workdir = os.path.abspath(workdir)
        self.models = tuple(models)
        self.cfg = cfg
        self.config_source = config_source
        self.source = source
        self.force = set(force)
        self.model_name = model_name
        self.serve_check = serve_check
        self.statuses: Dict[str, str] = {}
        self._made: Dict[str, object] = {}  # artifacts the stages of this process returned, handed on as they are

    def stage_dir(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def stage_record(self, name: str) -> Optional[dict]:
        path = os.path.join(self.stage_dir(name), STAGE_FILE)
        return read_json(path, "stage manifest") if os.path.exists(path) else None

    def stage_outputs(self, name: str) -> dict:
        """The outputs a stage recorded in its stage.json ({} if it has not finished)."""
        return (self.stage_record(name) or {}).get("outputs") or {}

    def _output_hash(self, name: str) -> Optional[str]:
        doc = self.stage_record(name)
        return None if not doc else _hash([doc.get("outputs"), doc.get("finished")])

    # The artifacts of earlier stages: as a stage of this process returned them, else (a skipped stage)
    # opened once from what its stage.json recorded -- the orchestrator's door for cached work.
    def dataset(self) -> Dataset:
        if "dataset" not in self._made:
            self._made["dataset"] = Dataset.open(self.stage_outputs("featuregen")["data_dir"])
        return self._made["dataset"]

    def runs(self) -> Dict[str, Run]:
        if "runs" not in self._made:
            self._made["runs"] = {mode: Run.open(out["run_dir"]) for mode, out in self.stage_outputs("trainer").items()}
        return self._made["runs"]

    def stages(self) -> List[Stage]:
        def featuregen_body(folder):
            dataset = self._made["dataset"] = featuregen(folder, self.cfg, self.source)
            self._made.pop("runs", None)
            return {"data_dir": dataset.path, "splits": dataset.manifest.splits,
                    "feature_dim": dataset.feature_dim}

        def trainer_body(folder):
            runs = self._made["runs"] = trainer(folder, self.cfg, self.dataset(), self.models)
            return {mode: {"run_dir": run.path, **dataclasses.asdict(run.manifest)} for mode, run in runs.items()}

        def pusher_body(folder):
            pushed = pusher(folder, self.runs(), self.stage_outputs("evaluator")["blessing"], self.model_name)
            return {"pushed": {mode: export.to_json() for mode, export in pushed.items()}}

        return [
            Stage("featuregen", lambda: {"seed": self.cfg.seed, "feature_dim": self.cfg.data.feature_dim,
                                         **self.source.fingerprint()}, featuregen_body),
            Stage("trainer", lambda: {"config": self.cfg.digest(), "data": self._output_hash("featuregen"),
                                      "models": list(self.models)}, trainer_body),
            Stage("evaluator", lambda: {"models": self._output_hash("trainer"), "data": self._output_hash("featuregen"),
                                        "seed": self.cfg.seed},
                  lambda folder: evaluator(folder, self.cfg.seed, self.dataset(), self.runs())),
            # Pushed versions stay: a new push is the next version beside them.
            Stage("pusher", lambda: {"evaluation": self._output_hash("evaluator")}, pusher_body, keep=("serving",)),
        ]

    def run(self) -> int:
        os.makedirs(self.workdir, exist_ok=True)
        forced_from = min((STAGES.index(s) for s in self.force), default=len(STAGES))
        for index, stage in enumerate(self.stages()):
            folder = self.stage_dir(stage.name)
            os.makedirs(folder, exist_ok=True)
            inputs = stage.inputs()
            fingerprint = _hash(inputs)
            previous = self.stage_record(stage.name)
            if previous and previous.get("fingerprint") == fingerprint and previous.get("status") == "done" \
                    and index < forced_from:
                self.statuses[stage.name] = "skipped (inputs and config unchanged)"
                print(f"[{stage.name}] skipped: inputs and config unchanged since {previous['finished']}")
                continue
            if previous and (previous.get("fingerprint") != fingerprint or index >= forced_from):
                # New inputs (or --force): start clean, so no stale run folder, pair list or model is reused.
                # The same inputs after an interrupted run keep their folder, so training resumes.
                clear_folder(folder, keep=stage.keep)
            print(f"[{stage.name}] running")
            start = time.time()
            outputs = stage.body(folder)
            self._write_stage(folder, stage.name, inputs, fingerprint, outputs, start)
            self.statuses[stage.name] = f"done in {time.time() - start:.1f} s"
            print(f"[{stage.name}] done in {time.time() - start:.1f} s")
        if self.serve_check:
            self.serve_and_query()
        self._summary()
        return 0

    def _write_stage(self, folder, name, inputs, fingerprint, outputs, start):
        write_json_atomic(os.path.join(folder, STAGE_FILE), {
            "stage": name, "status": "done", "inputs": inputs, "fingerprint": fingerprint, "outputs": outputs,
            "config_hash": self.cfg.digest(), "config_source": self.config_source, "code_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - start, 3)})

    def serve_and_query(self) -> None:
        """Start the gRPC server on loopback, send one test pair with the stock client, stop the server."""
        pushed = self.stage_outputs("pusher").get("pushed")
        if not pushed:
            print("[serve] no blessed model was pushed; nothing to serve")
            return
        export = Export.open(pushed["full" if "full" in pushed else next(iter(pushed))]["path"])
        with _served(export) as address:
            query, reference = _demo_pair(self.dataset())
            print(f"[serve] model {export.model_name} at {address}; querying with the stock gRPC client")
            answer = predict(address, query, reference, export.model_name, timeout=30.0)
            print(f"[serve] model {answer['model_name']} version {answer['version']}: start {answer[START]}  "
                  f"end {answer[END]}  (feature indices, end exclusive)  score {answer[SCORE]:.6f}")

    def _summary(self) -> None:
        print()
        evaluation = self.stage_outputs("evaluator")
        for split, rows in (evaluation.get("results") or {}).items():
            print(f"Results on {split} (mAP@1, %):")
            print(format_table(list(rows.values())))
            print()
        for mode, b in (evaluation.get("blessing") or {}).items():
            verdict = "blessed" if b["blessed"] else "NOT blessed"
            print(f"{mode} model: {verdict} (val average {b['val_average']:.1f} vs frame-level "
                  f"{b['frame_level_val_average']:.1f})")
        for mode, path in (evaluation.get("figures") or {}).items():
            print(f"Figure 4 ({mode}): {path}")
        stages = ", ".join(f"{k}: {v}" for k, v in self.statuses.items())
        print(f"pipeline summary: {stages}; work folder {self.workdir}")


def _demo_pair(dataset: Dataset):
    """A test-split query (its trimmed ground truth) and a same-class reference from another video."""
    recs = schema.read_records(dataset.path, "test")
    query = recs[0]
    ref = next((r for r in recs[1:] if r.label == query.label and r.video_id != query.video_id), recs[-1])
    g0, g1 = query.groundtruth
    print(f"[serve] query: test entry {query.entry_index} ({query.video_id}, {g1 - g0} features); "
          f"reference: test entry {ref.entry_index} ({ref.video_id}, {ref.length} features, "
          f"ground truth {list(ref.groundtruth)})")
    return query.features[g0:g1], ref.features


@contextlib.contextmanager
def _served(export: Export):
    """`vreloc serve` of an export as a subprocess on a free loopback port, stopped with SIGTERM afterwards."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vreloc", "serve", "--model-base-path", export.base_path, "--model-name",
           export.model_name, "--port", str(port)]
    proc = subprocess.Popen(cmd)
    try:
        _wait_ready(f"127.0.0.1:{port}", export.model_name, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"[serve] server stopped (exit {proc.returncode})")


def _wait_ready(address: str, model_name: str, proc, timeout: float = 120.0) -> None:
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    deadline = time.time() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while time.time() < deadline:
            if proc.poll() is not None:
                raise StageFailed(f"`vreloc serve` exited with {proc.returncode} before it was ready")
            try:
                req = get_model_status_pb2.GetModelStatusRequest()
                req.model_spec.name = model_name
                stub.GetModelStatus(req, timeout=2)
                return
            except grpc.RpcError:
                time.sleep(0.5)
    raise StageFailed(f"`vreloc serve` did not become ready on {address} within {timeout:.0f} s")
