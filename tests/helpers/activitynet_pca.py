"""A stand-in for ActivityNet's ``PCA_activitynet_v1-3.hdf5``, written with h5py.

The published file was made by the DAPs tool ``compute_pca`` with
``hickle.dump({'x_mean': x_mean, 'U': U, 'S': S, 'n_samples': n}, pcafile)`` under
Python 2 and hickle 1.x, whose ``dump_dict`` writes (no HDF5 attributes anywhere):

    /type               dataset ['dict'] (fixed-length bytes): what the root object is
    /data               group, one dataset per dict key:
    /data/x_mean        float32 [1, D]    /data/_x_mean      ['ndarray']  (type tag)
    /data/U             float32 [D, D]    /data/_U           ['ndarray']
    /data/S             float32 [D]       /data/_S           ['ndarray']
    /data/n_samples     int64 [1]         /data/_n_samples   ['int']      (a Python int, as [n])

Tests build it from random data rather than shipping the 64 MB original. ``layout``
also writes how newer hickle would name the keys, to check that reading is not tied to
one version: ``"hickle4"`` (``data/'x_mean'/data``, attributes ``base_type``...) and
``"hickle5"`` (``data/"x_mean"``); those two are approximations (the pickled ``type``
attributes are left out), only ``"hickle1"`` is the published layout.
"""
from __future__ import annotations

import h5py
import numpy as np

LAYOUTS = ("hickle1", "hickle4", "hickle5")


def write_activitynet_pca(path, x_mean, U, S, n_samples=None, *, layout: str = "hickle1") -> str:
    """Write ``x_mean``, ``U``, ``S`` (as float32, shapes as given) and ``n_samples`` (omitted if None).

    Shapes are not checked, so tests can write malformed files with it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    items = {"x_mean": np.asarray(x_mean, np.float32), "U": np.asarray(U, np.float32),
             "S": np.asarray(S, np.float32)}
    if n_samples is not None:
        items["n_samples"] = n_samples
    path = str(path)
    with h5py.File(path, "w") as h5:
        if layout == "hickle1":
            h5.create_dataset("type", data=np.array([b"dict"]))
            data = h5.create_group("data")
            for key, value in items.items():
                if isinstance(value, np.ndarray):
                    data.create_dataset(key, data=value)
                    data.create_dataset(f"_{key}", data=np.array([b"ndarray"]))
                else:  # a Python int: hickle 1.x stores [value] and tags it 'int'
                    data.create_dataset(key, data=np.array([value], np.int64))
                    data.create_dataset(f"_{key}", data=np.array([b"int"]))
            return path
        h5.attrs["HICKLE_VERSION"] = "4.0.4" if layout == "hickle4" else "5.0.2"
        h5.attrs["HICKLE_PYTHON_VERSION"] = "3.8.10"
        data = h5.create_group("data")
        data.attrs["base_type"] = b"dict"
        for idx, (key, value) in enumerate(items.items()):
            value = np.asarray(value)
            base_type = b"ndarray" if value.ndim else b"int"
            if layout == "hickle4":
                item = data.create_group(repr(key))  # 'x_mean'
                item.attrs.update(base_type=b"dict_item", key_base_type=b"str", key_idx=idx)
                node = item.create_dataset("data", data=value)
            else:
                node = data.create_dataset(f'"{key}"', data=value)  # "x_mean"
                node.attrs.update(key_base_type=b"str", key_idx=idx)
            node.attrs["base_type"] = base_type
    return path


def daps_pca(x):
    """What ``compute_pca`` computes from fc7 rows ``x`` [n, D]: (x_mean [1, D], U, S, n), in float32."""
    x = np.asarray(x, np.float32)
    x_mean = x.mean(axis=0, keepdims=True)
    centred = x - x_mean
    U, S, _ = np.linalg.svd(centred.T @ centred)
    return x_mean, U, S, len(x)
