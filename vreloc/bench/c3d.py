"""C3D throughput on this machine: ``python -m vreloc.bench.c3d [--batch 8 --batches 3]``.

Random weights (the speed does not depend on their values) and random uint8 clips go
through :class:`pipeline.c3d.C3DExtractor`, the path ``vreloc extract-video`` uses.
One warm-up batch (tracing, allocation) is not timed. ``vreloc bench`` times every backbone
against the matmul rate of the same process instead (:mod:`vreloc.bench.backbones`).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional

from pipeline import c3d
from vreloc_tf.errors import InputError, add_debug_option, run_entry_point


def measure_c3d_clips_per_s(batch_size: int = 8, batches: int = 3, seed: int = 0,
                            extractor=None) -> dict:
    """Time ``batches`` batches of ``batch_size`` clips after one warm-up batch.

    Returns ``{"clips_per_s", "seconds_per_clip", "gflops_per_s", "clips", "seconds",
    "batch_size", "device"}``. Pass ``extractor`` to time a loaded one.
    """
    import numpy as np
    import tensorflow as tf

    if batch_size < 1 or batches < 1:
        raise InputError(f"batch_size and batches must be >= 1, got {batch_size}, {batches}")
    if extractor is None:
        extractor = c3d.C3DExtractor.random(seed=seed, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, (batch_size, *c3d.INPUT_SHAPE), dtype=np.uint8)
    extractor(clips)  # warm-up: trace and allocate
    start = time.perf_counter()
    for _ in range(batches):
        extractor(clips)
    seconds = time.perf_counter() - start
    n = batch_size * batches
    gpus = tf.config.list_logical_devices("GPU")
    return {
        "clips_per_s": n / seconds,
        "seconds_per_clip": seconds / n,
        "gflops_per_s": n * c3d.GFLOPS_PER_CLIP / seconds,
        "clips": n,
        "seconds": seconds,
        "batch_size": batch_size,
        "device": gpus[0].name if gpus else f"CPU ({os.cpu_count()} logical cores visible)",
    }


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.c3d", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--batch", type=int, default=8, help="clips per batch (default 8)")
    parser.add_argument("--batches", type=int, default=3, help="timed batches after one warm-up (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    r = measure_c3d_clips_per_s(batch_size=args.batch, batches=args.batches, seed=args.seed)
    print(f"C3D fc7 on {r['device']}: {r['clips_per_s']:.2f} clips/s "
          f"({r['seconds_per_clip'] * 1000:.0f} ms/clip, ~{r['gflops_per_s']:.0f} GFLOP/s; "
          f"{r['clips']} clips in {r['seconds']:.2f} s, batch {r['batch_size']}, random weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_entry_point(main, "python -m vreloc.bench.c3d"))
