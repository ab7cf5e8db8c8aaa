"""Serving latency and throughput: what gRPC adds to a Predict, and requests/s under concurrency.

Why interleaved samples: this runs on shared machines whose load changes by the
second. Each sample times one in-process call of the SavedModel signature and
then one gRPC Predict of the same pair, so both figures see the same load and
their p50 difference is the cost of the RPC path (proto encode/decode, request
validation, loopback transport, thread hand-off).

``python -m serving.bench_serving`` prints the figures; ``vreloc bench`` calls
:func:`run_benchmark`. The model has random weights: latency does not depend on them.
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
from vreloc_tf.contract import MAX_WINDOW

QUERY_STEPS = 16  # a typical query (the paper's are at most 32 features)


def _percentiles(seconds) -> Dict[str, float]:
    ms = 1e3 * np.asarray(seconds, np.float64)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(ms.size)}


def make_export(workdir: str, config: str = "tiny", feature_dim: Optional[int] = None) -> str:
    """A run folder with a freshly built (untrained) model of ``config`` and its export; the version path."""
    from serving.export import export_model
    from vreloc_tf.config import load_config, save_config
    from vreloc_tf.model import build_model
    from vreloc_tf.run_dir import CONFIG_FILE, MODEL_FILE, RunManifest, write_run_manifest

    cfg = load_config(config)
    feature_dim = feature_dim or cfg.data.feature_dim
    run_dir = os.path.join(workdir, "run")
    os.makedirs(run_dir, exist_ok=True)
    build_model(cfg, feature_dim).save(os.path.join(run_dir, MODEL_FILE))
    save_config(cfg, os.path.join(run_dir, CONFIG_FILE))
    write_run_manifest(run_dir, RunManifest(data_dir="(benchmark: random weights)", feature_dim=feature_dim,
                                            supervision=cfg.supervision, frames_per_feature=cfg.data.frames_per_feature))
    return export_model(run_dir, os.path.join(workdir, "export", sig.DEFAULT_MODEL_NAME)).path


def random_pair(feature_dim: int, lq: int = QUERY_STEPS, lr: int = MAX_WINDOW, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((lq, feature_dim)).astype(np.float32),
            rng.standard_normal((lr, feature_dim)).astype(np.float32))


def bench_latency(version_path: str, target: str, query, reference, requests: int = 100, warmup: int = 5,
                  model_name: str = sig.DEFAULT_MODEL_NAME) -> Dict[str, Dict[str, float]]:
    """p50/p99 of one pair: in process (SavedModel signature) and over gRPC (stock stub), interleaved."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.client import make_request, open_channel

    fn = tf.saved_model.load(version_path).signatures[sig.SIGNATURE_NAME]
    inputs = {sig.QUERY: tf.constant(query[None]), sig.QUERY_LENGTH: tf.constant([len(query)], tf.int32),
              sig.REFERENCE: tf.constant(reference[None]), sig.REFERENCE_LENGTH: tf.constant([len(reference)], tf.int32)}
    request = make_request(query, reference, model_name)
    channel = open_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    local, remote = [], []
    try:
        for i in range(warmup + requests):
            started = time.perf_counter()
            out = fn(**inputs)
            _ = out[sig.START].numpy()
            middle = time.perf_counter()
            stub.Predict(request, timeout=60)
            done = time.perf_counter()
            if i >= warmup:
                local.append(middle - started)
                remote.append(done - middle)
    except grpc.RpcError as exc:
        raise RuntimeError(f"benchmark Predict failed: {exc.code().name}: {exc.details()}") from None
    finally:
        channel.close()
    return {"in_process": _percentiles(local), "grpc": _percentiles(remote)}


def bench_throughput(target: str, query, reference, clients: int = 8, duration: float = 5.0,
                     model_name: str = sig.DEFAULT_MODEL_NAME) -> Dict[str, float]:
    """Requests/s with ``clients`` threads each sending Predicts back to back for ``duration`` seconds."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.client import make_request, open_channel

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
    began = time.perf_counter()
    deadline[0] = began + duration
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    out = {"clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": len(errors),
           "requests_per_s": len(latencies) / elapsed}
    out.update({f"latency_{k}": v for k, v in _percentiles(latencies or [0.0]).items() if k != "n"})
    return out


def run_benchmark(config: str = "tiny", lq: int = QUERY_STEPS, lr: int = MAX_WINDOW, requests: int = 100, clients: int = 8,
                  duration: float = 5.0, version_path: Optional[str] = None, workdir: Optional[str] = None) -> dict:
    """Export (unless ``version_path`` is given), serve on loopback in process, and measure.

    Returns {"config", "feature_dim", "lq", "lr", "in_process": {p50_ms, p99_ms, ...},
    "grpc": {...}, "grpc_overhead_p50_ms", "throughput": {requests_per_s, ...}}.
    """
    import tensorflow as tf

    from serving.server import start_server

    owned = None
    if version_path is None:
        owned = tempfile.TemporaryDirectory(prefix="vreloc-bench-serving-", dir=workdir)
        version_path = make_export(owned.name, config)
    base = os.path.dirname(os.path.normpath(version_path))
    version = int(os.path.basename(os.path.normpath(version_path)))
    feature_dim = int(tf.saved_model.load(version_path).signatures[sig.SIGNATURE_NAME]
                      .structured_input_signature[1][sig.QUERY].shape[-1])
    handle = start_server(base, sig.DEFAULT_MODEL_NAME, port=0, poll_interval=0, version_policy=f"specific:{version}",
                          max_workers=max(8, clients))
    target = f"127.0.0.1:{handle.port}"
    try:
        query, reference = random_pair(feature_dim, lq, lr)
        latency = bench_latency(version_path, target, query, reference, requests)
        throughput = bench_throughput(target, query, reference, clients, duration)
    finally:
        handle.stop(grace=1)
        if owned is not None:
            owned.cleanup()
    return {"config": config, "feature_dim": feature_dim, "lq": lq, "lr": lr, **latency,
            "grpc_overhead_p50_ms": latency["grpc"]["p50_ms"] - latency["in_process"]["p50_ms"],
            "throughput": throughput}


def format_report(result: dict) -> str:
    lines = [f"serving benchmark: config {result['config']} (D={result['feature_dim']}), one pair Lq={result['lq']} "
             f"Lr={result['lr']}, {result['in_process']['n']} interleaved samples"]
    for key, label in (("in_process", "in process (SavedModel signature)"), ("grpc", "over gRPC (loopback, stock stub)")):
        r = result[key]
        lines.append(f"  {label:36s} p50 {r['p50_ms']:8.2f} ms   p99 {r['p99_ms']:8.2f} ms")
    lines.append(f"  gRPC adds {result['grpc_overhead_p50_ms']:.2f} ms to p50 (target <= 2 ms)")
    t = result["throughput"]
    lines.append(f"  {t['clients']} concurrent clients: {t['requests_per_s']:.1f} requests/s "
                 f"({t['requests']} in {t['seconds']:.1f} s, {t['errors']} errors; "
                 f"latency p50 {t['latency_p50_ms']:.1f} ms, p99 {t['latency_p99_ms']:.1f} ms)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.bench_serving", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny", help="model config to build and export (tiny | paper_full | ...)")
    parser.add_argument("--export", default=None, metavar="BASE/NAME/VERSION", help="benchmark this export instead")
    parser.add_argument("--lq", type=int, default=QUERY_STEPS)
    parser.add_argument("--lr", type=int, default=MAX_WINDOW)
    parser.add_argument("--requests", type=int, default=100, help="latency samples (default %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for requests/s (default %(default)s)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of the throughput run (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run_benchmark(args.config, args.lq, args.lr, args.requests, args.clients, args.duration, args.export)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
