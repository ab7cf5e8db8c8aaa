"""The backbone flags shared by every command that turns video into features.

`extract-video`, `features`, `locate`, `search` and `index build` take the same
``--backbone/--weights/--random-weights/--fps`` group, so a user learns it once and each
command builds identical :class:`pipeline.backbones.BackboneOptions` from it. Commands that
read an artifact which records its features (a data folder, a run, an export, an index)
default to that artifact's backbone; flags given anyway must describe the same features.
"""
from __future__ import annotations

import argparse
from typing import Optional

from pipeline.backbones import BACKBONES, DEFAULT_CLIP_FPS, BackboneOptions


def add_backbone_arguments(parser: argparse.ArgumentParser, default_from: Optional[str] = None) -> None:
    """The flag group; ``default_from`` names the artifact whose backbone is used when no flag is given."""
    where = f" (default: {default_from}'s)" if default_from else " (default c3d, the paper's)"
    g = parser.add_argument_group("backbone: how frames become features (docs/YOUR_VIDEOS.md)")
    g.add_argument("--backbone", choices=BACKBONES, default=None,
                   help=f"c3d: Sports-1M C3D fc7 per 16 frames; clip: CLIP image embeddings of sampled frames{where}")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--weights", metavar="PATH|HANDLE",
                   help="c3d: the Sports-1M weights file (HDF5); clip: a keras-hub preset handle "
                        "(e.g. clip_vit_base_patch32, downloaded at first use) or a local preset folder")
    w.add_argument("--random-weights", action="store_true",
                   help="seeded RANDOM weights: meaningless features, for tests and offline smoke runs (logged)")
    g.add_argument("--weights-seed", type=int, default=0, metavar="N", help="seed of --random-weights (default 0)")
    g.add_argument("--weights-sha256", metavar="HEX", help="refuse a weights file with another SHA-256")
    g.add_argument("--fps", type=float, default=None,
                   help=f"clip: frames sampled per second (default {DEFAULT_CLIP_FPS:g}, one every "
                        f"{1 / DEFAULT_CLIP_FPS:g} s)")
    g.add_argument("--c3d-mean", metavar="FILE", help="c3d: a mean cube .npy (default: per-channel BGR mean)")
    g.add_argument("--backbone-batch", type=int, default=0, metavar="N",
                   help="clips (c3d) or frames (clip) per forward pass (default 8 / 16)")


def given(args: argparse.Namespace) -> bool:
    """Whether any backbone flag was given (else a command may take an artifact's backbone)."""
    return bool(args.backbone or args.weights or args.random_weights or args.fps is not None or args.c3d_mean
                or args.weights_sha256)


def options_from_args(args: argparse.Namespace, default: Optional[BackboneOptions] = None) -> BackboneOptions:
    """BackboneOptions from the flags; flags not given are taken from ``default`` (an artifact's backbone)."""
    base = default or BackboneOptions()
    weights_given = bool(args.weights or args.random_weights)
    name = args.backbone or base.name
    if default is not None and args.backbone and args.backbone != default.name and not weights_given:
        weights, seed = None, None  # another backbone: the artifact's weights do not apply
    elif weights_given:
        weights, seed = args.weights, (args.weights_seed if args.random_weights else None)
    else:
        weights, seed = base.weights, base.random_seed
    fps = args.fps if args.fps is not None else (base.sample_fps if name == base.name else None)
    return BackboneOptions(name=name, weights=weights, random_seed=seed, sample_fps=fps,
                           c3d_mean=args.c3d_mean or (base.c3d_mean if name == base.name else None),
                           weights_sha256=args.weights_sha256 or (base.weights_sha256 if weights == base.weights
                                                                   and name == base.name else None),
                           batch_size=args.backbone_batch or base.batch_size)
