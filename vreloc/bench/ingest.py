"""Ingest throughput: ``python -m vreloc.bench.ingest [--synth DIR] [--dim 500] [--tmp DIR]``.

Runs the ingest job (``pipeline.ingest_activitynet.run``, default DirectRunner settings, i.e. the
multi-process mode at this size) on the synthetic dataset with the benchmark's
exact geometry (9,400 entries of 4,729 videos) and prints records/s. Without
``--synth`` the dataset is generated first under ``--tmp`` and deleted
afterwards (at D = 500 that is ~3.1 GB of HDF5 and ~1.3 GB of TFRecords).
``vreloc bench`` calls :func:`measure_ingest_records_per_s`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Optional

from pipeline import ingest_activitynet, synth
from vreloc_tf.data.benchmark_files import require_splits
from vreloc_tf.contract import FEATURE_DIM
from vreloc_tf.errors import add_debug_option, run_entry_point



def measure_ingest_records_per_s(synth_dir: Optional[str] = None, dim: int = FEATURE_DIM, tmp: Optional[str] = None,
                                 splits_dir: Optional[str] = None, runner: str = "DirectRunner",
                                 beam_args=()) -> dict:
    """Generate (unless ``synth_dir``), ingest, time; returns records, seconds, records/s, MB/s written.

    ``splits_dir``: the benchmark files (default: those `vreloc benchmark where` finds)."""
    if synth_dir is None and splits_dir is None:
        splits_dir = require_splits()

    work = tempfile.mkdtemp(prefix="vreloc-bench-ingest-", dir=tmp)
    try:
        generate_seconds = None
        if synth_dir is None:
            synth_dir = os.path.join(work, "synth")
            t0 = time.perf_counter()
            synth.generate(synth_dir, seed=0, dim=dim, lengths=os.path.join(splits_dir, "length.json"),
                           splits_dir=splits_dir)
            generate_seconds = time.perf_counter() - t0
        out = os.path.join(work, "data")
        t0 = time.perf_counter()
        summary = ingest_activitynet.run(os.path.join(synth_dir, synth.HDF5_NAME), synth_dir, out, runner,
                                         list(beam_args))
        seconds = time.perf_counter() - t0
        written = summary.written
        nbytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".tfrecord"))
        return {"records": written, "seconds": seconds, "records_per_s": written / seconds,
                "mb_per_s": nbytes / 1e6 / seconds, "tfrecord_mb": nbytes / 1e6,
                "generate_seconds": generate_seconds, "cpus": os.cpu_count()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vreloc.bench.ingest", description=__doc__.splitlines()[0])
    add_debug_option(parser)
    parser.add_argument("--synth", default=None, help="an existing `vreloc synth --lengths ... --splits ...` folder")
    parser.add_argument("--dim", type=int, default=FEATURE_DIM,
                        help="feature dim when generating (default %(default)s = full size)")
    parser.add_argument("--tmp", default=None, help="where to generate and write (default: the system temp folder)")
    parser.add_argument("--runner", default="DirectRunner")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    r = measure_ingest_records_per_s(args.synth, args.dim, args.tmp, runner=args.runner, beam_args=beam_args)
    print(f"ingest-activitynet on {r['cpus']} CPUs: {r['records']} records in {r['seconds']:.1f} s = "
          f"{r['records_per_s']:.1f} records/s ({r['mb_per_s']:.1f} MB/s of TFRecords, {r['tfrecord_mb']:.0f} MB)"
          + (f"; synth generation took {r['generate_seconds']:.1f} s" if r["generate_seconds"] else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_entry_point(main, "python -m vreloc.bench.ingest"))
