"""`vreloc pipeline run`: the whole job as TFX-style stages with manifests and caching.

Why stages with manifests: each stage (FeatureGen, Trainer, Evaluator, Pusher)
records what it read, what it wrote, the config hash, the code version and its
timings in ``WORKDIR/<stage>/stage.json``. A rerun compares the stage's input
fingerprint with the recorded one and skips a stage whose inputs and config did
not change; ``--force STAGE`` reruns it (and, as its outputs change, everything
after it).

Stages call the same subcommands a user would (``vreloc synth``,
``ingest-activitynet``, ``train``, ``evaluate``, ``baseline``, ``export``), so
the pipeline exercises exactly the user-facing paths. A stage whose subcommand
is not built yet is reported as such and the run stops there with a non-zero
exit: no stage is ever faked.

Run folder::

    WORKDIR/
      featuregen/  stage.json, raw/ (synthetic ActivityNet-format input), data/ (TFRecords + manifest;
                   from ingest-activitynet, or from extract-video for a folder of videos)
      trainer/     stage.json, full/ and weak/ (training run folders, see vreloc_tf.run_dir)
      evaluator/   stage.json, pairs_<split>.json, results_<split>.json, table_<split>.txt, blessing.json
      pusher/      stage.json, serving/<model name>/<version>/ (SavedModels for TF Serving)
"""
from __future__ import annotations

import argparse
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

from vreloc_tf import __version__
from vreloc_tf.config import Config, load_config

log = logging.getLogger("vreloc.pipeline")

STAGES = ("featuregen", "trainer", "evaluator", "pusher")
MODES = ("full", "weak")
SPLITS = ("val", "test")
BASELINES = ("random", "prior", "frame-level")
STAGE_FILE = "stage.json"
ACTIVITYNET_HDF5 = "sub_activitynet_v1-3.c3d.hdf5"
VIDEO_ANNOTATIONS = "annotations.json"  # a video folder: DIR/annotations.json + DIR/videos/*
VIDEO_DIR = "videos"


class StageNotBuilt(RuntimeError):
    """A stage needs a subcommand that is not built yet."""


class StageFailed(RuntimeError):
    """A stage's subcommand exited non-zero."""


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tree_fingerprint(path: str) -> str:
    """A cheap fingerprint of a folder's files (names, sizes, mtimes)."""
    items = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            items.append((os.path.relpath(full, path), st.st_size, int(st.st_mtime_ns)))
    return _hash(items)


def _tree_fingerprint_file(path: str) -> str:
    st = os.stat(path)
    return _hash([os.path.abspath(path), st.st_size, int(st.st_mtime_ns)])


def vreloc(args: List[str]) -> None:
    """Run one `vreloc` subcommand in process; a missing one raises StageNotBuilt."""
    from vreloc import cli

    log.info("$ vreloc %s", " ".join(args))
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    if code == 3:
        raise StageNotBuilt(f"`vreloc {args[0]}` is not built yet")
    if code != 0:
        raise StageFailed(f"`vreloc {' '.join(args)}` exited with {code}")


@dataclass
class Stage:
    name: str
    inputs: Callable[[], dict]  # what the stage reads (fingerprinted)
    body: Callable[[str], dict]  # runs the stage in its folder, returns its outputs
    keep: tuple = ()  # entries of the stage folder that survive a rerun with new inputs


class PipelineRun:
    def __init__(self, workdir: str, cfg: Config, config_source: str, data: str, runner: Optional[str],
                 force: List[str], model_name: str = "vreloc", serve_check: bool = True,
                 c3d_weights: Optional[str] = None, random_c3d: bool = False):
        self.workdir = os.path.abspath(workdir)
        self.cfg = cfg
        self.config_source = config_source
        self.data = data
        self.runner = runner
        self.force = set(force)
        self.model_name = model_name
        self.serve_check = serve_check
        self.c3d_weights = c3d_weights
        self.random_c3d = random_c3d
        self.timings: Dict[str, float] = {}
        self.statuses: Dict[str, str] = {}

    # -- paths -----------------------------------------------------------
    def stage_dir(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.stage_dir("featuregen"), "data")

    def run_dir(self, mode: str) -> str:
        return os.path.join(self.stage_dir("trainer"), mode)

    def stage_outputs(self, name: str) -> dict:
        """The outputs a stage recorded in its stage.json ({} if it has not finished)."""
        return _read_json(os.path.join(self.stage_dir(name), STAGE_FILE), {}).get("outputs") or {}

    @property
    def serving_base(self) -> str:
        return os.path.join(self.stage_dir("pusher"), "serving", self.model_name)

    def config_file(self, mode: str) -> str:
        path = os.path.join(self.workdir, f"config_{mode}.yaml")
        text = dataclasses.replace(self.cfg, supervision=mode).to_yaml()
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as fh:
                fh.write(text)
        return path

    # -- stage bodies ------------------------------------------------------
    def featuregen(self, folder: str) -> dict:
        beam = ["--runner", self.runner] if self.runner else []
        if self.data == "synth":
            raw = os.path.join(folder, "raw")
            vreloc(["synth", "--out", raw, "--seed", str(self.cfg.seed), "--dim", str(self.cfg.data.feature_dim)])
            src = raw
        else:
            src = os.path.abspath(self.data)
        hdf5 = os.path.join(src, ACTIVITYNET_HDF5)
        if os.path.exists(hdf5):
            vreloc(["ingest-activitynet", "--features", hdf5, "--splits", src, "--out", self.data_dir, *beam])
        elif os.path.exists(os.path.join(src, VIDEO_ANNOTATIONS)) and os.path.isdir(os.path.join(src, VIDEO_DIR)):
            if not (self.c3d_weights or self.random_c3d):
                raise StageFailed(f"--data {self.data} holds raw videos: give --c3d-weights FILE "
                                  f"(or --random-c3d for a demo)")
            weights = ["--c3d-weights", self.c3d_weights] if self.c3d_weights else ["--random-c3d"]
            vreloc(["extract-video", "--videos", os.path.join(src, VIDEO_DIR, "*"), "--annotations",
                    os.path.join(src, VIDEO_ANNOTATIONS), "--out", self.data_dir, *weights,
                    "--pca-components", str(self.cfg.data.feature_dim), *beam])
        else:
            raise StageFailed(f"--data {self.data}: expected an ActivityNet-format folder ({ACTIVITYNET_HDF5} and "
                              f"train/val/test.json) or a video folder ({VIDEO_ANNOTATIONS} in ActivityNet's "
                              f"annotation format and the videos under {VIDEO_DIR}/)")
        with open(os.path.join(self.data_dir, "manifest.json")) as fh:
            manifest = json.load(fh)
        return {"data_dir": self.data_dir, "splits": manifest.get("splits"), "feature_dim": manifest.get("feature_dim")}

    def trainer(self, folder: str) -> dict:
        out = {}
        for mode in MODES:
            vreloc(["train", "--config", self.config_file(mode), "--data", self.data_dir, "--out", self.run_dir(mode)])
            with open(os.path.join(self.run_dir(mode), "run.json")) as fh:
                out[mode] = json.load(fh)
        return out

    def evaluator(self, folder: str) -> dict:
        results: Dict[str, List[dict]] = {}
        for split in SPLITS:
            pairs = os.path.join(folder, f"pairs_{split}.json")
            rows = []
            for mode in MODES:
                out = os.path.join(folder, f"model_{mode}_{split}.json")
                vreloc(["evaluate", "--model", self.run_dir(mode), "--data", self.data_dir, "--split", split,
                        "--pairs", pairs, "--json", out])
                rows.append(_read_json(out))
            for method in BASELINES:
                out = os.path.join(folder, f"baseline_{method}_{split}.json")
                vreloc(["baseline", "--method", method, "--data", self.data_dir, "--split", split,
                        "--pairs", pairs, "--json", out])
                rows.append(_read_json(out))
            results[split] = rows
        keys = [f"model:{m}" for m in MODES] + [f"baseline:{b}" for b in BASELINES]
        frame_level_val = results["val"][keys.index("baseline:frame-level")]["average"]
        blessing = {}
        for mode, row in zip(MODES, results["val"]):
            blessing[mode] = {"blessed": row["average"] > frame_level_val, "val_average": row["average"],
                              "frame_level_val_average": frame_level_val}
        with open(os.path.join(folder, "blessing.json"), "w") as fh:
            json.dump(blessing, fh, indent=2)
        figures = {}
        for mode in MODES:  # what each model attends to on the first test pair (paper Figure 4)
            out = os.path.join(folder, f"figure4_{mode}_test_pair0.png")
            vreloc(["visualize", "--model", self.run_dir(mode), "--data", self.data_dir, "--split", "test",
                    "--pairs", os.path.join(folder, "pairs_test.json"), "--pair", "0", "--out", out])
            figures[mode] = out
        return {"results": results, "blessing": blessing, "figures": figures}

    def pusher(self, folder: str) -> dict:
        blessing = _read_json(os.path.join(self.stage_dir("evaluator"), "blessing.json"))
        pushed = {}
        for mode in MODES:
            if not blessing[mode]["blessed"]:
                log.warning("Pusher: the %s model is not blessed (val average %.1f <= frame-level %.1f); not pushed",
                            mode, blessing[mode]["val_average"], blessing[mode]["frame_level_val_average"])
                continue
            from serving.versions import next_version

            base = f"{self.serving_base}_{mode}"
            version = next_version(base)
            vreloc(["export", "--model", self.run_dir(mode), "--out", base, "--version", str(version)])
            pushed[mode] = {"base_path": base, "version": version}
        return {"pushed": pushed}

    # -- the engine ----------------------------------------------------------
    def stages(self) -> List[Stage]:
        cfg_hash = self.cfg.digest()
        return [
            Stage("featuregen", lambda: {"data": self.data, "seed": self.cfg.seed,
                                         "feature_dim": self.cfg.data.feature_dim,
                                         "source": None if self.data == "synth" else _tree_fingerprint(self.data),
                                         "c3d": self.c3d_weights and _tree_fingerprint_file(self.c3d_weights),
                                         "random_c3d": self.random_c3d},
                  self.featuregen),
            Stage("trainer", lambda: {"config": cfg_hash, "data": _stage_output_hash(self, "featuregen")},
                  self.trainer),
            Stage("evaluator", lambda: {"models": _stage_output_hash(self, "trainer"),
                                        "data": _stage_output_hash(self, "featuregen"), "seed": self.cfg.seed},
                  self.evaluator),
            # Pushed versions stay: a new push is the next version beside them.
            Stage("pusher", lambda: {"evaluation": _stage_output_hash(self, "evaluator")}, self.pusher,
                  keep=("serving",)),
        ]

    def run(self) -> int:
        os.makedirs(self.workdir, exist_ok=True)
        forced_from = min((STAGES.index(s) for s in self.force), default=len(STAGES))
        for index, stage in enumerate(self.stages()):
            folder = self.stage_dir(stage.name)
            os.makedirs(folder, exist_ok=True)
            inputs = stage.inputs()
            fingerprint = _hash(inputs)
            previous = _read_json(os.path.join(folder, STAGE_FILE), default=None)
            if previous and previous.get("fingerprint") == fingerprint and previous.get("status") == "done" \
                    and index < forced_from:
                self.statuses[stage.name] = "skipped (inputs and config unchanged)"
                print(f"[{stage.name}] skipped: inputs and config unchanged since {previous['finished']}")
                continue
            if previous and (previous.get("fingerprint") != fingerprint or index >= forced_from):
                # New inputs (or --force): start clean, so no stale run folder, pair list or model is reused.
                # The same inputs after an interrupted run keep their folder, so training resumes.
                _clear(folder, keep=stage.keep)
            print(f"[{stage.name}] running")
            start = time.time()
            try:
                outputs = stage.body(folder)
            except StageNotBuilt as exc:
                self.statuses[stage.name] = f"not built yet: {exc}"
                print(f"[{stage.name}] NOT BUILT YET: {exc}. The pipeline stops here; later stages: "
                      f"{', '.join(STAGES[index + 1:]) or 'none'}.")
                self._write_stage(folder, stage.name, inputs, fingerprint, None, start, status="not built")
                self._summary()
                # Not an error of the run: the project is still being built. Say so plainly, exit 0.
                return 0
            elapsed = time.time() - start
            self.timings[stage.name] = elapsed
            self._write_stage(folder, stage.name, inputs, fingerprint, outputs, start, status="done")
            self.statuses[stage.name] = f"done in {elapsed:.1f} s"
            print(f"[{stage.name}] done in {elapsed:.1f} s")
        if self.serve_check:
            self.serve_and_query()
        self._summary()
        return 0

    def _write_stage(self, folder, name, inputs, fingerprint, outputs, start, status):
        doc = {"stage": name, "status": status, "inputs": inputs, "fingerprint": fingerprint, "outputs": outputs,
               "config_hash": self.cfg.digest(), "config_source": self.config_source, "code_version": __version__,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start)),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - start, 3)}
        tmp = os.path.join(folder, STAGE_FILE + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
        os.replace(tmp, os.path.join(folder, STAGE_FILE))

    def serve_and_query(self) -> None:
        """Start the gRPC server on loopback, send one test pair with the stock client, stop the server."""
        pushed = self.stage_outputs("pusher").get("pushed")
        if not pushed:
            print("[serve] no blessed model was pushed; nothing to serve")
            return
        mode = "full" if "full" in pushed else next(iter(pushed))
        base = pushed[mode]["base_path"]
        with _served(base, f"{self.model_name}_{mode}") as address:
            q, r = _demo_pair(self.data_dir, os.path.join(self.workdir, "serve_check"))
            print(f"[serve] model {self.model_name}_{mode} at {address}; querying with the stock gRPC client")
            vreloc(["query", "--server", address, "--query", q, "--reference", r,
                    "--model-name", f"{self.model_name}_{mode}", "--timeout", "30"])

    def _summary(self) -> None:
        print()
        evaluation = self.stage_outputs("evaluator")
        results = evaluation.get("results")
        if results:
            from vreloc_tf.evaluate import format_table

            for split in SPLITS:
                print(f"Results on {split} (mAP@1, %):")
                print(format_table(results[split]))
                print()
        for mode, b in (evaluation.get("blessing") or {}).items():
            verdict = "blessed" if b["blessed"] else "NOT blessed"
            print(f"{mode} model: {verdict} (val average {b['val_average']:.1f} vs frame-level "
                  f"{b['frame_level_val_average']:.1f})")
        for mode, path in (evaluation.get("figures") or {}).items():
            print(f"Figure 4 ({mode}): {path}")
        stages = ", ".join(f"{k}: {v}" for k, v in self.statuses.items())
        print(f"pipeline summary: {stages}; work folder {self.workdir}")


def _stage_output_hash(run: PipelineRun, stage: str) -> Optional[str]:
    doc = _read_json(os.path.join(run.stage_dir(stage), STAGE_FILE), default=None)
    return None if not doc else _hash([doc.get("outputs"), doc.get("finished")])


def _clear(folder: str, keep=()) -> None:
    import shutil

    for name in os.listdir(folder):
        if name in keep:
            continue
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _read_json(path: str, default=...):
    if not os.path.exists(path):
        if default is ...:
            raise FileNotFoundError(path)
        return default
    with open(path) as fh:
        return json.load(fh)


def _demo_pair(data_dir: str, folder: str):
    """A test-split query (its trimmed ground truth) and a same-class reference from another video, as .npy."""
    import numpy as np

    from vreloc_tf import schema

    os.makedirs(folder, exist_ok=True)
    recs = schema.read_records(data_dir, "test")
    query = recs[0]
    ref = next((r for r in recs[1:] if r.label == query.label and r.video_id != query.video_id), recs[-1])
    g0, g1 = query.groundtruth
    qp, rp = os.path.join(folder, "query.npy"), os.path.join(folder, "reference.npy")
    np.save(qp, query.features[g0:g1])
    np.save(rp, ref.features)
    print(f"[serve] query: test entry {query.entry_index} ({query.video_id}, {g1 - g0} features); "
          f"reference: test entry {ref.entry_index} ({ref.video_id}, {ref.length} features, "
          f"ground truth {list(ref.groundtruth)})")
    return qp, rp


@contextlib.contextmanager
def _served(base_path: str, model_name: str):
    """`vreloc serve` as a subprocess on a free loopback port, stopped with SIGTERM afterwards."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vreloc", "serve", "--model-base-path", base_path, "--model-name",
           model_name, "--port", str(port)]
    proc = subprocess.Popen(cmd)
    try:
        _wait_ready(f"127.0.0.1:{port}", model_name, proc)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) the pipeline in a work folder")
    run.add_argument("--workdir", required=True, help="run folder (created; reruns skip unchanged stages)")
    run.add_argument("--config", default="tiny", help="config file or name in configs/ (default: tiny)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    run.add_argument("--data", default="synth",
                     help="'synth' (generated ActivityNet-format data, the default), an ActivityNet-format folder "
                          "(sub_activitynet_v1-3.c3d.hdf5 + train/val/test.json), or a video folder "
                          "(annotations.json + videos/*, through extract-video)")
    weights = run.add_mutually_exclusive_group()
    weights.add_argument("--c3d-weights", metavar="FILE", help="Sports-1M C3D weights, for a video folder")
    weights.add_argument("--random-c3d", action="store_true", help="random C3D weights (demos and tests only)")
    run.add_argument("--runner", default=None, help="Beam runner for FeatureGen (default DirectRunner)")
    run.add_argument("--force", action="append", default=[], choices=STAGES,
                     help="rerun this stage (and the ones after it) even if its inputs did not change")
    run.add_argument("--model-name", default="vreloc", help="serving model name prefix (default: vreloc)")
    run.add_argument("--no-serve-check", action="store_true",
                     help="do not start the gRPC server and send a test query at the end")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    run = PipelineRun(args.workdir, cfg, args.config, args.data, args.runner, args.force, args.model_name,
                      serve_check=not args.no_serve_check, c3d_weights=args.c3d_weights, random_c3d=args.random_c3d)
    try:
        return run.run()
    except StageFailed as exc:
        print(f"pipeline failed: {exc}", file=sys.stderr)
        return 1
