"""`vreloc bench`: measured throughput and latency of every stage, on this machine.

Each part runs in its own Python process (``python -m vreloc.bench --part NAME``),
so that one part's memory and thread pools do not colour another's figures, the
2-device part can split the CPU before TensorFlow starts, and each part's peak
resident memory is its own. The yardstick is this machine's dense matmul rate:
``train.fraction_of_matmul`` is the model's analytic training FLOP rate over it.

Parts (model figures use ``--config``, default ``paper_full``: D = 500, 40 heads):

=============  =====================================================================
matmul         dense float32 matmul GFLOP/s (vreloc_tf.model_bench.matmul_gflops)
train1/train2  training pairs/s at batch 128, Lq 16, Lr 300 on 1 and 2 logical CPU
               devices (the 2-device run is model.fit under MirroredStrategy)
inference      single-pair p50/p99 of the compiled predict function, and p50 for
               Lr = 100, 300, 1000, 3000 (growth must be linear in Lr)
decode         Eq. 20 decoding of one Lr = 1000 sequence (NumPy twin and in-graph)
grpc           Predict p50/p99 in process and over gRPC, requests/s with 8 clients
ingest         ingest-activitynet records/s (full: the benchmark geometry at D = 500;
               --quick: the small synthetic dataset)
backbones      per video backbone (c3d, clip; random weights, real input shapes): features/s,
               GFLOP/s, seconds of compute per minute of 25-fps video and the share of the matmul
               rate measured in the same process, interleaved (pipeline.bench_backbones); clip /
               c3d; PyAV decode time per minute of video, labelled apart (not backbone compute)
cgbm_train     Feng et al.'s CGBM (the config + vreloc_tf.config.CGBM_METHOD: model.cgbm's
               sizes, Feng's loss): training pairs/s as train1, beside ours
cgbm_inference CGBM single-pair p50/p99 as inference (Lq 16, Lr 300)
search         library search (vreloc_tf.search.bench) at 1k/10k/100k generated videos of
               100-300 steps, 32-d, tiny-config model: p50/p99, memory, latency growth
               exponent; index build records/s on the DirectRunner (1,000 records);
               --quick: 300/1k/3k videos. Not part of the default run (`--only search`).
=============  =====================================================================
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

from vreloc_tf.errors import add_debug_option, run_entry_point
from vreloc_tf.model_bench import PAPER_SHAPES as SHAPES

PARTS = ("matmul", "train1", "train2", "inference", "decode", "grpc", "ingest", "backbones", "cgbm_train",
         "cgbm_inference", "search")
DEFAULT_PARTS = PARTS[:-1]  # search builds a 100k-video library: only with --only search
LR_SWEEP = (100, 300, 1000, 3000)


def _dim(cfg) -> int:
    """The model's feature dim: the config's, or the paper's where the config leaves it to the data."""
    return cfg.data.feature_dim or SHAPES["feature_dim"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- parts (each runs in a fresh process) ---------------------------------------------

def part_matmul(cfg, quick: bool, config: str) -> dict:
    from vreloc_tf.model_bench import matmul_gflops

    return {"matmul_gflops": matmul_gflops(repeats=3 if quick else 5)}


def _train_pairs_per_s(cfg, quick: bool, devices: int) -> dict:
    """model.fit under MirroredStrategy over ``devices`` logical CPU devices, on random full-size batches."""
    import keras
    import tensorflow as tf

    from vreloc_tf.model import build_model
    from vreloc_tf.model_bench import random_batch, training_flops
    from vreloc_tf.strategy import make_strategy
    from vreloc_tf.training import RelocTrainer, make_optimizer

    strategy = make_strategy(devices)
    dim = _dim(cfg)
    data = random_batch(SHAPES["batch_size"], SHAPES["query_steps"], SHAPES["reference_steps"], dim)
    dataset = tf.data.Dataset.from_tensors(data).repeat()
    with strategy.scope():
        trainer = RelocTrainer(cfg, build_model(cfg, dim))
        trainer.compile(optimizer=make_optimizer(cfg))

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: List[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    timer = StepTimes()
    steps = 3 if quick else 6
    trainer.fit(dataset, epochs=1, steps_per_epoch=steps + 1, callbacks=[timer], verbose=0)
    timed = timer.times[1:]  # the first step traces and compiles
    median = float(np.median(timed))
    pairs_per_s = SHAPES["batch_size"] / median
    gflop_per_pair = training_flops(cfg, dim, SHAPES["query_steps"], SHAPES["reference_steps"]) / 1e9
    return {"devices": strategy.num_replicas_in_sync, "pairs_per_s": pairs_per_s,
            "step_s_median": median, "first_step_s": timer.times[0], "gflop_per_pair": gflop_per_pair,
            "achieved_gflops": pairs_per_s * gflop_per_pair, "peak_rss_mb": _peak_rss_mb()}


def part_train1(cfg, quick: bool, config: str) -> dict:
    return _train_pairs_per_s(cfg, quick, 1)


def part_train2(cfg, quick: bool, config: str) -> dict:
    return _train_pairs_per_s(cfg, quick, 2)


def part_inference(cfg, quick: bool, config: str) -> dict:
    from vreloc_tf.model_bench import inference_latency_ms

    dim = _dim(cfg)
    out = inference_latency_ms(cfg, SHAPES["query_steps"], SHAPES["reference_steps"], dim, runs=30 if quick else 100)
    by_lr = {}
    for lr in LR_SWEEP:
        by_lr[str(lr)] = inference_latency_ms(cfg, SHAPES["query_steps"], lr, dim, runs=5 if quick else 20)["p50_ms"]
    ms = np.array([by_lr[str(lr)] for lr in LR_SWEEP])
    # Growth exponent k of latency ~ Lr^k (log-log least squares): 1 = linear, 2 = quadratic.
    exponent = float(np.polyfit(np.log(np.array(LR_SWEEP, float)), np.log(ms), 1)[0])
    return {**out, "latency_ms_by_lr": by_lr, "latency_growth_exponent": exponent,
            "ms_per_1000_steps_by_lr": {str(lr): 1000 * m / lr for lr, m in zip(LR_SWEEP, ms)},
            "peak_rss_mb": _peak_rss_mb()}


def part_decode(cfg, quick: bool, config: str) -> dict:
    import tensorflow as tf

    from vreloc_tf.decoding import decode_full, decode_full_np

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(1, 1000)).astype(np.float32)
    lengths = np.array([1000], np.int32)
    limit = cfg.decode.full_max_length
    runs = 20 if quick else 100
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        decode_full_np(probs, lengths, limit)
        times.append(1000 * (time.perf_counter() - t0))
    graph = tf.function(lambda p, n: decode_full(p, n, limit))
    graph(probs, lengths)
    gtimes = []
    for _ in range(runs):
        t0 = time.perf_counter()
        [t.numpy() for t in graph(probs, lengths)]
        gtimes.append(1000 * (time.perf_counter() - t0))
    return {"decode_ms_lr1000": float(np.median(times)), "decode_graph_ms_lr1000": float(np.median(gtimes)),
            "max_length": limit}


def part_grpc(cfg, quick: bool, config: str) -> dict:
    from serving.bench_serving import run_benchmark

    res = run_benchmark(config=config, lq=SHAPES["query_steps"], lr=SHAPES["reference_steps"],
                        requests=40 if quick else 200, clients=8, duration=3.0 if quick else 10.0)
    return {"inference": res["inference"], "in_process": res["in_process"], "grpc": res["grpc"],
            "grpc_overhead_p50_ms": res["grpc_overhead_p50_ms"], "throughput": res["throughput"],
            "peak_rss_mb": _peak_rss_mb()}


def part_ingest(cfg, quick: bool, config: str) -> dict:
    from pipeline import synth
    from pipeline.bench_ingest import measure_ingest_records_per_s

    if not quick:
        return measure_ingest_records_per_s(dim=500)
    with tempfile.TemporaryDirectory(prefix="vreloc-bench-") as tmp:
        src = os.path.join(tmp, "synth")
        synth.generate(src, seed=0, dim=_dim(cfg))
        out = measure_ingest_records_per_s(synth_dir=src, tmp=tmp)
        out["dataset"] = f"default synthetic dataset at D = {_dim(cfg)}"
        return out


def _cgbm(cfg):
    """The config's CGBM twin: Feng et al.'s model, loss and decoding at the config's model.cgbm sizes."""
    from vreloc_tf.config import CGBM_METHOD, apply_overrides

    return apply_overrides(cfg, CGBM_METHOD)


def part_cgbm_train(cfg, quick: bool, config: str) -> dict:
    from vreloc_tf.model_bench import count_parameters

    cgbm = _cgbm(cfg)
    return {**_train_pairs_per_s(cgbm, quick, 1), "parameters": count_parameters(cgbm, _dim(cfg))}


def part_cgbm_inference(cfg, quick: bool, config: str) -> dict:
    from vreloc_tf.model_bench import inference_latency_ms

    out = inference_latency_ms(_cgbm(cfg), SHAPES["query_steps"], SHAPES["reference_steps"], _dim(cfg),
                               runs=30 if quick else 100)
    return {**out, "peak_rss_mb": _peak_rss_mb()}


def part_backbones(cfg, quick: bool, config: str) -> dict:
    """Each backbone at its default batch (c3d 8 clips, clip 16 frames of 640x360), matmul interleaved."""
    from pipeline.bench_backbones import measure_backbones

    out = measure_backbones(batches=1 if quick else 2, rounds=1 if quick else 3, matmul_repeats=3 if quick else 5)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


_BACKBONE_KEYS = ("seconds_per_video_minute", "seconds_per_video_minute_range", "features_per_s", "gflops_per_s",
                  "gflop_per_feature", "gflop_per_video_minute", "fraction_of_matmul", "fraction_of_matmul_range",
                  "fraction_of_matmul_per_cpu_second", "batch_size", "end_to_end_seconds_per_video_minute")


def _backbones_summary(b: Optional[dict]) -> dict:
    """``backbones.*`` of the report: every promised key, None where the part did not run."""
    b = b if b and "error" not in b else {}
    decode = b.get("decode") or {}
    return {
        **{name: {k: (b.get(name) or {}).get(k) for k in _BACKBONE_KEYS} for name in ("c3d", "clip")},
        "clip_over_c3d": b.get("clip_over_c3d"),
        "clip_over_c3d_analytic": b.get("clip_over_c3d_analytic"),
        "clip_over_c3d_end_to_end": b.get("clip_over_c3d_end_to_end"),
        "video_fps": b.get("video_fps"),
        "matmul_gflops": b.get("matmul_gflops"),
        "matmul_rule": b.get("matmul_rule"),
        "decode": {"video": decode.get("video"),
                   "c3d_seconds_per_video_minute": (decode.get("c3d") or {}).get("seconds_per_video_minute"),
                   "clip_seconds_per_video_minute": (decode.get("clip") or {}).get("seconds_per_video_minute")},
        "conditions": b.get("conditions"),
    }


# -- the driver ------------------------------------------------------------------------

def part_search(cfg, quick: bool, config: str) -> dict:
    """Search latency at library sizes and the index job's records/s (see the module docstring)."""
    from vreloc_tf.config import load_config
    from vreloc_tf.model import build_model
    from vreloc_tf.search.bench import QUICK_SIZES, SIZES, search_at_sizes
    from vreloc_tf.search.relocalize import Relocalizer

    tiny, dim = load_config("tiny"), 32
    model = build_model(tiny, dim)
    reloc = Relocalizer(model, tiny.decode_rule, tiny.decode_max_length, tiny.data.max_window, dim, {})
    with tempfile.TemporaryDirectory() as root:
        out = search_at_sizes(root, reloc, dim, QUICK_SIZES if quick else SIZES, queries=20 if quick else 50)
        out["build"] = _index_build_rate(root, tiny, model, dim, 300 if quick else 1000)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _index_build_rate(root: str, cfg, model, dim: int, records: int) -> dict:
    """records/s of `vreloc index build` (the Beam job, DirectRunner) over generated TFRecords."""
    import tensorflow as tf

    from pipeline import build_index
    from vreloc_tf.artifacts import Run, RunManifest
    from vreloc_tf.files import write_json_atomic
    from vreloc_tf.schema import MANIFEST_NAME, Record, encode_record

    data, run_dir = os.path.join(root, "data"), os.path.join(root, "run")
    os.makedirs(data)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(os.path.join(data, "test-00000-of-00001.tfrecord")) as w:
        for i in range(records):
            n = int(rng.integers(100, 301))
            w.write(encode_record(Record(f"gen{i}", "test", i, i % 200, (0, n), (0, 1),
                                         rng.standard_normal((n, dim), dtype=np.float32))))
    write_json_atomic(os.path.join(data, MANIFEST_NAME), {"feature_dim": dim, "frames_per_feature": 16})
    Run.create(run_dir, cfg, RunManifest(data, dim, cfg.supervision), model)
    summary = build_index.run(os.path.join(root, "built"), data, run_dir, ["test"])
    return {"records": records, "seconds": summary["seconds"], "job_seconds": summary["job_seconds"],
            "records_per_s": summary["records_per_second"]}


def run_part(name: str, config: str, quick: bool, timeout: float = 900) -> dict:
    cmd = [sys.executable, "-m", "vreloc.bench", "--part", name, "--config", config] + (["--quick"] if quick else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"error": f"part {name} exited {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["part_seconds"] = time.perf_counter() - t0
    return result


def collect(config: str, quick: bool, parts=PARTS, progress=print) -> dict:
    raw: Dict[str, dict] = {}
    for name in parts:
        progress(f"bench: {name} ...")
        raw[name] = run_part(name, config, quick, timeout=3600) if name == "search" else run_part(name, config, quick)
    return summarize(raw, config, quick)


def summarize(raw: Dict[str, dict], config: str, quick: bool) -> dict:
    from serving.bench_serving import serving_ratios

    get = lambda part, key, default=None: raw.get(part, {}).get(key, default)  # noqa: E731
    matmul = get("matmul", "matmul_gflops")
    train1 = raw.get("train1", {})
    out = {
        "config": config, "quick": quick, "cpus": os.cpu_count(),
        "machine": os.uname().machine, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "matmul_gflops": matmul,
        "train": {"pairs_per_s": train1.get("pairs_per_s"), "pairs_per_s_2_devices": get("train2", "pairs_per_s"),
                  "gflop_per_pair": train1.get("gflop_per_pair"),
                  "fraction_of_matmul": (train1["achieved_gflops"] / matmul) if matmul and "achieved_gflops" in train1
                  else None},
        "inference": {"p50_ms": get("inference", "p50_ms"), "p99_ms": get("inference", "p99_ms")},
        "grpc": {"p50_ms": (get("grpc", "grpc") or {}).get("p50_ms"), "p99_ms": (get("grpc", "grpc") or {}).get("p99_ms"),
                 "in_process_p50_ms": (get("grpc", "in_process") or {}).get("p50_ms"),
                 "overhead_p50_ms": get("grpc", "grpc_overhead_p50_ms"),
                 "requests_per_s_8_clients": (get("grpc", "throughput") or {}).get("requests_per_s"),
                 # the compiled model timed in the same process, interleaved with the gRPC samples: the
                 # ratios below see one load, unlike grpc.p50_ms / inference.p50_ms (another process, later)
                 "model_p50_ms": (get("grpc", "inference") or {}).get("p50_ms")},
        "latency_ms_by_lr": get("inference", "latency_ms_by_lr"),
        "latency_growth_exponent": get("inference", "latency_growth_exponent"),
        "decode_ms_lr1000": get("decode", "decode_ms_lr1000"),
        "decode_graph_ms_lr1000": get("decode", "decode_graph_ms_lr1000"),
        "ingest": {"records_per_s": get("ingest", "records_per_s"), "records": get("ingest", "records"),
                   "seconds": get("ingest", "seconds")},
        "backbones": _backbones_summary(raw.get("backbones")),
        "c3d": {"clips_per_s": (get("backbones", "c3d") or {}).get("features_per_s")},  # = backbones.c3d.features_per_s
        "cgbm": {"parameters": get("cgbm_train", "parameters"),
                 "train": {"pairs_per_s": get("cgbm_train", "pairs_per_s"),
                           "gflop_per_pair": get("cgbm_train", "gflop_per_pair")},
                 "inference": {"p50_ms": get("cgbm_inference", "p50_ms"), "p99_ms": get("cgbm_inference", "p99_ms")}},
        "peak_rss_mb": {"train": max(filter(None, [train1.get("peak_rss_mb"), get("train2", "peak_rss_mb")]),
                                     default=None),
                        "serve": get("grpc", "peak_rss_mb")},
        "search": {k: raw["search"].get(k) for k in ("sizes", "latency_growth_exponent", "ann_growth_exponent", "build")}
        if "search" in raw and "error" not in raw["search"] else None,
        "errors": {k: v["error"] for k, v in raw.items() if "error" in v},
        "raw": raw,
    }
    g = out["grpc"]
    ratios = serving_ratios(g["model_p50_ms"], g["p50_ms"], g["requests_per_s_8_clients"])
    g["p50_over_model_p50"] = ratios["grpc_p50_over_inference_p50"]
    g["requests_per_s_over_one_at_a_time"] = ratios["requests_per_s_over_one_at_a_time"]
    return out


def format_report(r: dict) -> str:
    def f(v, fmt="{:.1f}"):
        return "n/a" if v is None else fmt.format(v)

    t, g = r["train"], r["grpc"]
    lines = [
        f"vreloc bench ({'quick' if r['quick'] else 'full'}; config {r['config']}; {r['cpus']} CPUs {r['machine']}; "
        f"{r['date']})",
        f"  dense matmul (yardstick)        {f(r['matmul_gflops'])} GFLOP/s",
        f"  training, 1 device              {f(t['pairs_per_s'])} pairs/s  (batch {SHAPES['batch_size']}, "
        f"Lq {SHAPES['query_steps']}, Lr {SHAPES['reference_steps']}; "
        f"{f(t['gflop_per_pair'], '{:.2f}')} GFLOP/pair; {f(t['fraction_of_matmul'] and 100 * t['fraction_of_matmul'])}% "
        f"of matmul rate)",
        f"  training, 2 logical devices     {f(t['pairs_per_s_2_devices'])} pairs/s  (MirroredStrategy)",
        f"  inference, one pair             p50 {f(r['inference']['p50_ms'], '{:.2f}')} ms  "
        f"p99 {f(r['inference']['p99_ms'], '{:.2f}')} ms",
        f"  gRPC Predict, one pair          p50 {f(g['p50_ms'], '{:.2f}')} ms  p99 {f(g['p99_ms'], '{:.2f}')} ms  "
        f"(adds {f(g['overhead_p50_ms'], '{:.2f}')} ms to the in-process p50)",
        f"  gRPC / compiled model, p50      {f(g['p50_over_model_p50'], '{:.2f}')}  (model timed interleaved: "
        f"{f(g['model_p50_ms'], '{:.2f}')} ms)",
        f"  gRPC, 8 concurrent clients      {f(g['requests_per_s_8_clients'])} requests/s  "
        f"({f(g['requests_per_s_over_one_at_a_time'], '{:.2f}')} x one at a time)",
        "  latency by Lr                   " + (", ".join(f"{k}: {v:.1f} ms" for k, v in r["latency_ms_by_lr"].items())
                                              if r["latency_ms_by_lr"] else "n/a")
        + f"  (growth ~ Lr^{f(r['latency_growth_exponent'], '{:.2f}')}; 1 = linear)",
        f"  Eq. 20 decoding, Lr 1000        {f(r['decode_ms_lr1000'], '{:.2f}')} ms NumPy, "
        f"{f(r['decode_graph_ms_lr1000'], '{:.2f}')} ms in graph",
        f"  ingest-activitynet              {f(r['ingest']['records_per_s'])} records/s "
        f"({r['ingest']['records']} records in {f(r['ingest']['seconds'])} s)",
        *_backbone_lines(r),
        f"  CGBM (Feng et al.), training    {f(r['cgbm']['train']['pairs_per_s'])} pairs/s  (1 device; ours "
        f"{f(t['pairs_per_s'])})",
        f"  CGBM inference, one pair        p50 {f(r['cgbm']['inference']['p50_ms'], '{:.2f}')} ms  "
        f"p99 {f(r['cgbm']['inference']['p99_ms'], '{:.2f}')} ms  (ours p50 {f(r['inference']['p50_ms'], '{:.2f}')} ms)",
        f"  peak memory                     train {f(r['peak_rss_mb']['train'], '{:.0f}')} MB, "
        f"serve {f(r['peak_rss_mb']['serve'], '{:.0f}')} MB (server and load clients in one process)",
    ]
    if r.get("search"):
        sr = r["search"]
        for n, v in sr["sizes"].items():
            lines.append(f"  search, {int(n):>7,} videos        p50 {v['search']['p50_ms']:.1f} ms  p99 "
                         f"{v['search']['p99_ms']:.1f} ms  (ANN p50 {v['ann']['p50_ms']:.2f} ms; {v['windows']:,} "
                         f"windows, {v['faiss']}; index {v['index_bytes'] / 2**20:.0f} MB on disk, FAISS "
                         f"{v['faiss_bytes'] / 2**20:.0f} MB in memory)")
        lines.append(f"  search latency growth           ~ videos^{sr['latency_growth_exponent']:.2f} "
                     f"(ANN alone ^{sr['ann_growth_exponent']:.2f})")
        lines.append(f"  index build (DirectRunner)      {f(sr['build']['records_per_s'])} records/s "
                     f"({sr['build']['records']} records)")
    for part, err in r["errors"].items():
        lines.append(f"  ERROR in {part}: {err}")
    return "\n".join(lines)


def _backbone_lines(r: dict) -> List[str]:
    from pipeline.bench_backbones import format_lines

    raw = (r.get("raw") or {}).get("backbones")
    if raw and "error" not in raw:
        return ["  backbones (random weights, real input shapes; matmul measured in the same process)"] \
            + format_lines(raw, indent="    ", column=38)
    return ["  backbones                       n/a s per minute of video (part not run)"]


def _part_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench")
    add_debug_option(parser)
    parser.add_argument("--part", required=True, choices=PARTS)
    parser.add_argument("--config", default="paper_full")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.part == "train2":
        from vreloc_tf.strategy import split_cpu

        split_cpu(2)
    from vreloc_tf.config import load_config

    cfg = load_config(args.config)
    result = globals()[f"part_{args.part}"](cfg, args.quick, args.config)
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(_part_main, "python -m vreloc.bench"))
