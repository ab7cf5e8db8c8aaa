"""`vreloc pipeline run`: the whole job as stages with manifests and caching (see vreloc/orchestrator.py)."""
from __future__ import annotations

import argparse

from pipeline.synth import GEOMETRIES
from vreloc import backbone_args
from vreloc.backbone_args import add_backbone_arguments
from vreloc.orchestrator import STAGES, FeatureSource, PipelineRun, parse_models
from vreloc_tf.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) the pipeline in a work folder")
    run.add_argument("--workdir", required=True, help="run folder (created; reruns skip unchanged stages)")
    run.add_argument("--config", default="tiny", help="config file or name in configs/ (default: tiny)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    run.add_argument("--data", default="synth",
                     help="'synth' (generated ActivityNet-format data, the default), an ActivityNet-format folder "
                          "(sub_activitynet_v1-3.c3d.hdf5 + train/val/test.json), or a video folder "
                          "(annotations.json + videos/*, through extract-video)")
    run.add_argument("--family", default="demo",
                     help="feature family of --data synth (demo, substates, periodic, shots, distractor; docs/DATA.md)")
    run.add_argument("--geometry", default="default", choices=list(GEOMETRIES),
                     help="split geometry of --data synth (default %(default)s: >= 500 test pairs; 'smoke': a few "
                          "dozen videos, the whole chain in about two minutes; docs/DATA.md)")
    add_backbone_arguments(run)  # for a video folder
    run.add_argument("--runner", default=None, help="Beam runner for FeatureGen (default DirectRunner)")
    run.add_argument("--force", action="append", default=[], choices=STAGES,
                     help="rerun this stage (and the ones after it) even if its inputs did not change")
    run.add_argument("--models", default="full,weak", metavar="LIST",
                     help="models to train, evaluate and push, comma-separated: full, weak, cgbm (Feng et al.'s "
                          "CGBM, the 'CGBM' row) (default: full,weak)")
    run.add_argument("--model-name", default="vreloc", help="serving model name prefix (default: vreloc)")
    run.add_argument("--no-serve-check", action="store_true",
                     help="do not start the gRPC server and send a test query at the end")


def main(args: argparse.Namespace) -> int:
    models = parse_models(args.models)
    cfg = load_config(args.config, args.set)

    backbone = backbone_args.options_from_args(args) if backbone_args.given(args) else None
    source = FeatureSource(args.data, family=args.family, geometry=args.geometry, runner=args.runner,
                           backbone=backbone)
    return PipelineRun(args.workdir, cfg, args.config, source, args.force, args.model_name,
                       serve_check=not args.no_serve_check, models=models).run()
