"""``python -m vreloc.bench.model``: the model's size and speed on this machine, one table.

How fast is the model here? Matmul rate, analytic FLOPs, training pairs/s, inference latency:
the measuring functions and, at the end, their command line (``vreloc bench`` runs the same
functions part by part, each in its own process: vreloc/bench/parts.py).

Why one module: ``vreloc bench`` and ``python -m vreloc.bench.model`` print the model's
throughput next to the dense-matmul rate *measured in the same run*, so numbers from a
shared, noisy machine can be read relative to what the CPU delivered at that moment.

FLOPs count multiply-adds as 2 and only the matmul-like work (convolutions, projections,
attention products, LSTM gates, output layer); a training step is counted as 3x the
forward pass (forward + input and weight gradients), the usual approximation.
This module is TensorFlow-specific (tf.function, GradientTape), unlike the model itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, Optional

import numpy as np

from serving.server import set_tensorflow_threads
from vreloc_tf.config import Config, load_config
from vreloc_tf.contract import (GROUNDTRUTH, INPUT_NAMES, PAPER_SHAPES, PROBABILITIES, QUERY, QUERY_LENGTH, REFERENCE,
                                REFERENCE_LENGTH)
from vreloc_tf.errors import InputError, add_debug_option, run_entry_point
from vreloc_tf.model.losses import total_loss
from vreloc_tf.model.functional import build_model, head_groups

# The paper's training batch (Implementation Details), a typical query, a full window, D = 500.


# ---------------------------------------------------------------------------
# Analytic counts
# ---------------------------------------------------------------------------

def _groups(cfg: Config):
    return head_groups(cfg)


SIMILARITY_FEATURES = 6  # width of layers.SimilarityFeatures' output


def _cgbm_parameters(cfg: Config, feature_dim: int) -> int:
    """CGBM (vreloc_tf.model.cgbm): video LSTM, matching (attention, gates, bilinear, two LSTMs), pointer LSTM, Dense."""
    c = cfg.model.cgbm
    m, u, k = c.memory_dim, c.attention_dim, c.bilinear_factors
    total = 4 * m * (feature_dim + m) + 4 * m  # the video LSTM, shared by query and reference
    total += m * u + (m + u) * u + u + u  # attention: query keys (no bias), state/input keys + bias, score
    total += 2 * (m * m + m)  # cross gating: the reference's and the query's gate
    total += m * m * k + m * k  # bilinear matching: one shared projection
    total += 2 * (4 * u * (m + u) + 4 * u)  # forward and backward matching LSTMs (input = bilinear output, width m)
    total += 4 * u * (2 * u + u) + 4 * u  # localization LSTM on [forward, backward]
    total += u * 4 + 4  # Dense(4)
    return total


def _cgbm_forward_flops(cfg: Config, feature_dim: int, lq: int, lr: int) -> int:
    c = cfg.model.cgbm
    m, u, k = c.memory_dim, c.attention_dim, c.bilinear_factors
    flops = 2 * 4 * m * (feature_dim + m) * (lq + lr)  # video LSTM
    flops += 2 * lq * m * u + 2 * lr * m * u + 2 * lr * m * m  # query keys, reference keys, query gates (once)
    per_step = (2 * u * u + 2 * lq * u + 2 * lq * m  # state keys, scores, attended query
                + 2 * m * m  # the reference gate
                + 2 * 2 * m * m * k + 2 * m * k  # bilinear: two projections, product and sum
                + 2 * 4 * u * (m + u))  # matching LSTM
    flops += 2 * lr * per_step  # forward and backward
    flops += 2 * lr * 4 * u * (2 * u + u) + 2 * lr * u * 4  # localization LSTM, Dense(4)
    return int(flops)


def count_parameters(cfg: Config, feature_dim: int) -> int:
    """Trainable parameters of ``build_model(cfg, feature_dim)``, from the architecture alone."""
    if cfg.model.architecture == "cgbm":
        return _cgbm_parameters(cfg, feature_dim)
    m = cfg.model
    dh, dl, k = m.hidden_dim, m.lstm_dim, m.encoder_kernel_size
    total = 2 * (k * feature_dim * dh + dh + 2 * dh)  # two encoders: conv + bias + layer norm
    heads = 0
    for n, kernel, _d, f in _groups(cfg):
        total += 2 * kernel * dh * n * f + n * f  # reference and query convolutions, query bias
        heads += n
    satt = m.self_attention_heads * m.self_attention_key_dim if m.self_attention else 0
    if m.self_attention:
        total += dh * 3 * satt
    lstm_in = heads + satt + (SIMILARITY_FEATURES if m.similarity_features else 0)  # parameter-free features
    total += 2 * (4 * dh * (lstm_in + dh) + 4 * dh)  # BiLSTM
    total += 4 * dl * (2 * dh + dl) + 4 * dl  # LSTM
    total += dl * 4 + 4  # Dense(4)
    return total


def forward_flops(cfg: Config, feature_dim: int, query_steps: int, reference_steps: int) -> int:
    """Matmul-like FLOPs of one forward pass for one (query, reference) pair."""
    if cfg.model.architecture == "cgbm":
        return _cgbm_forward_flops(cfg, feature_dim, query_steps, reference_steps)
    m = cfg.model
    dh, dl = m.hidden_dim, m.lstm_dim
    lq, lr = query_steps, reference_steps
    flops = 2 * m.encoder_kernel_size * feature_dim * dh * (lq + lr)
    heads = 0
    for n, kernel, _d, f in _groups(cfg):
        flops += 2 * kernel * dh * n * f * (lq + lr)  # head convolutions
        flops += 2 * lr * lq * n * f  # attention maps
        heads += n
    satt = m.self_attention_heads * m.self_attention_key_dim if m.self_attention else 0
    if m.self_attention:
        flops += 2 * lr * dh * 3 * satt + 2 * 2 * lr * lr * satt  # projections, QK^T, AV
    sim = SIMILARITY_FEATURES if m.similarity_features else 0
    if sim:
        flops += 2 * 2 * lr * lq * feature_dim  # cosines of the raw and the centred query
    flops += 2 * 2 * lr * 4 * dh * (heads + satt + sim + dh)  # BiLSTM, both directions
    flops += 2 * lr * 4 * dl * (2 * dh + dl)  # LSTM
    flops += 2 * lr * dl * 4
    return int(flops)


def training_flops(cfg: Config, feature_dim: int, query_steps: int, reference_steps: int) -> int:
    """FLOPs of one training step per pair (3x forward)."""
    return 3 * forward_flops(cfg, feature_dim, query_steps, reference_steps)


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def matmul_rates(size: int = 2048, repeats: int = 5, rounds: int = 3) -> dict:
    """This machine's dense float32 matmul rate now: ``gflops`` (the best round, wall time) and
    ``gflops_per_cpu_second`` (all rounds, CPU time of this process, which a busy neighbour disturbs less)."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    flop = repeats * 2 * size ** 3
    best, cpu_total = 0.0, 0.0
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            c = mm(a, b)
        c.numpy()
        best = max(best, flop / (time.perf_counter() - t0) / 1e9)
        cpu_total += time.process_time() - c0
    return {"gflops": best, "gflops_per_cpu_second": rounds * flop / max(cpu_total, 1e-9) / 1e9}


def matmul_gflops(size: int = 2048, repeats: int = 5, rounds: int = 3) -> float:
    """Best dense float32 matmul rate (GFLOP/s) of this machine right now."""
    return matmul_rates(size, repeats, rounds)["gflops"]


def random_batch(batch_size: int, query_steps: int, reference_steps: int, feature_dim: int, seed: int = 0):
    """A full-length random batch in the model's input format (+ groundtruth)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, reference_steps // 2, size=batch_size)
    end = start + rng.integers(1, reference_steps // 2, size=batch_size)
    return {
        QUERY: rng.normal(size=(batch_size, query_steps, feature_dim)).astype("float32"),
        QUERY_LENGTH: np.full(batch_size, query_steps, "int32"),
        REFERENCE: rng.normal(size=(batch_size, reference_steps, feature_dim)).astype("float32"),
        REFERENCE_LENGTH: np.full(batch_size, reference_steps, "int32"),
        GROUNDTRUTH: np.stack([start, end], axis=1).astype("int32"),
    }


def training_pairs_per_second(cfg: Config, batch_size: int = PAPER_SHAPES["batch_size"],
                              query_steps: int = PAPER_SHAPES["query_steps"],
                              reference_steps: int = PAPER_SHAPES["reference_steps"],
                              feature_dim: int = PAPER_SHAPES["feature_dim"], steps: int = 3,
                              jit_compile: bool = False) -> Dict[str, float]:
    """Pairs/s of a full training step (forward, total_loss, gradients, Adam update).

    Returns the best and the median over ``steps`` timed steps (after one warm-up step).
    """
    import keras
    import tensorflow as tf

    model = build_model(cfg, feature_dim)
    optimizer = keras.optimizers.Adam(cfg.train.learning_rate, global_clipnorm=cfg.train.clip_norm)
    optimizer.build(model.trainable_variables)
    batch = {k: tf.constant(v) for k, v in random_batch(batch_size, query_steps, reference_steps,
                                                         feature_dim).items()}
    step_var = tf.Variable(cfg.loss.coattention_mask_after_steps, dtype=tf.int64)  # masks on

    @tf.function(jit_compile=jit_compile)
    def train_step(data):
        with tf.GradientTape() as tape:
            outputs = model({k: data[k] for k in INPUT_NAMES}, training=True)
            loss = total_loss(cfg, data, outputs[PROBABILITIES], step_var)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    t0 = time.perf_counter()
    train_step(batch).numpy()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(batch).numpy()
        times.append(time.perf_counter() - t0)
    return {"best_pairs_per_s": batch_size / min(times), "median_pairs_per_s": batch_size / float(np.median(times)),
            "first_step_s": compile_s}


def make_predict_function(model, jit_compile: bool = True):
    """A compiled inference function (XLA by default): far cheaper per call than model.predict."""
    import tensorflow as tf

    return tf.function(lambda inputs: model(inputs, training=False), jit_compile=jit_compile)


def inference_latency_ms(cfg: Config, query_steps: int = PAPER_SHAPES["query_steps"],
                         reference_steps: int = PAPER_SHAPES["reference_steps"],
                         feature_dim: int = PAPER_SHAPES["feature_dim"], runs: int = 50,
                         jit_compile: bool = True) -> Dict[str, float]:
    """Single-pair latency (ms) of a compiled predict function: p50 and p99 over ``runs`` calls."""
    import tensorflow as tf

    model = build_model(cfg, feature_dim)
    predict = make_predict_function(model, jit_compile)
    data = random_batch(1, query_steps, reference_steps, feature_dim)
    inputs = {k: tf.constant(data[k]) for k in INPUT_NAMES}
    for _ in range(3):
        predict(inputs)[PROBABILITIES].numpy()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predict(inputs)[PROBABILITIES].numpy()
        times.append(1000 * (time.perf_counter() - t0))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def inference_cost_by_batch(cfg: Config, batch_sizes=(1, 4), query_steps: int = PAPER_SHAPES["query_steps"],
                            reference_steps: int = PAPER_SHAPES["reference_steps"],
                            feature_dim: int = PAPER_SHAPES["feature_dim"], pairs: int = 40,
                            jit_compile: bool = True) -> Dict[str, float]:
    """Wall and CPU milliseconds per pair of the compiled predict function at each batch size (medians).

    Why CPU time: on a shared machine it is what a neighbour's load disturbs least, and cores
    divided by CPU time per pair bounds the pairs/s a server can reach (serving/README.md uses it
    to choose TensorFlow's thread counts and batching).
    """
    import tensorflow as tf

    model = build_model(cfg, feature_dim)
    predict = make_predict_function(model, jit_compile)
    out: Dict[str, float] = {}
    for size in batch_sizes:
        data = random_batch(int(size), query_steps, reference_steps, feature_dim)
        inputs = {k: tf.constant(data[k]) for k in INPUT_NAMES}
        for _ in range(3):
            predict(inputs)[PROBABILITIES].numpy()
        walls, cpus = [], []
        for _ in range(max(pairs // int(size), 8)):
            t0, c0 = time.perf_counter(), time.process_time()
            predict(inputs)[PROBABILITIES].numpy()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        out[f"batch_{size}_wall_ms_per_pair"] = float(1000 * np.median(walls) / size)
        out[f"batch_{size}_cpu_ms_per_pair"] = float(1000 * np.median(cpus) / size)
    return out


def run_benchmark(cfg: Config, batch_size: int = PAPER_SHAPES["batch_size"],
                  query_steps: int = PAPER_SHAPES["query_steps"], reference_steps: int = PAPER_SHAPES["reference_steps"],
                  feature_dim: int = PAPER_SHAPES["feature_dim"], train_steps: int = 3, latency_runs: int = 50,
                  jit_train: bool = False, jit_predict: bool = True) -> Dict[str, float]:
    """Every figure of the benchmark, as a flat dict (what ``vreloc bench`` prints)."""
    results: Dict[str, float] = {}
    results["parameters"] = count_parameters(cfg, feature_dim)
    before = matmul_gflops()
    results["train_gflop_per_pair"] = training_flops(cfg, feature_dim, query_steps, reference_steps) / 1e9
    train = training_pairs_per_second(cfg, batch_size, query_steps, reference_steps, feature_dim, train_steps,
                                      jit_train)
    results.update({f"train_{k}": v for k, v in train.items()})
    latency = inference_latency_ms(cfg, query_steps, reference_steps, feature_dim, latency_runs, jit_predict)
    results.update({f"inference_{k}": v for k, v in latency.items()})
    after = matmul_gflops()
    # On a shared machine the rate swings with other load: keep both and compare with the best.
    results["matmul_gflops_before"], results["matmul_gflops_after"] = before, after
    results["matmul_gflops"] = max(before, after)
    for which in ("best", "median"):
        achieved = results[f"train_{which}_pairs_per_s"] * results["train_gflop_per_pair"]
        results[f"train_{which}_gflops"] = achieved
        results[f"train_{which}_fraction_of_matmul"] = achieved / results["matmul_gflops"]
    return results


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.model", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--config", default="paper_full", help="config name or path (default paper_full)")
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    parser.add_argument("--batch-size", type=int, default=PAPER_SHAPES["batch_size"])
    parser.add_argument("--query-steps", type=int, default=PAPER_SHAPES["query_steps"])
    parser.add_argument("--reference-steps", type=int, default=PAPER_SHAPES["reference_steps"])
    parser.add_argument("--feature-dim", type=int, default=PAPER_SHAPES["feature_dim"])
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--jit-train", action="store_true", help="compile the training step with XLA")
    parser.add_argument("--no-jit-predict", action="store_true", help="run inference without XLA")
    parser.add_argument("--inference-batches", default=None, metavar="B1,B2,...",
                        help="only time the compiled predict function at these batch sizes (wall and CPU ms per pair)")
    parser.add_argument("--intra-op-threads", type=int, default=None,
                        help="TensorFlow intra-op threads for this process (default: TensorFlow's choice)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    if args.intra_op_threads is not None:
        set_tensorflow_threads(args.intra_op_threads)
    if args.inference_batches:
        try:
            sizes = [int(b) for b in args.inference_batches.split(",")]
        except ValueError:
            raise InputError(f"--inference-batches {args.inference_batches!r}: expected comma-separated batch "
                             f"sizes, e.g. 1,8,32") from None
        costs = inference_cost_by_batch(cfg, sizes, args.query_steps, args.reference_steps, args.feature_dim,
                                        jit_compile=not args.no_jit_predict)
        print(f"config {args.config}  Lq={args.query_steps} Lr={args.reference_steps} D={args.feature_dim}  "
              f"intra-op threads {args.intra_op_threads if args.intra_op_threads is not None else 'auto'}")
        for key, value in costs.items():
            print(f"{key:32s} {value:,.2f}")
        return 0
    results = run_benchmark(cfg, args.batch_size, args.query_steps, args.reference_steps, args.feature_dim,
                            args.train_steps, args.latency_runs, args.jit_train, not args.no_jit_predict)
    print(f"config {args.config}  B={args.batch_size} Lq={args.query_steps} Lr={args.reference_steps} "
          f"D={args.feature_dim}")
    for key, value in results.items():
        print(f"{key:32s} {value:,.3f}" if isinstance(value, float) else f"{key:32s} {value:,}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry_point(main, "python -m vreloc.bench.model"))
