"""`vreloc bench`: measured throughput and latency of every stage, on this machine.

Each part runs in its own Python process (``python -m vreloc.bench.parts --part NAME``),
so that one part's memory and thread pools do not colour another's figures, the
2-device part can split the CPU before TensorFlow starts, and each part's peak
resident memory is its own. The yardstick is this machine's dense matmul rate:
``train.fraction_of_matmul`` is the model's analytic training FLOP rate over it.

Parts (model figures use ``--config``, default ``paper_full``: D = 500, 40 heads):

=============  =====================================================================
matmul         dense float32 matmul GFLOP/s (vreloc.bench.model.matmul_gflops)
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
               rate measured in the same process, interleaved (vreloc.bench.backbones); clip /
               c3d; PyAV decode time per minute of video, labelled apart (not backbone compute)
cgbm_train     Feng et al.'s CGBM (the config + vreloc_tf.config.CGBM_METHOD: model.cgbm's
               sizes, Feng's loss): training pairs/s as train1, beside ours
cgbm_inference CGBM single-pair p50/p99 as inference (Lq 16, Lr 300)
records        random TFRecord reads by offset (training's pair reads; vreloc.bench.records): ms per
               read, ours and TensorFlow's random reader, interleaved; in-order scan MB/s. Full: 150
               records of D = 500 x 300 steps (90 MB); --quick: 3,000 of 32 x 80 (31 MB)
search         library search (vreloc.bench.search) at 1k/10k/100k generated videos of
               100-300 steps, 32-d, tiny-config model: p50/p99, memory, latency growth
               exponent; index build records/s on the DirectRunner (1,000 records);
               --quick: 300/1k/3k videos. Not part of the default run (`--only search`).
=============  =====================================================================

This module is the driver (which parts, the report); vreloc/bench/parts.py holds the parts.
The driver imports none of what the parts measure, so ``vreloc bench`` itself stays light.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

from vreloc_tf.contract import PAPER_SHAPES as SHAPES

PARTS = ("matmul", "train1", "train2", "inference", "decode", "grpc", "ingest", "records", "backbones",
         "cgbm_train", "cgbm_inference", "search")
DEFAULT_PARTS = PARTS[:-1]  # search builds a 100k-video library: only with --only search


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

def run_part(name: str, config: str, quick: bool, timeout: float = 900) -> dict:
    cmd = [sys.executable, "-m", "vreloc.bench.parts", "--part", name, "--config", config]
    cmd += ["--quick"] if quick else []
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
    # heavy: TensorFlow (vreloc.bench.serving runs a server); the driver itself stays light
    from vreloc.bench.serving import serving_ratios

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
        "records": {k: get("records", k) for k in ("record_kb", "file_mb", "read_ms_p50", "tensorflow_read_ms_p50",
                                                     "tensorflow_over_ours", "scan_mb_per_s")},
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
        f"  TFRecord read by offset         {f(r['records']['read_ms_p50'], '{:.3f}')} ms  (TensorFlow's random "
        f"reader {f(r['records']['tensorflow_read_ms_p50'], '{:.3f}')} ms = "
        f"{f(r['records']['tensorflow_over_ours'])} x; {f(r['records']['record_kb'], '{:.0f}')} KB records of a "
        f"{f(r['records']['file_mb'], '{:.0f}')} MB file; in-order scan {f(r['records']['scan_mb_per_s'], '{:.0f}')} MB/s)",
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
    # heavy: TensorFlow (vreloc.bench.backbones runs the backbones); the driver stays light
    from vreloc.bench.backbones import format_lines

    raw = (r.get("raw") or {}).get("backbones")
    if raw and "error" not in raw:
        return ["  backbones (random weights, real input shapes; matmul measured in the same process)"] \
            + format_lines(raw, indent="    ", column=38)
    return ["  backbones                       n/a s per minute of video (part not run)"]
