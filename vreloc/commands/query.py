"""`vreloc query`: send one query/reference pair (.npy features) to a gRPC server and print the segment."""
from __future__ import annotations

import argparse

from serving import signature as sig
from serving.client import predict, seconds
from vreloc.features import looks_like_video
from vreloc_tf.contract import FRAMES_PER_FEATURE
from vreloc_tf.errors import InputError


class RequestRefused(InputError):
    """The server answered the request with an error status (bad input, unknown model, no server there)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=f"127.0.0.1:{sig.GRPC_PORT}", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--query", required=True, help=".npy file, [Lq, D] float32 query features")
    parser.add_argument("--reference", required=True, help=".npy file, [Lr, D] float32 reference features")
    parser.add_argument("--model-name", default=sig.DEFAULT_MODEL_NAME, help="model_spec.name (default %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="model_spec.version (default: the highest served)")
    parser.add_argument("--version-label", default=None, help="model_spec.version_label, e.g. stable or canary")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default %(default)s)")
    parser.add_argument("--wait-for-server", action="store_true",
                        help="wait (within --timeout) for a server that is still starting, instead of failing")
    parser.add_argument("--frames-per-feature", type=int, default=None,
                        help=f"frames per feature ({FRAMES_PER_FEATURE} for C3D, 1 for CLIP's sampled frames); "
                             f"with --fps (CLIP: the sampling rate), also print seconds")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of the reference video")
    parser.add_argument("--tls-ca", default=None, help="PEM file of the CA (or self-signed cert) to trust: use TLS")
    parser.add_argument("--tls-server-name", default=None, help="expected TLS server name if not the host in --server")


def load_features(path: str, name: str):
    """An [L, D] array from a .npy file; InputError naming the file otherwise (a video file gets the way on)."""
    import numpy as np

    if looks_like_video(path):
        raise InputError(f"--{name} {path} is a video file; vreloc query sends features (.npy [L, D]): make them with "
                         f"`vreloc features --video {path} --like DATA_OR_MODEL --out {name}.npy`, or find a clip in a "
                         f"video file directly with `vreloc locate`")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"--{name} {path}: cannot read a .npy array ({exc})") from None
    if array.ndim != 2:
        raise InputError(f"--{name} {path}: expected [L, D] features, got shape {list(array.shape)}")
    return array


def main(args: argparse.Namespace) -> int:
    import grpc

    if (args.frames_per_feature is None) != (args.fps is None):
        raise InputError("give both --frames-per-feature and --fps to print seconds")
    if args.fps is not None and (args.fps <= 0 or args.frames_per_feature <= 0):
        raise InputError("--fps and --frames-per-feature must be positive")
    query = load_features(args.query, sig.QUERY)
    reference = load_features(args.reference, sig.REFERENCE)
    try:
        result = predict(args.server, query, reference, args.model_name, args.timeout,
                         version=args.version, version_label=args.version_label, tls_ca=args.tls_ca,
                         tls_server_name=args.tls_server_name, wait_for_ready=args.wait_for_server)
    except grpc.RpcError as exc:
        hint = " (is a server listening there?)" if exc.code() == grpc.StatusCode.UNAVAILABLE else ""
        raise RequestRefused(f"{args.server} answered {exc.code().name}: {exc.details()}{hint}") from None
    print(f"model {result['model_name']} version {result['version']}")
    start, end = result[sig.START], result[sig.END]
    print(f"start {start}  end {end}  (feature indices, end exclusive)")
    if args.fps is not None:
        print(f"start {seconds(start, args.frames_per_feature, args.fps):.2f} s  "
              f"end {seconds(end, args.frames_per_feature, args.fps):.2f} s")
    print(f"score {result[sig.SCORE]:.6f}")
    return 0
