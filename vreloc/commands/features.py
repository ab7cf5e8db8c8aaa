"""`vreloc features`: a video (or a cut of it) -> features [L, D] in a .npy file, made like an artifact's.

    vreloc features --video FILE [--start S --end E] --like DATA|RUN|EXPORT|INDEX --out FILE.npy
    vreloc features --video FILE --backbone clip --weights HANDLE [--fps F] [--pca FILE] --out FILE.npy

The backbone, weights, frame rate and PCA are those that made ``--like``'s features
(vreloc/features.py), so the array is ready for `vreloc query`, `vreloc search --query` or a
REST request to a model trained on them. Flags may name what the artifact cannot (the weights
behind the published ActivityNet features); flags that would make other features are refused.
"""
from __future__ import annotations

import argparse

from vreloc import backbone_args
from vreloc import features  # features.extract, looked up when called (tests cache it)
from vreloc.backbone_args import add_backbone_arguments
from vreloc.features import default_options, recipe_like, spec_of
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, metavar="FILE", help="the video file")
    parser.add_argument("--start", type=float, default=None, metavar="S", help="cut: first second (default 0)")
    parser.add_argument("--end", type=float, default=None, metavar="E", help="cut: last second (default: the end)")
    parser.add_argument("--like", metavar="ARTIFACT",
                        help="make the features like this data folder's, run's, export's or index's")
    parser.add_argument("--out", required=True, metavar="FILE.npy", help="where to write float32 [L, D]")
    add_backbone_arguments(parser, default_from="--like")
    parser.add_argument("--pca", metavar="FILE", help="the PCA to apply (default: --like's)")


def main(args: argparse.Namespace) -> int:
    import os
    import time

    import numpy as np

    if not args.out.endswith(".npy"):
        raise InputError(f"--out {args.out}: expected a .npy file name")
    if args.like:
        spec, where = spec_of(args.like)
    else:
        if not backbone_args.given(args):
            raise InputError("give --like ARTIFACT (a data folder, run, export or index whose features to match), "
                             "or the backbone flags (--backbone, --weights/--random-weights)")
        spec, where = None, "the command line"
    options = backbone_args.options_from_args(args, default_options(spec)) if backbone_args.given(args) else None
    recipe = recipe_like(spec, where, options, args.pca)
    t0 = time.time()
    feats, got = features.extract(recipe, args.video, args.start, args.end)
    with atomic_path(args.out) as tmp:
        np.save(tmp, feats)
    seconds_of_video = len(feats) * got.seconds_per_feature
    print(f"features: {os.path.basename(args.video)} -> {args.out}: [{feats.shape[0]}, {feats.shape[1]}] float32, "
          f"{recipe.spec.summary()}; one feature per {got.seconds_per_feature:.3g} s from {got.start_seconds:.2f} s "
          f"({seconds_of_video:.1f} s of video in {time.time() - t0:.1f} s)")
    return 0
