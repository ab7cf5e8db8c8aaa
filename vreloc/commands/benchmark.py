"""`vreloc benchmark fetch|where`: the benchmark's split files (Feng et al.), pinned and checked.

    vreloc benchmark fetch [--dest DIR] [--base-url URL] [--timeout S]
    vreloc benchmark where

``fetch`` downloads train/val/test.json, length.json, perm.npy (and the LICENSE) from
fengyang0317/video_reloc at pinned commits, checks each sha256 and keeps them in the cache
(``$VRELOC_CACHE`` or ``~/.cache/vreloc``, ``benchmark/activitynet_reloc/``); files already
there are not downloaded again. ``where`` prints the folder the commands use when
``--splits``/``--lengths`` are left out. vreloc_tf.data.benchmark_files does the work.
"""
from __future__ import annotations

import argparse

from vreloc_tf.data import benchmark_files as bf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download the pinned split files and check their sha256")
    fetch.add_argument("--dest", metavar="DIR", default=None,
                       help=f"folder to fill (default: the cache, now {bf.cache_dir()}; set ${bf.CACHE_ENV} to move it)")
    fetch.add_argument("--base-url", metavar="URL", default=None,
                       help=f"a mirror laid out like the repository, <URL>/<commit>/data/<file> "
                            f"(default {bf.DEFAULT_BASE_URL})")
    fetch.add_argument("--timeout", type=float, default=bf.DEFAULT_TIMEOUT_S, metavar="S",
                       help="seconds to wait on the server, per request (default %(default)s)")
    sub.add_parser("where", help="print the folder of the benchmark files the commands use (or how to get them)")


def main(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        result = bf.fetch(args.dest, base_url=args.base_url, timeout=args.timeout)
        print(result.summary())
        return 0
    print(bf.require_splits())
    return 0
