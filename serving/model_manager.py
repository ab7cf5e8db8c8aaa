"""The versions of a served model: which ones the policy wants, loading and warm-up, hot reload, in-flight counts.

Behaviour follows TF Serving where the two overlap: versions are integer
folders of the base path; the base path is polled and a new version is loaded
(and warmed up from ``assets.extra``) *before* it takes traffic; a retired
version is released only when its in-flight requests have finished; if no
version the policy wants has loaded, the old ones keep serving (availability
first). ``model_spec.version`` / ``version_label`` pick a loaded version; an
unknown version is NOT_FOUND, an unknown label INVALID_ARGUMENT.

Beyond TF Serving: a version that failed to load is retried as soon as anything
in its folder changed (:func:`tree_signature`), so a version copied
non-atomically loads once the copy is complete; names in the base path that
are not versions are ignored with one warning each.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc

from serving import signature as sig
from serving.batching import BatchingOptions, Executor
from serving.status import ServingError
from serving.tensor_codec import decode_inputs
from serving.validation import RequestLimits, validate_inputs
from serving.versions import is_version_name, list_versions
from vreloc_tf.errors import InputError
from vreloc_tf.files import read_json

log = logging.getLogger("serving.model_manager")
_NO_LIMITS = RequestLimits(2**31 - 1, 2**31 - 1, 2**31 - 1)


@dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions on disk are served: TF Serving's model_version_policy."""

    kind: str = "latest"  # latest | all | specific
    count: int = 1  # latest:N
    versions: tuple = ()  # specific:1,2

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        kind, _, rest = text.partition(":")
        try:
            if kind == "latest":
                count = int(rest) if rest else 1
                if count < 1:
                    raise ValueError
                return cls("latest", count=count)
            if kind == "all" and not rest:
                return cls("all")
            if kind == "specific" and rest:
                return cls("specific", versions=tuple(sorted(int(v) for v in rest.split(","))))
        except ValueError:
            pass
        raise InputError(f"--version-policy {text!r}: expected latest, latest:N (N >= 1), all or specific:V1,V2")

    def select(self, on_disk: Sequence[int]) -> List[int]:
        if self.kind == "latest":
            return sorted(on_disk)[-self.count:]
        if self.kind == "all":
            return sorted(on_disk)
        return [v for v in sorted(on_disk) if v in self.versions]


class LoadedVersion:
    """One SavedModel version in memory: its signatures, how its requests run, and an in-flight count."""

    def __init__(self, model_name: str, version: int, path: str, batching: BatchingOptions = BatchingOptions()):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.model_name = model_name
        self.version = version
        self.path = path
        self._saved = tf.saved_model.load(path)
        self.signatures = dict(self._saved.signatures)
        if sig.SIGNATURE_NAME not in self.signatures:
            raise ValueError(f"{path}: no '{sig.SIGNATURE_NAME}' signature (found {sorted(self.signatures)})")
        # The SignatureDefs as written (method name included), for GetModelMetadata.
        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(path, sig.SAVED_MODEL_FILE), "rb") as fh:
            saved_model.ParseFromString(fh.read())
        meta_graph = saved_model.meta_graphs[0]
        self.signature_defs = {key: value for key, value in meta_graph.signature_def.items() if not key.startswith("__")}
        # An XLA function compiles once per input shape: pad calls to the bucket shapes to bound them.
        self.xla = any(f.attr["_XlaMustCompile"].b for f in meta_graph.graph_def.library.function)
        query_spec = self.signatures[sig.SIGNATURE_NAME].structured_input_signature[1][sig.QUERY]
        self.feature_dim = int(query_spec.shape[-1])
        metadata_path = os.path.join(path, sig.ASSETS_EXTRA_DIR, sig.METADATA_FILE)
        self.metadata = read_json(metadata_path, "export metadata file") if os.path.exists(metadata_path) else {}
        self.batching = batching
        self.executor = Executor(lambda arrays: self._call(sig.SIGNATURE_NAME, arrays), self.batching,
                                 pad_to_buckets=self.xla, name=f"{model_name}-v{version}")
        self.in_flight = 0
        self.loaded_at = time.time()

    def _call(self, signature_name: str, arrays: Dict[str, "object"]) -> Dict[str, "object"]:
        import tensorflow as tf

        outputs = self.signatures[signature_name](**{name: tf.constant(value) for name, value in arrays.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def run(self, signature_name: str, arrays: Dict[str, "object"],
            is_active: Callable[[], bool] = lambda: True) -> Dict[str, "object"]:
        """Call one signature on validated NumPy inputs; NumPy outputs (serving_default through the executor)."""
        if signature_name == sig.SIGNATURE_NAME:
            return self.executor.run(arrays, is_active)
        return self._call(signature_name, arrays)

    def warm_up(self) -> int:
        """Replay assets.extra/tf_serving_warmup_requests, as TF Serving does at load; returns the count.

        They run the way requests run (padded to the bucket shapes), so an XLA
        signature is compiled for them before the version takes traffic. The
        exporter's own requests are checked against the signature but not against
        the client-facing size limits, which a server may set below the warm-up shapes.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        path = os.path.join(self.path, sig.ASSETS_EXTRA_DIR, sig.WARMUP_FILE)
        if not os.path.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = entry.predict_log.request
            arrays = decode_inputs(request.inputs)
            validate_inputs(arrays, self.feature_dim, _NO_LIMITS)
            self.run(request.model_spec.signature_name or sig.SIGNATURE_NAME, arrays)
            count += 1
        return count

    def close(self) -> None:
        """Stop this version's batch thread (it is no longer served and no request holds it)."""
        self.executor.close()


def tree_signature(path: str) -> Tuple[Tuple[str, int, int], ...]:
    """(relative path, size, mtime in ns) of every file under ``path``: changes while a copy is in progress.

    Why the whole tree: a plain ``cp -r`` writes saved_model.pb first and the
    variables seconds later; a failed load is retried once anything in the
    folder changed, so the version loads once the copy is complete.
    """
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # removed while we walked: the next scan sees the change
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


@dataclass
class _Failure:
    version: int
    message: str
    tree: Tuple[Tuple[str, int, int], ...]


class ServedModel:
    """The versions of one model that take traffic; rescanned every ``poll_interval`` seconds.

    A request takes a reference to one :class:`LoadedVersion` under the lock and
    counts itself in flight; a rescan loads new versions first, then swaps the
    served set, and keeps retired versions until their in-flight count is zero.
    """

    def __init__(self, name: str, base_path: str, policy: VersionPolicy = VersionPolicy(),
                 labels: Optional[Dict[str, int]] = None, limits: RequestLimits = RequestLimits(),
                 batching: BatchingOptions = BatchingOptions()):
        self.name = name
        self.base_path = base_path
        self.policy = policy
        self.labels = dict(labels or {})
        self.limits = limits
        self.batching = batching
        self._lock = threading.Lock()
        self._served: Dict[int, LoadedVersion] = {}
        self._retired: List[LoadedVersion] = []
        self._failed: Dict[int, _Failure] = {}
        self._warned: set = set()
        self._scan_lock = threading.Lock()

    # -- reload ------------------------------------------------------------
    def _warn_odd_names(self) -> None:
        """One warning per name in the base path that is neither a version folder nor hidden."""
        try:
            names = os.listdir(self.base_path)
        except OSError:
            return
        for name in names:
            if name.startswith(".") or is_version_name(name) or name in self._warned:
                continue
            self._warned.add(name)
            log.warning("model %s: ignoring %r in %s: versions are folders named by an integer", self.name, name,
                        self.base_path)

    def scan(self) -> None:
        """Load versions the policy wants, then swap; release retired versions no request holds."""
        with self._scan_lock:
            self._warn_odd_names()
            wanted = self.policy.select(list_versions(self.base_path))
            current = dict(self._served)
            loaded = {}
            for version in wanted:
                if version in current:
                    continue
                path = os.path.join(self.base_path, str(version))
                tree = tree_signature(path)
                failure = self._failed.get(version)
                if failure and failure.tree == tree:
                    continue  # failed before and nothing in the folder changed since: do not retry every poll
                started = time.perf_counter()
                try:
                    servable = LoadedVersion(self.name, version, path, self.batching)
                    try:
                        warmups = servable.warm_up()
                    except BaseException:
                        servable.close()
                        raise
                except Exception as exc:  # a broken or half-copied export must not take the server down
                    log.error("model %s version %d: failed to load from %s: %s (retried when the folder changes)",
                              self.name, version, path, exc)
                    self._failed[version] = _Failure(version, f"{type(exc).__name__}: {exc}", tree)
                    continue
                self._failed.pop(version, None)
                loaded[version] = servable
                log.info("model %s: loaded version %d from %s in %.2f s (%d warm-up requests; XLA %s, batching %s)",
                         self.name, version, path, time.perf_counter() - started, warmups,
                         "yes" if servable.xla else "no", "on" if servable.batching.enabled else "off")
            with self._lock:
                new = {v: s for v, s in current.items() if v in wanted}
                new.update(loaded)
                if not new and current and wanted:
                    # Availability first (TF Serving's default policy): keep serving the old
                    # versions until one the policy wants has loaded.
                    new = current
                for version, servable in current.items():
                    if version not in new:
                        self._retired.append(servable)
                        log.info("model %s: version %d retired (%d request(s) in flight)",
                                 self.name, version, servable.in_flight)
                self._served = new
                still = []
                for servable in self._retired:
                    if servable.in_flight:
                        still.append(servable)
                    else:
                        servable.close()
                        log.info("model %s: version %d unloaded", self.name, servable.version)
                self._retired = still

    def close(self) -> None:
        """Stop every version's batch thread (the server is stopping)."""
        with self._lock:
            for servable in list(self._served.values()) + self._retired:
                servable.close()

    @property
    def versions(self) -> List[int]:
        """Versions taking traffic now."""
        with self._lock:
            return sorted(self._served)

    def versions_loaded(self) -> List[LoadedVersion]:
        """The served versions themselves, ascending."""
        with self._lock:
            return [self._served[v] for v in sorted(self._served)]

    @property
    def retired_versions(self) -> List[int]:
        """Versions no longer served but still held by in-flight requests."""
        with self._lock:
            return sorted(s.version for s in self._retired)

    # -- requests ----------------------------------------------------------
    def acquire(self, model_spec) -> LoadedVersion:
        """The version a ModelSpec asks for, counted in flight; release() it when done."""
        with self._lock:
            if model_spec.HasField("version"):
                version = model_spec.version.value
                servable = self._served.get(version)
                if servable is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find version {version} of model {self.name} "
                                       f"(loaded: {sorted(self._served) or 'none'})")
            elif model_spec.version_label:
                label = model_spec.version_label
                if label not in self.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"Unrecognized servable version label: {label}")
                servable = self._served.get(self.labels[label])
                if servable is None:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"version label {label!r} points to version {self.labels[label]} of model "
                                       f"{self.name}, which is not loaded")
            else:
                if not self._served:
                    raise ServingError(grpc.StatusCode.NOT_FOUND,
                                       f"Could not find any versions of model {self.name} in {self.base_path}")
                servable = self._served[max(self._served)]
            servable.in_flight += 1
            return servable

    def release(self, servable: LoadedVersion) -> None:
        with self._lock:
            servable.in_flight -= 1

    def in_flight(self) -> int:
        """Requests running now, on served and retired versions."""
        with self._lock:
            return sum(s.in_flight for s in list(self._served.values()) + self._retired)

    def status(self, version: Optional[int] = None):
        """[(version, state name, error message)] for GetModelStatus."""
        with self._lock:
            rows = [(v, "AVAILABLE", "") for v in sorted(self._served)]
        rows += [(f.version, "END", f.message) for f in self._failed.values()]
        if version is not None:
            rows = [r for r in rows if r[0] == version]
            if not rows:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Could not find version {version} of model {self.name}")
        return sorted(rows)
