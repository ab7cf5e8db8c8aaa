"""Random reads of TFRecords by offset, the way training reads its pairs (vreloc_tf/data/tfrecord.py).

Writes one file of ``records`` random payloads of ``dim x steps`` float32 (the size of a reference's
record), reads them back by offset in a fixed random order with our :class:`FramedReader` and with
TensorFlow's ``tf_record_random_reader`` (interleaved, so both see one load), and scans the file in
order once. The figure that made our reader: TensorFlow's refills a 16 MiB buffer on every read that
misses its last one, so on a file above 16 MiB each random read copies up to 16 MiB.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from vreloc_tf.contract import FEATURE_DIM
from vreloc_tf.data import tfrecord


def measure_record_reads(records: int = 200, dim: int = FEATURE_DIM, steps: int = 300, rounds: int = 3, seed: int = 0) -> dict:
    """ms per random read (p50 over reads, best of ``rounds``) for ours and TensorFlow's reader; MB/s of an
    in-order scan; the checked bytes of both readers compared."""
    # heavy: TensorFlow's reader, the yardstick
    from tensorflow.python.lib.io import tf_record

    rng = np.random.default_rng(seed)
    payload_bytes = dim * steps * 4
    with tempfile.TemporaryDirectory(prefix="vreloc-bench-records-") as tmp:
        path = os.path.join(tmp, "records.tfrecord")
        offsets, payloads = [], []
        with open(path, "wb") as fh:
            offset = 0
            for _ in range(records):
                data = rng.standard_normal(dim * steps).astype(np.float32).tobytes()
                offsets.append(offset)
                payloads.append(data)
                offset += tfrecord.write_record(fh, data)
        order = rng.permutation(records)
        ours, theirs = tfrecord.FramedReader(path), tf_record.tf_record_random_reader(path)
        times = {"ours": [], "tensorflow": []}
        same = True
        for _ in range(rounds):
            for name, read in (("ours", lambda o: ours.read(o)[0]), ("tensorflow", lambda o: theirs.read(o)[0])):
                took = []
                for i in order:
                    t0 = time.perf_counter()
                    data = read(offsets[i])
                    took.append(time.perf_counter() - t0)
                    same = same and data == payloads[i]
                times[name].append(float(np.median(took)) * 1e3)
        t0 = time.perf_counter()
        scanned = sum(len(d) for _, d in tfrecord.iter_records(path))
        scan_s = time.perf_counter() - t0
        file_mb = os.path.getsize(path) / 1e6
    best = {name: min(v) for name, v in times.items()}
    return {"records": records, "record_kb": payload_bytes / 1e3, "file_mb": file_mb,
            "read_ms_p50": best["ours"], "tensorflow_read_ms_p50": best["tensorflow"],
            "tensorflow_over_ours": best["tensorflow"] / best["ours"], "same_bytes": bool(same),
            "scan_mb_per_s": scanned / 1e6 / scan_s, "crc32c": _crc_impl()}


def _crc_impl() -> str:
    """Which CRC-32C code the reader checks with (google-crc32c, or the crcmod fallback)."""
    tfrecord.crc32c(b"")  # picks the implementation
    return f"{tfrecord._crc32c.__module__}.{getattr(tfrecord._crc32c, '__name__', '?')}"
