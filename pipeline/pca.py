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

:meth:`PCA.load` also reads ActivityNet's published ``PCA_activitynet_v1-3.hdf5`` (the
projection that made the released 500-d ``sub_activitynet_v1-3.c3d.hdf5`` features), so a
model trained on the released features can take new videos' fc7 features: see
:func:`load_activitynet_pca` for its layout and conventions. The format is told by content
(the HDF5 signature), not by file name, since exports copy any PCA file to ``pca.npz``.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import numbers
import os
import zipfile
from typing import BinaryIO, Optional, Tuple, Union

import apache_beam as beam
import numpy as np

from vreloc_tf.contract import FEATURE_DIM
from vreloc_tf.errors import InputError
from vreloc_tf.files import atomic_path

log = logging.getLogger("vreloc.pca")


# Values of PCA.source: where a PCA came from, for logs and error messages.
SOURCE_FITTED = "fitted"
SOURCE_NPZ = "pca.npz"
SOURCE_ACTIVITYNET = "ActivityNet PCA"

# HDF5 files start with this signature, at byte 0 or (after a user block) at 512, 1024, 2048, ...
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

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
            raise InputError("PCA statistics are empty: no training vectors reached the combiner")
        return PCAStats(count=int(count), total=total, outer=outer)


@dataclasses.dataclass(frozen=True)
class PCA:
    """A fitted projection: mean [D], components [k, D] (rows orthonormal or zero), variances [k].

    ``source`` (:data:`SOURCE_FITTED`, :data:`SOURCE_NPZ` or :data:`SOURCE_ACTIVITYNET`) and
    ``path`` say where it came from, so logs can tell our PCA from ActivityNet's.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    source: str = dataclasses.field(default=SOURCE_FITTED, compare=False)
    path: Optional[str] = dataclasses.field(default=None, compare=False)

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

    def describe(self) -> str:
        """One line for logs, e.g. ``ActivityNet PCA /data/PCA_activitynet_v1-3.hdf5: 4096 -> 500 dims``."""
        where = f" {self.path}" if self.path else ""
        return f"{self.source}{where}: {self.dim} -> {self.n_components} dims"

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

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)

    @classmethod
    def load(cls, path: str, n_components: Optional[int] = None) -> "PCA":
        """Read ``pca.npz`` or ActivityNet's ``PCA_activitynet_v1-3.hdf5``, told apart by content.

        ``n_components`` keeps the first k components: for ``pca.npz`` all of them by default,
        for the ActivityNet file ``vreloc_tf.contract.FEATURE_DIM`` (the released features' width).
        Local paths are read in place; other schemes (gs://...) through Beam's FileSystems.
        Any problem with the file is an :class:`InputError` naming it (and the dataset at fault).
        """
        path = os.fspath(path)
        whole = isinstance(n_components, numbers.Integral) and not isinstance(n_components, bool)
        if n_components is not None and not (whole and n_components >= 1):
            raise InputError(f"PCA file {path}: n_components must be a positive integer, got {n_components!r}")
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            try:
                with FileSystems.open(path) as fh:
                    data = io.BytesIO(fh.read())
            except OSError as e:
                raise InputError(f"PCA file {path} is unreadable: {e}") from e
            hdf5 = _is_hdf5(data)
            source: Union[str, BinaryIO] = data
        else:
            try:
                with open(path, "rb") as fh:
                    hdf5 = _is_hdf5(fh)
            except OSError as e:
                raise InputError(f"PCA file {path} is unreadable: {e}") from e
            source = path
        if hdf5:
            return load_activitynet_pca(source, path, n_components)
        return _load_npz(source, path, n_components)


def _is_hdf5(fh: BinaryIO) -> bool:
    """Whether ``fh`` holds HDF5: its signature at byte 0 or at 512 * 2**i (after a user block)."""
    size = fh.seek(0, os.SEEK_END)
    offset, found = 0, False
    while offset + len(_HDF5_SIGNATURE) <= size:
        fh.seek(offset)
        if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            found = True
            break
        offset = 512 if offset == 0 else offset * 2
    fh.seek(0)
    return found


def _load_npz(source, path: str, n_components: Optional[int]) -> PCA:
    """Our own ``pca.npz`` (written by :meth:`PCA.save`)."""
    try:
        with np.load(source, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"PCA file {path} is unreadable as .npz (and is not HDF5, so not ActivityNet's "
                         f"PCA_activitynet_v1-3.hdf5 either): {e}") from e
    missing = {"mean", "components", "explained_variance"} - set(arrays)
    if missing:
        raise InputError(f"PCA file {path} lacks {sorted(missing)} (has {sorted(arrays)})")
    components, variance = arrays["components"], arrays["explained_variance"]
    if n_components is not None:
        if components.ndim == 2 and n_components > components.shape[0]:
            raise InputError(f"PCA file {path}: {n_components} components asked for, "
                             f"the file has {components.shape[0]}")
        components, variance = components[:n_components], variance[:n_components]
    try:
        return PCA(mean=arrays["mean"], components=components, explained_variance=variance,
                   source=SOURCE_NPZ, path=path)
    except ValueError as e:
        raise InputError(f"PCA file {path}: {e}") from e


def load_activitynet_pca(source, path: str, n_components: Optional[int] = None) -> PCA:
    """ActivityNet's published ``PCA_activitynet_v1-3.hdf5`` as a :class:`PCA`.

    The file was written by the DAPs tool ``compute_pca`` (Escorcia et al., ECCV 2016) with
    ``hickle.dump({'x_mean': x_mean, 'U': U, 'S': S, 'n_samples': n}, file)``, hickle 1.x
    layout: a group ``data`` holding one dataset per key (``x_mean`` float32 [1, D], ``U``
    float32 [D, D], ``S`` float32 [D], ``n_samples`` int [1]) beside ``_<key>`` datasets that
    tag their Python type, and a root dataset ``type`` = ``['dict']``; no attributes. Here
    ``U, S, _ = svd(A^T A)`` with ``A`` the mean-centred fc7 rows, so U's *columns* are the
    components, largest first, and the released features are ``(x - x_mean) @ U[:, :500]``.
    Keys re-saved by newer hickle (``"x_mean"`` / ``'x_mean'``, possibly as a group holding a
    ``data`` dataset) are read too. ``source`` is an open file-like object or a local path;
    ``path`` names the file in messages.

    Conventions of the result: ``mean = x_mean.ravel()``, ``components = U[:, :k].T`` with
    the published signs kept exactly (not our largest-entry-positive rule: the released
    features were made with these signs), and ``explained_variance = S[:k] / max(n_samples
    - 1, 1)``: ``S`` are eigenvalues of the scatter matrix ``A^T A``, so this is the sample
    (ddof=1) variance, the same convention as :func:`fit_pca`. Without ``n_samples`` the
    variances are unknown: NaN, with a warning (the projection does not need them).
    ``k = n_components`` or ``FEATURE_DIM`` (500, the released features' width). Only the k columns of ``U`` in use
    are read (and checked for non-finite values).
    """
    import h5py

    k = FEATURE_DIM if n_components is None else int(n_components)
    layout = ("expected ActivityNet's PCA_activitynet_v1-3.hdf5 layout: group 'data' with datasets "
              "x_mean [1, D], U [D, D], S [D] (and n_samples)")
    try:
        h5 = h5py.File(source, "r")
    except (OSError, ValueError) as e:
        raise InputError(f"PCA file {path} has an HDF5 signature but h5py cannot open it: {e}") from e
    with h5:
        group = h5.get("data")
        if not isinstance(group, h5py.Group):
            what = "no group 'data'" if group is None else "'data' is not a group"
            raise InputError(f"PCA file {path} is HDF5 but has {what} (top level: {sorted(h5.keys())}); {layout}")
        x_mean_ds = _hickle_dataset(group, "x_mean", path, layout)
        u_ds = _hickle_dataset(group, "U", path, layout)
        s_ds = _hickle_dataset(group, "S", path, layout)
        n_ds = _hickle_dataset(group, "n_samples", path, layout, required=False)

        if len(u_ds.shape) != 2 or u_ds.shape[0] != u_ds.shape[1] or u_ds.shape[0] < 1:
            raise InputError(f"PCA file {path}: dataset {u_ds.name} has shape {u_ds.shape}; "
                             "expected a square [D, D] matrix (its columns are the components)")
        dim = int(u_ds.shape[0])
        if x_mean_ds.shape not in ((1, dim), (dim,)):
            raise InputError(f"PCA file {path}: dataset {x_mean_ds.name} has shape {x_mean_ds.shape}; "
                             f"expected (1, {dim}) to match {u_ds.name} {u_ds.shape}")
        if s_ds.shape != (dim,):
            raise InputError(f"PCA file {path}: dataset {s_ds.name} has shape {s_ds.shape}; "
                             f"expected ({dim},) to match {u_ds.name} {u_ds.shape}")
        if k > dim:
            raise InputError(f"PCA file {path}: {k} components asked for but {u_ds.name} has only {dim} "
                             "columns (pass n_components <= D)")
        x_mean = _numeric(x_mean_ds, x_mean_ds[()], path).reshape(-1)
        u = _numeric(u_ds, u_ds[:, :k], path)
        s = _numeric(s_ds, s_ds[()], path)
        n_samples = None if n_ds is None else _n_samples(n_ds, path)

    if n_samples is None:
        variance = np.full(k, np.nan)
        log.warning("PCA: %s has no data/n_samples: explained_variance is unknown (NaN); "
                    "the projection is unaffected", path)
    else:
        variance = s[:k] / max(n_samples - 1, 1)
    pca = PCA(mean=x_mean, components=np.ascontiguousarray(u.T), explained_variance=variance,
              source=SOURCE_ACTIVITYNET, path=path)
    log.info("PCA: %s (DAPs compute_pca, hickle HDF5, n_samples %s)", pca.describe(), n_samples)
    return pca


def _hickle_dataset(group, key: str, path: str, layout: str, required: bool = True):
    """The dataset for dict key ``key`` under hickle's ``data`` group, or None when optional and absent.

    hickle 1.x (the published file) names it ``key``; later versions quote it (``"key"``, or
    ``'key'``) and hickle 4 wraps it in a group holding a ``data`` dataset.
    """
    import h5py

    for name in (key, f'"{key}"', f"'{key}'"):
        node = group.get(name)
        if node is None:
            continue
        if isinstance(node, h5py.Group):
            inner = node.get("data")
            if not isinstance(inner, h5py.Dataset):
                raise InputError(f"PCA file {path}: {node.name} is a group without a 'data' dataset; {layout}")
            node = inner
        if not isinstance(node, h5py.Dataset):
            raise InputError(f"PCA file {path}: {node.name} is not a dataset; {layout}")
        return node
    if not required:
        return None
    present = sorted(n for n in group.keys() if not n.startswith("_"))
    raise InputError(f"PCA file {path}: dataset data/{key} is missing (data holds {present}); {layout}")


def _numeric(ds, values, path: str) -> np.ndarray:
    """``values`` read from ``ds`` as float64, or an InputError naming ``ds`` if not finite numbers."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise InputError(f"PCA file {path}: dataset {ds.name} holds {values.dtype}, not numbers")
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"PCA file {path}: dataset {ds.name} has {int(bad.sum())} non-finite values (NaN/inf)")
    return values


def _n_samples(ds, path: str) -> int:
    """hickle 1.x stores a Python int as a [1] dataset; newer versions as a scalar: accept both."""
    if ds.size != 1:
        raise InputError(f"PCA file {path}: dataset {ds.name} has shape {ds.shape}; expected one number")
    n = float(_numeric(ds, ds[()], path).reshape(-1)[0])
    if n < 1 or n != int(n):
        raise InputError(f"PCA file {path}: dataset {ds.name} is {n:g}; expected a positive whole count")
    return int(n)


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its largest-magnitude entry is positive (sklearn's svd_flip)."""
    if components.size == 0:
        return components
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1
    return components * signs[:, None]


def fit_pca(stats: PCAStats, n_components: int = FEATURE_DIM) -> PCA:
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
    return PCA(mean=stats.mean, components=components, explained_variance=variance, source=SOURCE_FITTED)
