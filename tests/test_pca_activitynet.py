"""PCA.load reads ActivityNet's PCA_activitynet_v1-3.hdf5 (DAPs compute_pca, hickle 1.x layout).

The projection must equal what made the released 500-d features, (x - x_mean) @ U[:, :k],
with the published signs, and every malformed file must say which dataset is at fault.
"""
import time

import h5py
import numpy as np
import pytest

from helpers.activitynet_pca import daps_pca, write_activitynet_pca
from pipeline.pca import PCA, SOURCE_ACTIVITYNET, SOURCE_NPZ, PCAStatsCombineFn, fit_pca
from vreloc_tf.contract import FEATURE_DIM
from vreloc_tf.errors import InputError


def correlated(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) * np.geomspace(4.0, 0.2, d)[:, None]) + 3.0


def random_pca_file(path, d=64, seed=0, n_samples=1234, layout="hickle1"):
    """A file in the published layout from random (not orthonormal) numbers: the loader must not care."""
    rng = np.random.default_rng(seed)
    x_mean = rng.normal(size=(1, d)).astype(np.float32)
    U = rng.normal(size=(d, d)).astype(np.float32)
    S = np.sort(rng.uniform(1.0, 100.0, d).astype(np.float32))[::-1].copy()
    write_activitynet_pca(path, x_mean, U, S, n_samples, layout=layout)
    return x_mean, U, S


@pytest.mark.parametrize("layout", ["hickle1", "hickle4", "hickle5"])
def test_transform_is_the_published_projection(tmp_path, layout):
    path = str(tmp_path / "PCA_activitynet_v1-3.hdf5")
    x_mean, U, S = random_pca_file(path, layout=layout)
    pca = PCA.load(path, n_components=20)
    x = np.random.default_rng(1).normal(size=(7, 64)) * 5
    expected = (x - x_mean.astype(np.float64)) @ U[:, :20].astype(np.float64)
    z = pca.transform(x)
    assert z.shape == (7, 20) and z.dtype == np.float32
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-4)
    # exactly the published numbers and signs (float32 -> float64 is exact), no sign fixing
    np.testing.assert_array_equal(pca.components, U[:, :20].T.astype(np.float64))
    np.testing.assert_array_equal(pca.mean, x_mean.ravel().astype(np.float64))
    np.testing.assert_allclose(pca.explained_variance, S[:20].astype(np.float64) / 1233, rtol=1e-12)
    assert pca.source == SOURCE_ACTIVITYNET and pca.path == path and pca.dim == 64 and pca.n_components == 20
    assert pca.describe() == f"ActivityNet PCA {path}: 64 -> 20 dims"


def test_published_signs_are_kept_not_fixed(tmp_path):
    """Our own rule would flip a component whose largest entry is negative; the released features did not."""
    d = 8
    U = np.linalg.qr(np.random.default_rng(2).normal(size=(d, d)))[0]
    U[:, 0] *= -np.sign(U[np.argmax(np.abs(U[:, 0])), 0])  # largest-magnitude entry of component 0 negative
    write_activitynet_pca(tmp_path / "p.hdf5", np.zeros((1, d)), U, np.arange(d, 0, -1.0), 10)
    pca = PCA.load(str(tmp_path / "p.hdf5"), n_components=3)
    assert pca.components[0, np.argmax(np.abs(pca.components[0]))] < 0
    np.testing.assert_array_equal(pca.components, U[:, :3].T.astype(np.float32).astype(np.float64))


def test_real_shape_defaults_to_500_components(tmp_path):
    """D = 4096 (C3D fc7), random values: a 64 MB file, k defaults to the released features' 500."""
    d = 4096
    rng = np.random.default_rng(3)
    x_mean = rng.standard_normal((1, d), dtype=np.float32)
    U = rng.standard_normal((d, d), dtype=np.float32)
    S = np.sort(rng.uniform(0.0, 1e6, d).astype(np.float32))[::-1].copy()
    path = str(tmp_path / "PCA_activitynet_v1-3.hdf5")
    start = time.perf_counter()
    write_activitynet_pca(path, x_mean, U, S, 2_000_000)
    with h5py.File(path, "r") as h5:  # the published layout, to the byte type
        assert h5["data/x_mean"].shape == (1, d) and h5["data/x_mean"].dtype == np.float32
        assert h5["data/U"].shape == (d, d) and h5["data/S"].shape == (d,)
        assert h5["data/n_samples"][()].tolist() == [2_000_000] and h5["data/_n_samples"][0] == b"int"
        assert h5["type"][0] == b"dict" and len(h5.attrs) == 0
    pca = PCA.load(path)
    assert pca.n_components == FEATURE_DIM == 500 and pca.dim == d == 4096
    assert pca.components.shape == (500, d) and pca.components.flags.c_contiguous
    x = rng.standard_normal((5, d))
    np.testing.assert_allclose(pca.transform(x), (x - x_mean.astype(np.float64)) @ U[:, :500].astype(np.float64),
                               rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(pca.explained_variance, S[:500].astype(np.float64) / 1_999_999, rtol=1e-12)
    assert time.perf_counter() - start < 10


def test_our_fit_in_the_activitynet_layout_projects_the_same(tmp_path):
    n, d = 300, 12
    x = correlated(n, d, seed=4)
    ours = fit_pca(PCAStatsCombineFn().extract_output(PCAStatsCombineFn().add_input((0, None, None), x)),
                   n_components=d)
    # 1. the same numbers written in ActivityNet's layout: U's columns are our rows, S the scatter eigenvalues
    write_activitynet_pca(tmp_path / "same.hdf5", ours.mean[None], ours.components.T,
                          ours.explained_variance * (n - 1), n)
    same = PCA.load(str(tmp_path / "same.hdf5"), n_components=5)
    np.testing.assert_allclose(same.transform(x), ours.transform(x)[:, :5], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(same.explained_variance, ours.explained_variance[:5], rtol=1e-6)
    # 2. what compute_pca itself computes (float32 SVD of A^T A): equal up to each component's sign
    write_activitynet_pca(tmp_path / "daps.hdf5", *daps_pca(x))
    daps = PCA.load(str(tmp_path / "daps.hdf5"), n_components=5)
    signs = np.sign(np.sum(daps.components * ours.components[:5], axis=1))
    assert set(signs) <= {-1.0, 1.0}
    np.testing.assert_allclose(daps.transform(x) * signs, ours.transform(x)[:, :5], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(daps.explained_variance, ours.explained_variance[:5], rtol=1e-3)


def test_npz_still_loads_and_n_components_truncates(tmp_path):
    x = correlated(50, 6, seed=5)
    fitted = fit_pca(PCAStatsCombineFn().extract_output(PCAStatsCombineFn().add_input((0, None, None), x)),
                     n_components=4)
    fitted.save(str(tmp_path / "pca.npz"))
    again = PCA.load(str(tmp_path / "pca.npz"))
    assert again.source == SOURCE_NPZ and again.path == str(tmp_path / "pca.npz")
    np.testing.assert_array_equal(again.components, fitted.components)
    two = PCA.load(tmp_path / "pca.npz", n_components=2)
    np.testing.assert_array_equal(two.components, fitted.components[:2])
    with pytest.raises(InputError, match="5 components asked for, the file has 4"):
        PCA.load(str(tmp_path / "pca.npz"), n_components=5)


def test_format_is_told_by_content_not_name(tmp_path):
    """An export copies any PCA file to assets.extra/pca.npz: an HDF5 file under that name still loads."""
    random_pca_file(tmp_path / "pca.npz", d=16)
    pca = PCA.load(str(tmp_path / "pca.npz"), n_components=4)
    assert pca.source == SOURCE_ACTIVITYNET and pca.n_components == 4


def test_hdf5_after_a_user_block_is_detected(tmp_path):
    path = str(tmp_path / "ub.hdf5")
    x_mean, U, S = np.zeros((1, 4)), np.eye(4), np.ones(4)
    with h5py.File(path, "w", userblock_size=1024) as h5:
        data = h5.create_group("data")
        for key, value in (("x_mean", x_mean), ("U", U), ("S", S)):
            data.create_dataset(key, data=value.astype(np.float32))
    assert PCA.load(path, n_components=2).n_components == 2


def test_remote_paths_go_through_beam_filesystems(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    x_mean, U, _ = random_pca_file(tmp_path / "p.hdf5", d=16)
    opened = []

    def fake_open(path, *args, **kwargs):
        opened.append(path)
        return open(tmp_path / "p.hdf5", "rb")

    monkeypatch.setattr(FileSystems, "open", staticmethod(fake_open))
    pca = PCA.load("gs://bucket/PCA_activitynet_v1-3.hdf5", n_components=3)
    assert opened == ["gs://bucket/PCA_activitynet_v1-3.hdf5"] and pca.path == opened[0]
    np.testing.assert_array_equal(pca.components, U[:, :3].T.astype(np.float64))


def test_without_n_samples_variances_are_unknown(tmp_path, caplog):
    random_pca_file(tmp_path / "p.hdf5", d=8, n_samples=None)
    with caplog.at_level("WARNING", logger="vreloc.pca"):
        pca = PCA.load(str(tmp_path / "p.hdf5"), n_components=3)
    assert np.isnan(pca.explained_variance).all() and pca.explained_variance.shape == (3,)
    assert "no data/n_samples" in caplog.text


def _valid(d=8):
    rng = np.random.default_rng(6)
    return {"x_mean": rng.normal(size=(1, d)), "U": rng.normal(size=(d, d)), "S": np.arange(d, 0, -1.0),
            "n_samples": 100}


def _without(path, dataset):
    with h5py.File(path, "a") as h5:
        del h5[dataset]


def test_malformed_files_name_the_dataset(tmp_path):
    path = str(tmp_path / "bad.hdf5")

    def load_error(**changes):
        items = {**_valid(), **changes}
        write_activitynet_pca(path, items["x_mean"], items["U"], items["S"], items["n_samples"])
        with pytest.raises(InputError) as err:
            PCA.load(path, n_components=4)
        assert path in str(err.value)
        return str(err.value)

    assert "dataset /data/U has shape (8, 7)" in load_error(U=np.zeros((8, 7)))
    assert "dataset /data/U has shape (8,)" in load_error(U=np.zeros(8))
    assert "dataset /data/x_mean has shape (1, 9); expected (1, 8)" in load_error(x_mean=np.zeros((1, 9)))
    assert "dataset /data/x_mean has shape (2, 8)" in load_error(x_mean=np.zeros((2, 8)))
    assert "dataset /data/S has shape (7,); expected (8,)" in load_error(S=np.ones(7))
    bad_u = _valid()["U"]
    bad_u[3, 2] = np.nan
    assert "dataset /data/U has 1 non-finite" in load_error(U=bad_u)
    assert "dataset /data/x_mean has 1 non-finite" in load_error(x_mean=np.array([[np.inf] + [0.0] * 7]))
    assert "dataset /data/S has 1 non-finite" in load_error(S=np.array([np.nan] + [1.0] * 7))
    assert "dataset /data/n_samples is 0" in load_error(n_samples=0)

    for dataset in ("x_mean", "U", "S"):
        write_activitynet_pca(path, **_valid())
        _without(path, f"data/{dataset}")
        with pytest.raises(InputError, match=f"{path}: dataset data/{dataset} is missing"):
            PCA.load(path, n_components=4)

    with h5py.File(path, "w") as h5:
        h5.create_dataset("U", data=np.eye(4))
    with pytest.raises(InputError, match=r"bad.hdf5 is HDF5 but has no group 'data' \(top level: \['U'\]\)"):
        PCA.load(path)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.eye(4))
    with pytest.raises(InputError, match="'data' is not a group"):
        PCA.load(path)

    write_activitynet_pca(path, **_valid())
    with h5py.File(path, "a") as h5:
        del h5["data/S"]
        h5["data"].create_dataset("S", data=np.array([b"x"] * 8))
    with pytest.raises(InputError, match=r"dataset /data/S holds \|S1, not numbers"):
        PCA.load(path, n_components=4)


def test_components_beyond_the_file_and_bad_counts(tmp_path):
    random_pca_file(tmp_path / "p.hdf5", d=64)
    with pytest.raises(InputError, match=r"p.hdf5: 500 components asked for but /data/U has only 64 columns"):
        PCA.load(str(tmp_path / "p.hdf5"))  # the default 500 needs the real D = 4096
    for bad in (0, -1, 2.5, True, "5"):
        with pytest.raises(InputError, match="n_components must be a positive integer"):
            PCA.load(str(tmp_path / "p.hdf5"), n_components=bad)


def test_neither_npz_nor_hdf5(tmp_path):
    junk = tmp_path / "PCA_activitynet_v1-3.hdf5"
    junk.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(InputError, match="PCA_activitynet_v1-3.hdf5 is unreadable as .npz .and is not HDF5"):
        PCA.load(str(junk))
    truncated = tmp_path / "truncated.hdf5"
    random_pca_file(tmp_path / "whole.hdf5", d=16)
    truncated.write_bytes((tmp_path / "whole.hdf5").read_bytes()[:600])
    with pytest.raises(InputError, match="truncated.hdf5 has an HDF5 signature but h5py cannot open it"):
        PCA.load(str(truncated))
    with pytest.raises(InputError, match="missing.hdf5 is unreadable"):
        PCA.load(str(tmp_path / "missing.hdf5"))
