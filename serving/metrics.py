"""The server's Prometheus metrics: what TF Serving exports on ``/monitoring/prometheus/metrics``, under its names.

Why TF Serving's names: dashboards and alerts written for TF Serving keep working
when they point at ``vreloc serve``. Every series is made by ``prometheus-client``
(its text exposition format), in a registry of the server's own, so two servers in
one process never mix their counts. Counters appear with ``_total`` appended, as
``prometheus-client`` writes every counter (``:tensorflow:serving:request_count_total``).

==========================================================  =========  ===========================================
series                                                      type       labels
==========================================================  =========  ===========================================
``:tensorflow:serving:request_count``                       counter    model_name, version, status, entrypoint
``:tensorflow:serving:request_latency`` (microseconds)      histogram  model_name, version, API, entrypoint
``:tensorflow:serving:batching_session:processed_batch_size``  histogram  model_name (pairs per model call)
``:tensorflow:serving:batching_session:queuing_latency``    histogram  model_name (microseconds a chunk queued)
``:vreloc:serving:loaded_version`` (ours: TF Serving has none)  gauge  model_name, version (1 per served version)
``process_resident_memory_bytes`` etc. (prometheus-client's)  gauge    (the process: memory, CPU, open files)
==========================================================  =========  ===========================================

``status`` is the gRPC code name (``OK``, ``INVALID_ARGUMENT``, ...), ``entrypoint``
``GRPC`` or ``REST``, ``version`` empty when the request was refused before a
version was chosen. Enabled by ``vreloc serve --enable-prometheus`` or a
``--monitoring-config-file`` (TF Serving's MonitoringConfig text proto).
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

from vreloc_tf.errors import InputError

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default prometheus_config.path
# Microseconds: 10 us .. ~100 s, x2.5 apart (TF Serving's latency histograms are in microseconds too).
LATENCY_BUCKETS_US = tuple(10 * 2.5 ** k for k in range(18))
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServerMetrics:
    """One server's metrics; ``exposition()`` is the body of a scrape."""

    def __init__(self, models: Optional[Dict[str, "object"]] = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = Counter(":tensorflow:serving:request_count",
                                     "The number of requests answered, by model, version and status.",
                                     ["model_name", "version", "status", "entrypoint"], registry=self.registry)
        self.request_latency = Histogram(":tensorflow:serving:request_latency",
                                         "Time to answer a request, in microseconds.",
                                         ["model_name", "version", "API", "entrypoint"],
                                         buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self.batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                    "Pairs in each model call (real ones, before padding).", ["model_name"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=self.registry)
        self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                         "Time a chunk of a request waited for its model call, in microseconds.",
                                         ["model_name"], buckets=LATENCY_BUCKETS_US, registry=self.registry)
        self.models = models if models is not None else {}
        self.registry.register(_LoadedVersions(self.models))
        # process_resident_memory_bytes & co.: what to alert on while TensorFlow keeps the compiled programs
        # of retired XLA versions (serving/README.md, "Versions").
        from prometheus_client import ProcessCollector

        ProcessCollector(registry=self.registry)

    def observe_request(self, model_name: str, version: Optional[int], status: str, api: str, entrypoint: str,
                        seconds: float) -> None:
        """Count one answered (or refused) request."""
        version_text = "" if version is None else str(version)
        self.request_count.labels(model_name, version_text, status, entrypoint).inc()
        self.request_latency.labels(model_name, version_text, api, entrypoint).observe(seconds * 1e6)

    def batch_observer(self, model_name: str) -> Callable[[int, Sequence[float]], None]:
        """A callback for one model's executor: (pairs in a model call, seconds each chunk of it queued)."""
        sizes = self.batch_size.labels(model_name)
        queued = self.queuing_latency.labels(model_name)

        def observe(size: int, queue_seconds: Sequence[float]) -> None:
            sizes.observe(size)
            for seconds in queue_seconds:
                queued.observe(seconds * 1e6)

        return observe

    def exposition(self) -> Tuple[bytes, str]:
        """(body, Content-Type) of a scrape, in Prometheus's text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LoadedVersions:
    """``:vreloc:serving:loaded_version``, read from the served models at each scrape."""

    def __init__(self, models: Dict[str, "object"]):
        self.models = models

    def describe(self):
        return []

    def collect(self) -> Iterable:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(":vreloc:serving:loaded_version", "1 for each version taking traffic.",
                                   labels=["model_name", "version"])
        for name, model in sorted(self.models.items()):
            for version in model.versions:
                family.add_metric([name, str(version)], 1)
        yield family


def read_monitoring_config(path: str) -> Optional[str]:
    """The Prometheus path a TF Serving ``--monitoring_config_file`` enables, None when it enables none.

    The file is MonitoringConfig in text-proto form, as TF Serving reads it::

        prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"--monitoring-config-file {path}: cannot be read ({exc.strerror})") from None
    block = re.search(r"prometheus_config\s*:?\s*\{(?P<body>[^}]*)\}", text)
    if block is None:
        if text.strip():
            raise InputError(f"--monitoring-config-file {path}: expected a MonitoringConfig text proto such as "
                             f'prometheus_config {{ enable: true, path: "{PROMETHEUS_PATH}" }}')
        return None
    body = block["body"]
    unknown = set(re.findall(r"(\w+)\s*:", body)) - {"enable", "path"}
    if unknown:
        raise InputError(f"--monitoring-config-file {path}: unknown prometheus_config field(s) {sorted(unknown)}; "
                         f"it takes enable and path")
    enable = re.search(r"enable\s*:\s*(\w+)", body)
    if enable is None or enable[1] not in ("true", "false"):
        raise InputError(f"--monitoring-config-file {path}: prometheus_config needs enable: true or enable: false")
    path_match = re.search(r'path\s*:\s*"([^"]*)"', body)
    metrics_path = path_match[1] if path_match else PROMETHEUS_PATH
    if not metrics_path.startswith("/"):
        raise InputError(f"--monitoring-config-file {path}: path {metrics_path!r} must start with '/'")
    return metrics_path if enable[1] == "true" else None
