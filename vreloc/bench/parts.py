"""The parts of `vreloc bench` (see vreloc/bench/driver.py, the driver): each runs in a process of its own,
``python -m vreloc.bench.parts --part NAME [--config C] [--quick]``, and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np

from pipeline import synth
from vreloc.bench.backbones import measure_backbones
from vreloc.bench.driver import PARTS
from vreloc.bench.records import measure_record_reads
from vreloc.bench.model import count_parameters, inference_latency_ms, matmul_gflops, random_batch, training_flops
from vreloc.bench.search import QUICK_SIZES, SIZES, search_at_sizes
from vreloc.bench.serving import run_benchmark
from vreloc_tf.data.artifacts import Dataset, Run, RunManifest
from vreloc_tf.config import CGBM_METHOD, apply_overrides, load_config
from vreloc_tf.contract import FEATURE_DIM, FRAMES_PER_FEATURE, PAPER_SHAPES as SHAPES
from vreloc_tf.model.decoding import decode_full, decode_full_np
from vreloc_tf.errors import add_debug_option, run_entry_point
from vreloc_tf.model.functional import build_model
from vreloc_tf.data.manifest import DataManifest
from vreloc_tf.data.schema import Record, encode_record
from vreloc_tf.search.relocalize import Relocalizer
from vreloc_tf.training.strategy import make_strategy, split_cpu
from vreloc_tf.training.fit import RelocTrainer, make_optimizer

LR_SWEEP = (100, 300, 1000, 3000)


def _dim(cfg) -> int:
    """The model's feature dim: the config's, or the paper's where the config leaves it to the data."""
    return cfg.data.feature_dim or SHAPES["feature_dim"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- parts (each runs in a fresh process) ---------------------------------------------

def part_matmul(cfg, quick: bool, config: str) -> dict:
    return {"matmul_gflops": matmul_gflops(repeats=3 if quick else 5)}


def _train_pairs_per_s(cfg, quick: bool, devices: int) -> dict:
    """model.fit under MirroredStrategy over ``devices`` logical CPU devices, on random full-size batches."""
    import keras
    import tensorflow as tf

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
    res = run_benchmark(config=config, lq=SHAPES["query_steps"], lr=SHAPES["reference_steps"],
                        requests=40 if quick else 200, clients=8, duration=3.0 if quick else 10.0)
    return {"inference": res["inference"], "in_process": res["in_process"], "grpc": res["grpc"],
            "grpc_overhead_p50_ms": res["grpc_overhead_p50_ms"], "throughput": res["throughput"],
            "peak_rss_mb": _peak_rss_mb()}


def part_ingest(cfg, quick: bool, config: str) -> dict:
    # heavy: Apache Beam, in the ingest part only: every part's peak RSS is its own
    from vreloc.bench.ingest import measure_ingest_records_per_s

    if not quick:
        return measure_ingest_records_per_s(dim=FEATURE_DIM)
    with tempfile.TemporaryDirectory(prefix="vreloc-bench-") as tmp:
        src = os.path.join(tmp, "synth")
        synth.generate(src, seed=0, dim=_dim(cfg))
        out = measure_ingest_records_per_s(synth_dir=src, tmp=tmp)
        out["dataset"] = f"default synthetic dataset at D = {_dim(cfg)}"
        return out


def part_records(cfg, quick: bool, config: str) -> dict:
    if quick:
        return measure_record_reads(records=3000, dim=32, steps=80, rounds=2)
    return measure_record_reads(records=150, dim=FEATURE_DIM, steps=SHAPES["reference_steps"])


def _cgbm(cfg):
    """The config's CGBM twin: Feng et al.'s model, loss and decoding at the config's model.cgbm sizes."""

    return apply_overrides(cfg, CGBM_METHOD)


def part_cgbm_train(cfg, quick: bool, config: str) -> dict:
    cgbm = _cgbm(cfg)
    return {**_train_pairs_per_s(cgbm, quick, 1), "parameters": count_parameters(cgbm, _dim(cfg))}


def part_cgbm_inference(cfg, quick: bool, config: str) -> dict:
    out = inference_latency_ms(_cgbm(cfg), SHAPES["query_steps"], SHAPES["reference_steps"], _dim(cfg),
                               runs=30 if quick else 100)
    return {**out, "peak_rss_mb": _peak_rss_mb()}


def part_backbones(cfg, quick: bool, config: str) -> dict:
    """Each backbone at its default batch (c3d 8 clips, clip 16 frames of 640x360), matmul interleaved."""

    out = measure_backbones(batches=1 if quick else 2, rounds=1 if quick else 3, matmul_repeats=3 if quick else 5)
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def part_search(cfg, quick: bool, config: str) -> dict:
    """Search latency at library sizes and the index job's records/s (see the module docstring)."""

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

    from pipeline import build_index  # heavy: Apache Beam, in the search part only: every part's peak RSS is its own

    data, run_dir = os.path.join(root, "data"), os.path.join(root, "run")
    os.makedirs(data)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(os.path.join(data, "test-00000-of-00001.tfrecord")) as w:
        for i in range(records):
            n = int(rng.integers(100, 301))
            w.write(encode_record(Record(f"gen{i}", "test", i, i % 200, (0, n), (0, 1),
                                         rng.standard_normal((n, dim), dtype=np.float32))))
    DataManifest(dim, fields={"frames_per_feature": FRAMES_PER_FEATURE}).write(data)
    run = Run.create(run_dir, cfg, RunManifest(data, dim, cfg.supervision), model)
    summary = build_index.run(os.path.join(root, "built"), Dataset.open(data), run, ["test"]).summary
    return {"records": records, "seconds": summary["seconds"], "job_seconds": summary["job_seconds"],
            "records_per_s": summary["records_per_second"]}


def _part_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.parts")
    add_debug_option(parser)
    parser.add_argument("--part", required=True, choices=PARTS)
    parser.add_argument("--config", default="paper_full")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.part == "train2":
        split_cpu(2)

    cfg = load_config(args.config)
    result = globals()[f"part_{args.part}"](cfg, args.quick, args.config)
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(_part_main, "python -m vreloc.bench.parts"))
