"""`vreloc serve`: serve an exported model and/or library search over TF Serving's gRPC and REST APIs (serving.server)."""
from __future__ import annotations

import argparse

from serving import signature as sig
from serving.batching import BatchingOptions
from serving.metrics import PROMETHEUS_PATH, read_monitoring_config
from serving.validation import RequestLimits


def _label(text: str):
    label, sep, version = text.partition("=")
    if not sep or not label or not version.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=VERSION, e.g. stable=1")
    return label, int(version)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-base-path", help="BASE/NAME folder holding integer version folders")
    parser.add_argument("--index", help="serve library search of this index too, in the same process and on the same "
                                        "ports (serving/search_servable.py: model 'search', PredictRequest query "
                                        "[Lq, D] -> top-k tensors); without --model-base-path, search alone")
    parser.add_argument("--search-model", metavar="RUN", help="with --index: run folder (default: the index's model)")
    parser.add_argument("--search-model-name", default="search",
                        help="with --index: the name clients use for search (default %(default)s)")
    parser.add_argument("--model-name", default=None, help="name clients use in model_spec (default: base path's last folder)")
    parser.add_argument("--port", type=int, default=sig.GRPC_PORT, help="gRPC port (default %(default)s; 0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (logged as a warning)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between scans of the base path for new versions (default %(default)s; 0 = never)")
    parser.add_argument("--version-settle-seconds", type=float, default=sig.VERSION_SETTLE_SECONDS,
                        help="a version folder loads once nothing in it changed for this long, so a copy in "
                             "progress is never served (default %(default)s)")
    parser.add_argument("--version-policy", default="latest",
                        help="latest | latest:N | all | specific:V1,V2 (default %(default)s: the highest version)")
    parser.add_argument("--version-label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                        help="a version label clients may ask for (repeatable), e.g. stable=1 canary=2")
    parser.add_argument("--rest-port", type=int, default=None,
                        help=f"serve TF Serving's REST API on this port too (TF Serving uses {sig.REST_PORT}; "
                             "0 = any free port; default: no REST API)")
    parser.add_argument("--rest-timeout", type=float, default=sig.REST_TIMEOUT_SECONDS,
                        help="seconds a REST request may take, from connecting through reading its body to the answer; "
                             "a client that stalls longer is dropped (default %(default)s)")
    parser.add_argument("--rest-max-connections", type=int, default=sig.REST_MAX_CONNECTIONS,
                        help="REST connections served at once; more are answered 503 (default %(default)s)")
    parser.add_argument("--max-query-length", type=int, default=sig.MAX_QUERY_LENGTH, help="largest Lq (default %(default)s)")
    parser.add_argument("--max-reference-length", type=int, default=sig.MAX_REFERENCE_LENGTH,
                        help="largest Lr (default %(default)s)")
    parser.add_argument("--max-batch-size", type=int, default=sig.MAX_BATCH_SIZE,
                        help="largest batch of a request, and of a model call when batching (default %(default)s)")
    parser.add_argument("--enable-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="merge concurrent requests into one model call (default: on, which measured faster "
                             "with and without XLA, see serving/README.md)")
    parser.add_argument("--batch-timeout-micros", type=int, default=sig.BATCH_TIMEOUT_MICROS,
                        help="how long a queued request waits for others to batch with (default %(default)s: "
                             "batch only what is already queued)")
    parser.add_argument("--xla-cache-dir", default=None,
                        help="keep compiled XLA programs here across restarts (default: ~/.cache/vreloc/xla; "
                             "'' = do not keep them)")
    parser.add_argument("--tensorflow-intra-op-parallelism", type=int, default=sig.INTRA_OP_THREADS,
                        help="threads one model call may use (TF Serving's flag; default %(default)s: calls side by "
                             "side use the cores better, serving/README.md; 0 = one per core)")
    parser.add_argument("--tensorflow-inter-op-parallelism", type=int, default=0,
                        help="threads running independent ops and calls (default %(default)s: one per core)")
    parser.add_argument("--max-workers", type=int, default=8, help="gRPC worker threads (default %(default)s)")
    parser.add_argument("--enable-prometheus", action="store_true",
                        help="serve Prometheus metrics on the REST port at /monitoring/prometheus/metrics "
                             "(serving/metrics.py; needs --rest-port)")
    parser.add_argument("--monitoring-config-file", default=None,
                        help="TF Serving's MonitoringConfig text proto, e.g. "
                             "'prometheus_config { enable: true, path: \"/metrics\" }' (instead of --enable-prometheus)")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds SIGTERM/SIGINT lets running requests finish; then they stop (default %(default)s)")


def main(args: argparse.Namespace) -> int:
    # heavy: TensorFlow (Serving), loaded when the server starts, not for --help
    from serving.server import default_xla_cache_dir, serve_until_signal, start_server

    metrics_path = PROMETHEUS_PATH if args.enable_prometheus else None
    if args.monitoring_config_file:
        metrics_path = read_monitoring_config(args.monitoring_config_file) or metrics_path
    limits = RequestLimits(args.max_query_length, args.max_reference_length, args.max_batch_size)
    batching = BatchingOptions(args.enable_batching, args.max_batch_size, args.batch_timeout_micros)
    handle = start_server(args.model_base_path, args.model_name, args.port, args.host,
                          allow_remote=args.allow_remote, tls_cert=args.tls_cert, tls_key=args.tls_key,
                          poll_interval=args.poll_interval, version_policy=args.version_policy,
                          version_labels=dict(args.version_label), limits=limits, batching=batching,
                          rest_port=args.rest_port, rest_timeout=args.rest_timeout,
                          xla_cache_dir=default_xla_cache_dir() if args.xla_cache_dir is None else args.xla_cache_dir,
                          max_workers=args.max_workers,
                          tensorflow_threads=(args.tensorflow_intra_op_parallelism,
                                              args.tensorflow_inter_op_parallelism),
                          index=args.index, search_run=args.search_model, search_model_name=args.search_model_name,
                          metrics_path=metrics_path, rest_max_connections=args.rest_max_connections,
                          settle_seconds=args.version_settle_seconds)
    print(f"listening on {handle.address}" + (f", REST on port {handle.rest_port}" if handle.rest else "")
          + (f", metrics at {metrics_path}" if handle.metrics is not None else ""), flush=True)
    serve_until_signal(handle, args.grace)
    return 0
