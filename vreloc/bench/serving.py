"""Serving latency and throughput: the compiled model, the exported signature, gRPC, and 8 concurrent clients.

Why interleaved samples: this runs on shared machines whose load changes by the
second. Each sample times one call of the compiled Keras model (XLA, what
``vreloc bench`` calls ``inference``), one in-process call of the exported
SavedModel signature and one gRPC Predict of the same pair, so the three
figures see the same load and their ratios are what serving costs over the
model. Then requests/s with concurrent clients (after an untimed warm-up of
the same load, so the batch shapes are compiled).

``python -m vreloc.bench.serving`` prints the figures; ``vreloc bench`` calls
:func:`run_benchmark`, whose ``figures`` hold ``inference.p50_ms``,
``grpc.p50_ms`` and ``grpc.requests_per_s_8_clients`` of one run. The model
has random weights: latency does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from typing import Dict, Optional

import numpy as np

from serving import signature as sig
from serving.batching import BatchingOptions, allowed_batch_size
from serving.client import make_request, open_channel, predict
from serving.export import export_model
from serving.server import set_tensorflow_threads, start_server
from vreloc.bench.model import make_predict_function
from vreloc_tf.data.artifacts import Export, Run, RunManifest
from vreloc_tf.config import load_config
from vreloc_tf.contract import MAX_WINDOW
from vreloc_tf.model.functional import build_model
from vreloc_tf.errors import InputError, add_debug_option, run_entry_point
from vreloc_tf.data.versions import ASSETS_EXTRA_DIR, METADATA_FILE

QUERY_STEPS = 16  # a typical query (the paper's are at most 32 features)


def _percentiles(seconds) -> Dict[str, float]:
    ms = 1e3 * np.asarray(seconds, np.float64)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(ms.size)}


def make_export(workdir: str, config: str = "tiny", feature_dim: Optional[int] = None, jit_compile: bool = True) -> str:
    """A run folder with a freshly built (untrained) model of ``config`` and its export; the version path."""
    cfg = load_config(config)
    feature_dim = feature_dim or cfg.data.feature_dim
    manifest = RunManifest(data_dir="(benchmark: random weights)", feature_dim=feature_dim, supervision=cfg.supervision)
    run = Run.create(os.path.join(workdir, "run"), cfg, manifest, model=build_model(cfg, feature_dim))
    return export_model(run, os.path.join(workdir, "export", sig.DEFAULT_MODEL_NAME), jit_compile=jit_compile).path


def random_pair(feature_dim: int, lq: int = QUERY_STEPS, lr: int = MAX_WINDOW, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((lq, feature_dim)).astype(np.float32),
            rng.standard_normal((lr, feature_dim)).astype(np.float32))


def compiled_model(version_path: str):
    """The XLA-compiled predict function of the Keras model behind an export (what ``vreloc bench`` times)."""
    info = Export.open(version_path).info
    if info is None or not info.run_dir:
        raise InputError(f"{version_path}: the export records no run folder ({ASSETS_EXTRA_DIR}/{METADATA_FILE})")
    return make_predict_function(Run.open(info.run_dir).load_model(), jit_compile=True)


def bench_latency(version_path: str, target: str, query, reference, requests: int = 100, warmup: int = 5,
                  model_name: str = sig.DEFAULT_MODEL_NAME, predict_fn=None) -> Dict[str, Dict[str, float]]:
    """p50/p99 of one pair: the compiled model (``predict_fn``), the SavedModel signature in process and gRPC, interleaved."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    fn = tf.saved_model.load(version_path).signatures[sig.SIGNATURE_NAME]
    inputs = {sig.QUERY: tf.constant(query[None]), sig.QUERY_LENGTH: tf.constant([len(query)], tf.int32),
              sig.REFERENCE: tf.constant(reference[None]), sig.REFERENCE_LENGTH: tf.constant([len(reference)], tf.int32)}
    request = make_request(query, reference, model_name)
    channel = open_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    model, local, remote = [], [], []
    try:
        for i in range(warmup + requests):
            started = time.perf_counter()
            if predict_fn is not None:
                _ = predict_fn(inputs)[sig.PROBABILITIES].numpy()
            first = time.perf_counter()
            out = fn(**inputs)
            _ = out[sig.START].numpy()
            middle = time.perf_counter()
            stub.Predict(request, timeout=60)
            done = time.perf_counter()
            if i >= warmup:
                model.append(first - started)
                local.append(middle - first)
                remote.append(done - middle)
    except grpc.RpcError as exc:
        raise RuntimeError(f"benchmark Predict failed: {exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
    out = {"in_process": _percentiles(local), "grpc": _percentiles(remote)}
    if predict_fn is not None:
        out["inference"] = _percentiles(model)
    return out


def bench_throughput(target: str, query, reference, clients: int = 8, duration: float = 5.0,
                     model_name: str = sig.DEFAULT_MODEL_NAME) -> Dict[str, float]:
    """Requests/s with ``clients`` threads each sending Predicts back to back for ``duration`` seconds."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = make_request(query, reference, model_name)
    latencies, errors = [], []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client():
        channel = open_channel(target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        mine = []
        start_gate.wait()
        try:
            while time.perf_counter() < deadline[0]:
                started = time.perf_counter()
                try:
                    stub.Predict(request, timeout=60)
                    mine.append(time.perf_counter() - started)
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    with lock:
                        errors.append(repr(exc))
        finally:
            channel.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    began, cpu_began = time.perf_counter(), time.process_time()
    deadline[0] = began + duration
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    # CPU time per request (server and clients share this process): the capacity figure that a
    # neighbour's load on a shared machine disturbs least; cores / it bounds requests/s
    out = {"clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": len(errors),
           "requests_per_s": len(latencies) / elapsed,
           "cpu_ms_per_request": 1000.0 * cpu / max(len(latencies), 1)}
    out.update({f"latency_{k}": v for k, v in _percentiles(latencies or [0.0]).items() if k != "n"})
    return out


def warm_batch_shapes(target: str, query, reference, clients: int, model_name: str = sig.DEFAULT_MODEL_NAME) -> None:
    """One request per batch size the server may form from ``clients`` requests, so none compiles while timed."""
    sizes = sorted({allowed_batch_size(n, sig.MAX_BATCH_SIZE) for n in range(1, clients + 1)})
    for size in sizes:
        predict(target, np.repeat(query[None], size, 0), np.repeat(reference[None], size, 0), model_name, timeout=300)


def run_benchmark(config: str = "tiny", lq: int = QUERY_STEPS, lr: int = MAX_WINDOW, requests: int = 100,
                  clients: int = 8, duration: float = 5.0, version_path: Optional[str] = None,
                  workdir: Optional[str] = None, batching: bool = True, jit_compile: bool = True,
                  warmup_seconds: Optional[float] = None, batch_threads: int = 0,
                  intra_op_threads: Optional[int] = sig.INTRA_OP_THREADS) -> dict:
    """Export (unless ``version_path`` is given), serve on loopback in process, and measure.

    Returns {"config", "feature_dim", "lq", "lr", "batching", "jit_compile", "inference": {p50_ms, p99_ms, ...}
    (the compiled model), "in_process": {...} (the exported signature), "grpc": {...},
    "grpc_overhead_p50_ms", "throughput": {requests_per_s, ...} (after an untimed warm-up of
    ``warmup_seconds``, default ``duration`` / 2), "figures": the issue's three figures and their ratios}.
    ``intra_op_threads``: TensorFlow's intra-op pool of this process, as ``vreloc serve`` sets it (its
    default; None: TensorFlow's choice); the in-process figures share it.
    """
    import tensorflow as tf

    if intra_op_threads is not None:
        set_tensorflow_threads(intra_op_threads)

    owned = None
    if version_path is None:
        owned = tempfile.TemporaryDirectory(prefix="vreloc-bench-serving-", dir=workdir)
        version_path = make_export(owned.name, config, jit_compile=jit_compile)
    base = os.path.dirname(os.path.normpath(version_path))
    version = int(os.path.basename(os.path.normpath(version_path)))
    feature_dim = int(tf.saved_model.load(version_path).signatures[sig.SIGNATURE_NAME]
                      .structured_input_signature[1][sig.QUERY].shape[-1])
    handle = start_server(base, sig.DEFAULT_MODEL_NAME, port=0, poll_interval=0, version_policy=f"specific:{version}",
                          max_workers=max(8, clients),
                          batching=BatchingOptions(enabled=batching, num_batch_threads=batch_threads))
    target = f"127.0.0.1:{handle.port}"
    batching = handle.models[sig.DEFAULT_MODEL_NAME].versions_loaded()[0].batching.enabled
    try:
        query, reference = random_pair(feature_dim, lq, lr)
        latency = bench_latency(version_path, target, query, reference, requests,
                                predict_fn=compiled_model(version_path))
        warm_batch_shapes(target, query, reference, clients)
        bench_throughput(target, query, reference, clients, duration / 2 if warmup_seconds is None else warmup_seconds)
        throughput = bench_throughput(target, query, reference, clients, duration)
    finally:
        handle.stop(grace=1)
        if owned is not None:
            owned.cleanup()
    grpc_p50, inference_p50 = latency["grpc"]["p50_ms"], latency["inference"]["p50_ms"]
    figures = {"inference.p50_ms": inference_p50, "grpc.p50_ms": grpc_p50,
               f"grpc.requests_per_s_{clients}_clients": throughput["requests_per_s"],
               **serving_ratios(inference_p50, grpc_p50, throughput["requests_per_s"])}
    return {"config": config, "feature_dim": feature_dim, "lq": lq, "lr": lr, "batching": batching,
            "intra_op_threads": intra_op_threads,
            "jit_compile": jit_compile, **latency,
            "grpc_overhead_p50_ms": grpc_p50 - latency["in_process"]["p50_ms"],
            "throughput": throughput, "figures": figures}


def serving_ratios(model_p50_ms: Optional[float], grpc_p50_ms: Optional[float],
                   requests_per_s: Optional[float]) -> Dict[str, Optional[float]]:
    """Issue #12's two ratios: gRPC p50 over the compiled model's, and concurrent requests/s over one
    at a time (1000 / gRPC p50); None where a figure is missing."""
    return {"grpc_p50_over_inference_p50": grpc_p50_ms / model_p50_ms if grpc_p50_ms and model_p50_ms else None,
            "requests_per_s_over_one_at_a_time": requests_per_s * grpc_p50_ms / 1000.0
            if grpc_p50_ms and requests_per_s else None}


def format_report(result: dict) -> str:
    lines = [f"serving benchmark: config {result['config']} (D={result['feature_dim']}), one pair Lq={result['lq']} "
             f"Lr={result['lr']}, {result['in_process']['n']} interleaved samples, export "
             f"{'with' if result['jit_compile'] else 'without'} XLA, batching {'on' if result['batching'] else 'off'}"]
    for key, label in (("inference", "compiled model (XLA, no decoding)"),
                       ("in_process", "in process (SavedModel signature)"), ("grpc", "over gRPC (loopback, stock stub)")):
        r = result[key]
        lines.append(f"  {label:36s} p50 {r['p50_ms']:8.2f} ms   p99 {r['p99_ms']:8.2f} ms")
    f = result["figures"]
    lines.append(f"  gRPC adds {result['grpc_overhead_p50_ms']:.2f} ms to the signature's p50; "
                 f"gRPC p50 = {f['grpc_p50_over_inference_p50']:.2f} x the compiled model's (target <= 1.5)")
    t = result["throughput"]
    lines.append(f"  {t['clients']} concurrent clients: {t['requests_per_s']:.1f} requests/s "
                 f"({t['requests']} in {t['seconds']:.1f} s, {t['errors']} errors; "
                 f"latency p50 {t['latency_p50_ms']:.1f} ms, p99 {t['latency_p99_ms']:.1f} ms) = "
                 f"{f['requests_per_s_over_one_at_a_time']:.2f} x one at a time (target >= 2); "
                 f"{t['cpu_ms_per_request']:.1f} ms of CPU per request")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.serving", description=__doc__.split("\n")[0])
    add_debug_option(parser)
    parser.add_argument("--config", default="tiny", help="model config to build and export (tiny | paper_full | ...)")
    parser.add_argument("--export", default=None, metavar="BASE/NAME/VERSION", help="benchmark this export instead")
    parser.add_argument("--lq", type=int, default=QUERY_STEPS)
    parser.add_argument("--lr", type=int, default=MAX_WINDOW)
    parser.add_argument("--requests", type=int, default=100, help="latency samples (default %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for requests/s (default %(default)s)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of the throughput run (default %(default)s)")
    parser.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                        help="server-side batching on/off (default on, as vreloc serve)")
    parser.add_argument("--batch-threads", type=int, default=0, help="model calls at once when batching (0: one per core)")
    parser.add_argument("--no-xla", action="store_true", help="export without XLA (the signature before issue #12)")
    parser.add_argument("--intra-op-threads", type=int, default=sig.INTRA_OP_THREADS,
                        help="TensorFlow intra-op threads of the server process (default %(default)s, as vreloc serve; "
                             "0 = one per core)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_benchmark(args.config, args.lq, args.lr, args.requests, args.clients, args.duration, args.export,
                           batching=args.batching, jit_compile=not args.no_xla, batch_threads=args.batch_threads,
                           intra_op_threads=args.intra_op_threads)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_entry_point(main, "python -m vreloc.bench.serving"))
