"""`vreloc locate`: find a query clip in a long reference video file (see vreloc/locate.py).

    vreloc locate --query CLIP --reference LONG (--model RUN|EXPORT | --method frame-level [backbone flags])

With a model, the features are made with the backbone, weights, frame rate and PCA the
model was trained on (recorded in its run.json / export); backbone flags are needed only
where the model cannot name them (the published ActivityNet features' C3D weights and PCA).
"""
from __future__ import annotations

import argparse
import os

from vreloc import backbone_args
from vreloc.backbone_args import add_backbone_arguments
from vreloc.features import default_options
from vreloc.locate import locate, open_model
from vreloc_tf.files import write_json_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--query", required=True, metavar="CLIP", help="the short query video file")
    parser.add_argument("--reference", required=True, metavar="LONG", help="the long reference video file")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", metavar="PATH", help="run folder or exported model folder BASE/NAME")
    who.add_argument("--method", choices=("frame-level",), help="training-free matcher instead of a model")
    add_backbone_arguments(parser, default_from="--model")
    parser.add_argument("--pca", metavar="FILE",
                        help="PCA to apply to the backbone's features (default: the model's; ActivityNet's "
                             "PCA_activitynet_v1-3.hdf5 for a model trained on the released features)")
    parser.add_argument("--window", type=int, default=None,
                        help="reference window in features (default: the model config's data.max_window)")
    parser.add_argument("--json", metavar="FILE", help="write the answer as JSON")
    parser.add_argument("--plot", metavar="PNG", help="draw the per-step probabilities over the reference")


def main(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    model = open_model(args.model) if args.model else None  # the run or export, opened once
    backbone = None
    if backbone_args.given(args):
        default = default_options(model.feature_spec) if model is not None else None
        backbone = backbone_args.options_from_args(args, default)
    t0 = time.time()
    res = locate(args.query, args.reference, model=model, method=args.method, backbone=backbone,
                 pca_file=args.pca, window=args.window, plot=args.plot)
    print(f"{os.path.basename(args.query)} found in {os.path.basename(args.reference)} at "
          f"{res.start_seconds:.2f} s - {res.end_seconds:.2f} s (features [{res.start_index}, {res.end_index}) of "
          f"{res.reference_features}), score {res.score:.4f} [{res.method}] in {time.time() - t0:.1f} s")
    if args.json:
        write_json_atomic(args.json, dataclasses.asdict(res))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
