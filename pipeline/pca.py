"""PCA fitted inside a Beam job from mergeable sufficient statistics.

The ActivityNet Challenge features are C3D fc7 (4,096-d) reduced to 500 dims by PCA; to
reduce features we extract ourselves the same way, the PCA is fitted over the training
split without ever holding all features in one place: each worker accumulates
``(count, sum x, sum x x^T)`` in float64 (:class:`PCAStatsCombineFn`), Beam merges the
accumulators, and :func:`fit_pca` eigen-decomposes the covariance once. With D = 4,096 an
accumulator is 128 MiB (the D x D outer-product sum), one per bundle before merging.

Conventions (those of scikit-learn's PCA, so results compare with any reference):

* covariance is the sample covariance (divided by ``count - 1``), and
  ``explained_variance`` are its eigenvalues, largest first;
* each component's sign is fixed so that its largest-magnitude entry is positive;
* the output always has exactly ``n_components`` dims, so downstream feature dims are
  predictable: components beyond the data's rank (fewer samples than dims, e.g. a small
  folder of videos) and beyond D itself (``n_components > D``) are zero rows with zero
  variance, and :func:`fit_pca` logs a warning saying how many carry variance.

``pca.npz`` holds ``mean`` [D], ``components`` [k, D] and ``explained_variance`` [k];
``PCA.transform(x) = (x - mean) @ components.T``.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import zipfile
from typing import Optional, Tuple

import apache_beam as beam
import numpy as np

from vreloc_tf.errors import InputError

log = logging.getLogger("vreloc.pca")

DEFAULT_COMPONENTS = 500

# (count, sum [D] float64, sum of outer products [D, D] float64); sums are None while empty.
Accumulator = Tuple[int, Optional[np.ndarray], Optional[np.ndarray]]


@dataclasses.dataclass(frozen=True)
class PCAStats:
    """Sufficient statistics of a set of vectors, the output of :class:`PCAStatsCombineFn`."""

    count: int
    total: np.ndarray  # [D] float64, sum of the vectors
    outer: np.ndarray  # [D, D] float64, sum of x x^T

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    def covariance(self) -> np.ndarray:
        """Sample covariance (ddof=1) in float64."""
        if self.count < 2:
            return np.zeros((self.dim, self.dim))
        mean = self.mean
        cov = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return (cov + cov.T) / 2  # exact symmetry for eigh


def _as_rows(element) -> np.ndarray:
    x = np.asarray(element, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"PCA input must be a vector [D] or a batch [n, D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"PCA input has non-finite values (batch of shape {x.shape})")
    return x


class PCAStatsCombineFn(beam.CombineFn):
    """Combine vectors [D] or batches [n, D] into :class:`PCAStats` (float64, mergeable).

    Elements of one combine must share D; ``dim`` (optional) checks it up front.
    """

    def __init__(self, dim: Optional[int] = None):
        super().__init__()
        self.dim = dim

    def create_accumulator(self) -> Accumulator:
        return (0, None, None)

    def _check_dim(self, have: Optional[np.ndarray], d: int) -> None:
        expected = self.dim if self.dim is not None else (None if have is None else have.shape[0])
        if expected is not None and d != expected:
            raise ValueError(f"PCA input has dim {d}, expected {expected}")

    def add_input(self, accumulator: Accumulator, element) -> Accumulator:
        count, total, outer = accumulator
        x = _as_rows(element)
        self._check_dim(total, x.shape[1])
        if len(x) == 0:
            return accumulator
        if total is None:
            return (len(x), x.sum(axis=0), x.T @ x)
        total += x.sum(axis=0)
        outer += x.T @ x
        return (count + len(x), total, outer)

    def merge_accumulators(self, accumulators) -> Accumulator:
        count, total, outer = 0, None, None
        for n, t, o in accumulators:
            if t is None:
                continue
            if total is None:
                count, total, outer = n, t.copy(), o.copy()
                continue
            if t.shape != total.shape:
                raise ValueError(f"cannot merge PCA statistics of dims {total.shape[0]} and {t.shape[0]}")
            count += n
            total += t
            outer += o
        return (count, total, outer)

    def extract_output(self, accumulator: Accumulator) -> PCAStats:
        count, total, outer = accumulator
        if total is None or count == 0:
            raise ValueError("PCA statistics are empty: no training vectors reached the combiner")
        return PCAStats(count=int(count), total=total, outer=outer)


@dataclasses.dataclass(frozen=True)
class PCA:
    """A fitted projection: mean [D], components [k, D] (rows orthonormal or zero), variances [k]."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    def __post_init__(self):
        mean, comps, var = (np.asarray(a) for a in (self.mean, self.components, self.explained_variance))
        if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0] or var.shape != comps.shape[:1]:
            raise ValueError(f"inconsistent PCA shapes: mean {mean.shape}, components {comps.shape}, "
                             f"explained_variance {var.shape} (expected [D], [k, D], [k])")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x) -> np.ndarray:
        """[..., D] -> float32 [..., k]."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise ValueError(f"PCA.transform: input dim {x.shape[-1]} does not match the PCA's dim {self.dim}")
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def save(self, path: str) -> None:
        """Write ``pca.npz`` (mean, components, explained_variance), replacing ``path`` whole.

        Local paths are written to a temporary file and renamed; other schemes (gs://...) go
        through Beam's FileSystems.
        """
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, components=self.components, explained_variance=self.explained_variance)
        data = buf.getvalue()
        path = os.fspath(path)
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.create(path) as fh:
                fh.write(data)
            return
        from vreloc_tf.files import atomic_path

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)

    @classmethod
    def load(cls, path: str) -> "PCA":
        path = os.fspath(path)
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as fh:
                data = io.BytesIO(fh.read())
        else:
            data = path
        try:
            with np.load(data, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise InputError(f"PCA file {path} is unreadable as .npz: {e}") from e
        missing = {"mean", "components", "explained_variance"} - set(arrays)
        if missing:
            raise InputError(f"PCA file {path} lacks {sorted(missing)} (has {sorted(arrays)})")
        try:
            return cls(mean=arrays["mean"], components=arrays["components"],
                       explained_variance=arrays["explained_variance"])
        except ValueError as e:
            raise InputError(f"PCA file {path}: {e}") from e


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (sklearn's svd_flip)."""
    if components.size == 0:
        return components
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def fit_pca(stats: PCAStats, n_components: int = DEFAULT_COMPONENTS) -> PCA:
    """Eigen-decompose the covariance of ``stats`` once; keep the top ``n_components``.

    Always returns exactly ``n_components`` components: those beyond the rank of the
    data (at most ``count - 1``; eigenvalues below ``max_eig * D * eps`` count as zero)
    or beyond D are zero, with a warning.
    """
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    dim = stats.dim
    eigvals, eigvecs = np.linalg.eigh(stats.covariance())
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    top = float(eigvals[0]) if dim else 0.0
    tol = max(top, 0.0) * dim * np.finfo(np.float64).eps
    rank = int(min(np.sum(eigvals > tol), max(stats.count - 1, 0)))
    kept = min(n_components, rank)
    components = np.zeros((n_components, dim))
    variance = np.zeros(n_components)
    components[:kept] = _fix_signs(eigvecs[:, :kept].T)
    variance[:kept] = eigvals[:kept]
    if kept < n_components:
        log.warning(
            "PCA: only %d of the %d requested components carry variance (%d samples of dim %d); "
            "components %d..%d are zero", kept, n_components, stats.count, dim, kept, n_components - 1)
    return PCA(mean=stats.mean, components=components, explained_variance=variance)
