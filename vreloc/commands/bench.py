"""`vreloc bench`: measured throughput and latency of every stage (see vreloc/bench/driver.py)."""
from __future__ import annotations

import argparse

from vreloc.bench.driver import DEFAULT_PARTS, PARTS, collect, format_report
from vreloc_tf.files import write_json_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and small ingest data (< 3 min)")
    parser.add_argument("--config", default="paper_full", help="model config (default paper_full)")
    parser.add_argument("--json", metavar="FILE", help="write all figures as JSON")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable; 'search' runs only when named)")


def main(args: argparse.Namespace) -> int:
    import json
    import time

    t0 = time.perf_counter()
    result = collect(args.config, args.quick, args.only or DEFAULT_PARTS)
    result["total_seconds"] = time.perf_counter() - t0
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    print(format_report(result))
    print(f"bench finished in {result['total_seconds']:.0f} s")
    if args.json:
        write_json_atomic(args.json, result)
    return 1 if result["errors"] else 0
