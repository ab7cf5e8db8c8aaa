"""`vreloc index build|add|remove|info`: the library index that `vreloc search` searches.

    vreloc index build --data DIR [--split S ...] [--model RUN] --out INDEX [--embedding raw|encoder] [--runner R]
    vreloc index add --index INDEX --data DIR [--split S ...]
    vreloc index remove --index INDEX --video-id ID [ID ...]
    vreloc index info --index INDEX

A library item is a video: the records of one video id are merged into one item (its pieces are
the runs of the video the records cover). Without ``--model`` the index re-localizes with the
training-free frame-level method (``raw`` embeddings only); `vreloc search` then needs no model.
build/add run the Beam job pipeline.build_index; remove and info use vreloc_tf.search.library.
"""
from __future__ import annotations

import argparse
import json

from pipeline.backbones import BACKBONES
from pipeline.options import add_beam_arguments, enable_progress_logging
from vreloc_tf.data.artifacts import Dataset, Run
from vreloc_tf.errors import InputError
from vreloc_tf.data.feature_spec import FeatureMismatchError
from vreloc_tf.search.embedding import DEFAULT_KIND, DEFAULT_SCALES, KINDS
from vreloc_tf.search.library import INDEX_TYPES, Index, LibraryIndex, describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build an index from TFRecords (a Beam job)")
    build.add_argument("--data", required=True, metavar="DIR", help="TFRecord data folder (ingest or extract-video)")
    build.add_argument("--split", action="append", metavar="S", help="split(s) to index (default: all of --data)")
    build.add_argument("--model", metavar="RUN",
                       help="run folder whose model re-localizes (default: none; the training-free frame-level "
                            "method re-localizes, with --embedding raw)")
    build.add_argument("--out", required=True, metavar="INDEX", help="index folder")
    build.add_argument("--embedding", default=DEFAULT_KIND, choices=KINDS,
                       help="window embeddings: raw features or the model's reference encoder (needs --model; "
                            "default %(default)s)")
    build.add_argument("--scales", default=",".join(str(s) for s in DEFAULT_SCALES),
                       help="window lengths in feature steps (default %(default)s)")
    build.add_argument("--index-type", default="auto", choices=INDEX_TYPES,
                       help="FAISS index: flat (exact), ivf, or auto (flat below 200k windows)")
    build.add_argument("--overwrite", action="store_true", help="replace an index in --out")
    build.add_argument("--backbone", choices=BACKBONES, default=None,
                       help="the backbone --data's features must come from (checked against its manifest)")
    add_beam_arguments(build)
    add = sub.add_parser("add", help="append the videos of a data folder to an index (no rebuild)")
    add.add_argument("--index", required=True)
    add.add_argument("--data", required=True, metavar="DIR")
    add.add_argument("--split", action="append", metavar="S")
    add_beam_arguments(add)
    remove = sub.add_parser("remove", help="remove videos (every piece of these video ids)")
    remove.add_argument("--index", required=True)
    remove.add_argument("--video-id", nargs="+", required=True)
    info = sub.add_parser("info", help="what an index holds")
    info.add_argument("--index", required=True)


def check_backbone(dataset: Dataset, backbone) -> None:
    """``--backbone``: refuse a data folder whose features another backbone made."""
    if backbone is None:
        return
    data_dir, spec = dataset.path, dataset.feature_spec
    if spec is None:
        raise FeatureMismatchError(f"--backbone {backbone}: --data {data_dir} does not record which backbone made its "
                                   f"features (written before feature specs); drop --backbone or extract it again")
    if spec.backbone != backbone:
        raise FeatureMismatchError(f"--backbone {backbone}: --data {data_dir} holds {spec.summary()}")


def main(args: argparse.Namespace) -> int:
    if args.action in ("build", "add"):
        from pipeline import build_index  # heavy: Apache Beam, for build/add only (info, remove and --help need none)

        enable_progress_logging()
        dataset = Dataset.open(args.data)  # the artifacts, opened once here and handed to the job
        if args.action == "build":
            check_backbone(dataset, args.backbone)
            try:
                scales = [int(s) for s in args.scales.split(",") if s.strip()]
            except ValueError:
                raise InputError(f"--scales {args.scales!r}: expected comma-separated window lengths") from None
            model = Run.open(args.model) if args.model else None
            built = build_index.run(args.out, dataset, model, args.split, kind=args.embedding, scales=scales,
                                    index_type=args.index_type, runner=args.runner, beam_args=args.beam_args,
                                    overwrite=args.overwrite)
        else:
            built = build_index.run(Index.open(args.index), dataset, None, args.split, runner=args.runner,
                                    beam_args=args.beam_args)
        print(build_index.report(built.summary))
        return 0
    index = LibraryIndex.open(args.index)
    if args.action == "remove":
        videos = len(index.live_video_ids(among=args.video_id))
        pieces = index.remove(args.video_id)
        print(f"index remove: removed {videos} of {len(set(args.video_id))} video id(s) given ({pieces} pieces); "
              f"{index.live_videos} videos in {index.live_pieces} pieces, {index.live_windows} windows left")
        return 0
    print(json.dumps(describe(index), indent=2))
    return 0
