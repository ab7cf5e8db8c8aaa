"""The versions of a served model: which ones the policy wants, loading and warm-up, hot reload, in-flight counts.

Behaviour follows TF Serving where the two overlap: versions are folders of the
base path named by a base-10 integer that fits int64 (``007`` is version 7;
vreloc_tf/data/versions.py); the base path is polled and a new version is loaded
(and warmed up from ``assets.extra``) *before* it takes traffic; a retired
version is released only when its in-flight requests have finished; if no
version the policy wants has loaded, the old ones keep serving (availability
first). ``model_spec.version`` / ``version_label`` pick a loaded version; an
unknown version is NOT_FOUND, an unknown label INVALID_ARGUMENT.

Beyond TF Serving: a version is loaded only once its whole tree has stopped
changing (``settle_seconds``, :meth:`ServedModel._settled`), so a version copied
non-atomically is not served before its ``assets.extra`` (warm-up requests)
arrived; a version that failed to load is retried as soon as anything in its
folder changed (:func:`tree_signature`); names in the base path that are not
versions are ignored with one warning each; a released version's memory is
returned to the operating system (:func:`free_memory`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import grpc

from serving import signature as sig
from serving.batching import BatchingOptions
from serving.model_servable import LoadedVersion
from serving.status import ServingError
from serving.validation import RequestLimits
from vreloc_tf.data.versions import read_base
from vreloc_tf.errors import InputError

log = logging.getLogger("serving.model_manager")
DEFAULT_SETTLE_SECONDS = sig.VERSION_SETTLE_SECONDS
STARTUP_WAIT_SECONDS = 30.0  # the first scan's longest wait for a version still being copied


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


def tree_signature(path: str) -> Tuple[Tuple[str, int, int], ...]:
    """(relative path, size, mtime in ns) of every file under ``path``: changes while a copy is in progress.

    Why the whole tree: a plain ``cp -r`` writes saved_model.pb first and the
    variables seconds later; a failed load is retried once anything in the
    folder changed, so the version loads once the copy is complete.
    """
    return _tree_state(path)[0]


def _tree_state(path: str) -> Tuple[Tuple[Tuple[str, int, int], ...], int]:
    """:func:`tree_signature` and the newest change under ``path`` (ns since the epoch).

    The newest change is the latest mtime *or ctime* of any file or folder, the
    root included: ``cp -a`` and ``shutil.copytree`` keep the source's old mtimes,
    but the kernel sets the ctime when a file arrives, and a folder's times move
    when an entry is added to it (an empty ``assets.extra`` made before its files).
    """
    entries, newest = [], 0
    for root, _, files in os.walk(path):
        try:
            st = os.stat(root)
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            pass
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:  # removed while we walked: the next scan sees the change
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return tuple(sorted(entries)), newest


def free_memory() -> None:
    """Collect the released version's Python cycles and hand glibc's free heap back to the OS.

    Why: a retired version's TensorFlow objects sit in reference cycles (the loaded
    SavedModel, its functions, the executor's call), freed only by the cyclic
    collector; and glibc keeps freed heap pages mapped. Measured on a non-XLA
    export, RSS after each of 10 swaps as a share of one loaded version
    (tests/test_versions.py): 113-134 % without this, 103-115 % with
    ``gc.collect()`` alone, 100-101 % with ``malloc_trim(0)`` too. A C library
    without ``malloc_trim`` (musl, macOS) skips it.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


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
    ``settle_seconds``: how long a version's tree must have stood still before it
    is loaded (:meth:`_settled`; 0 loads whatever is complete at once).
    """

    def __init__(self, name: str, base_path: str, policy: VersionPolicy = VersionPolicy(),
                 labels: Optional[Dict[str, int]] = None, limits: RequestLimits = RequestLimits(),
                 batching: BatchingOptions = BatchingOptions(), settle_seconds: float = DEFAULT_SETTLE_SECONDS):
        if settle_seconds < 0:
            raise InputError(f"the settle time must be >= 0 seconds, got {settle_seconds}")
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
        self.settle_seconds = settle_seconds
        self._settling: Dict[int, Tuple[tuple, float]] = {}  # version -> (tree state, monotonic time first seen)
        self._said_settling: set = set()  # (version, folder) told "still changing" once
        self._scanned = False

    # -- reload ------------------------------------------------------------
    def _warn_ignored(self, ignored: Dict[str, str]) -> None:
        """One warning per name in the base path that is not served (not a version, above int64, a duplicate)."""
        for label, why in ignored.items():
            if label in self._warned:
                continue
            self._warned.add(label)
            log.warning("model %s: ignoring %s in %s: %s", self.name, label, self.base_path, why)

    def _settled(self, version: int, folder: str, path: str) -> bool:
        """Whether the version in ``folder`` has stopped changing: loadable now.

        Settled when nothing under it changed for ``settle_seconds``: either every
        file and folder's newest time (mtime or ctime) is that old -- so a restart
        loads what is on disk at once -- or its tree state has not changed across
        scans for that long (a clock skew with a network file system cannot hold a
        version back for ever). Why: a copy that is not one atomic rename writes
        saved_model.pb and the variables first and ``assets.extra`` later; loaded in
        between, the version would take traffic without its warm-up requests.
        """
        if self.settle_seconds <= 0:
            return True
        if not os.path.isdir(path):
            return False  # removed meanwhile: the next scan no longer lists it
        signature, newest = _tree_state(path)
        state = (folder, signature, newest)
        now = time.monotonic()
        seen = self._settling.get(version)
        if seen is None or seen[0] != state:
            self._settling[version] = seen = (state, now)
        return time.time() - newest / 1e9 >= self.settle_seconds or now - seen[1] >= self.settle_seconds

    def _load(self, version: int, folder: str) -> Optional[LoadedVersion]:
        """Load and warm up one settled version; None (logged, remembered in ``_failed``) when it fails."""
        path = os.path.join(self.base_path, folder)
        tree = tree_signature(path)
        failure = self._failed.get(version)
        if failure and failure.tree == tree:
            return None  # failed before and nothing in the folder changed since: do not retry every poll
        started = time.perf_counter()
        try:
            servable = LoadedVersion(self.name, version, path, self.batching, self.limits)
            try:
                warmups = servable.warm_up()
            except BaseException:
                servable.close()
                raise
        except Exception as exc:  # a broken or half-copied export must not take the server down
            log.error("model %s version %d: failed to load from %s: %s (retried when the folder changes)",
                      self.name, version, path, exc)
            self._failed[version] = _Failure(version, f"{type(exc).__name__}: {exc}", tree)
            free_memory()  # what the failed load allocated
            return None
        self._failed.pop(version, None)
        log.info("model %s: loaded version %d from %s in %.2f s (%d warm-up requests; XLA %s, batching %s)",
                 self.name, version, path, time.perf_counter() - started, warmups,
                 "yes" if servable.xla else "no", "on" if servable.batching.enabled else "off")
        return servable

    def scan(self) -> None:
        """Load settled versions the policy wants, then swap; release retired versions no request holds.

        The first scan (start-up) waits for a wanted version whose tree is still
        changing until it settles, rather than skipping it: with polling off nothing
        would scan again. A copy still going after ``STARTUP_WAIT_SECONDS`` (or twice
        the settle time, if longer) is left to later scans, which skip a version
        until it settles.
        """
        with self._scan_lock:
            listing = read_base(self.base_path)
            self._warn_ignored(listing.ignored)
            folders = listing.folders
            wanted = self.policy.select(sorted(folders))
            current = set(self._served)  # versions only: a retired one's memory must be free to go
            for version in list(self._settling):
                if version not in folders or version in current:
                    del self._settling[version]
            deadline = None if self._scanned else time.monotonic() + max(STARTUP_WAIT_SECONDS,
                                                                          2 * self.settle_seconds)
            self._scanned = True
            loaded = {}
            pending = [v for v in wanted if v not in current]
            while pending:
                waiting = []
                for version in pending:
                    if not self._settled(version, folders[version], os.path.join(self.base_path, folders[version])):
                        waiting.append(version)
                        continue
                    self._settling.pop(version, None)
                    self._said_settling.discard((version, folders[version]))
                    servable = self._load(version, folders[version])
                    if servable is not None:
                        loaded[version] = servable
                    del servable
                if not waiting or deadline is None or time.monotonic() >= deadline:
                    for version in waiting:
                        if (version, folders[version]) not in self._said_settling:
                            self._said_settling.add((version, folders[version]))
                            log.info("model %s: version %d in %s changed less than %.1f s ago: loaded once nothing "
                                     "in it has changed for that long (a copy may still be running)", self.name,
                                     version, os.path.join(self.base_path, folders[version]), self.settle_seconds)
                    break
                time.sleep(min(0.1, self.settle_seconds))
                pending = waiting
            self._swap(wanted, loaded)
            del loaded
            released = self._release_retired()
            if released:
                free_memory()
                for version in released:
                    log.info("model %s: version %d unloaded", self.name, version)

    def _swap(self, wanted: List[int], loaded: Dict[int, LoadedVersion]) -> None:
        """Serve the wanted versions among the loaded ones; retire the rest (availability first)."""
        with self._lock:
            current = self._served
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

    def _release_retired(self) -> List[int]:
        """Close the retired versions no request holds; their version numbers."""
        with self._lock:
            still, released = [], []
            for servable in self._retired:
                if servable.in_flight:
                    still.append(servable)
                else:
                    servable.close()
                    released.append(servable.version)
            self._retired = still
        return released

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
