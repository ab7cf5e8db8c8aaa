"""The C3D network (Sports-1M architecture) in Keras, producing fc7 features per 16-frame clip.

Architecture (Tran et al., "Learning Spatiotemporal Features with 3D Convolutional
Networks", ICCV 2015; the Sports-1M "deepnetA" model). Every convolution is 3x3x3, stride
1, 'same' padding, ReLU; channels_last input ``[N, 16, 112, 112, 3]``::

    conv1a 64  -> pool1 (1,2,2) -> conv2a 128 -> pool2 (2,2,2)
    conv3a/3b 256 -> pool3 -> conv4a/4b 512 -> pool4 -> conv5a/5b 512
    -> zero pad H and W by one at the END -> pool5 (2,2,2)  => [N, 1, 4, 4, 512]
    -> flatten (t, h, w, c order) 8192 -> fc6 4096 ReLU -> fc7 4096 ReLU  => features

The pad before pool5 reproduces Caffe's ceil-mode pooling of the 7x7 conv5b maps
(windows {0,1},{2,3},{4,5},{6}); zeros cannot win a max over ReLU outputs. This is the
padding of the Keras 2 conversion (``ZeroPadding3D(((0,0),(0,1),(0,1)))``); the older
Keras 1 conversion pads both sides, which shifts the pool5 windows by one pixel. Both give
the same 8192-d flatten, so either weights file loads. Dropout and fc8 (487 Sports-1M
classes) are not built: we only extract fc7 activations, the ActivityNet Challenge
features. 38.5 G multiply-adds per clip, i.e. 77.0 GFLOP counting a multiply-add as two
floating-point operations, the convention of every FLOP figure here (:func:`flops_per_clip`;
the "38.5 GFLOPs" often quoted for C3D counts multiply-adds).

Preprocessing (:func:`preprocess_clips`, as in the Caffe model and its conversions):
RGB uint8 frames -> BGR float32 in [0, 255] minus a mean; no scaling. The mean is either
a mean cube file (e.g. ``train01_16_128_171_mean.npy`` shipped with the conversions,
shape (1,3,16,128,171), (3,16,128,171) or (16,128,171,3), BGR, center-cropped here to
112x112 like the frames) or, by default, the per-channel BGR mean (104, 117, 128) that
mmaction2 uses with its Sports-1M C3D weights.

Weights file (:func:`load_c3d_weights`). The commonly distributed conversions of the
Caffe Sports-1M weights are Keras ``save_weights`` HDF5 files:
``sports1M_weights_tf.h5`` (axon-research/c3d-keras, Keras 1, TensorFlow dim ordering;
where to download it, its size and published MD5: docs/YOUR_VIDEOS.md)
and ``C3D_Sport1M_weights_keras_2.2.4.h5`` (its Keras 2.2.4 re-save). Layout:

* root attribute ``layer_names``: every layer in order (conv1, pool1, conv2, pool2,
  conv3a, conv3b, pool3, conv4a, conv4b, pool4, conv5a, conv5b, zeropad[5], pool5,
  flatten, fc6, dropout, fc7, dropout, fc8); a whole saved model (``model.save``) has
  the same tree under the group ``model_weights``;
* one group per layer whose attribute ``weight_names`` lists its datasets in order
  (kernel, bias): Keras 1 names them ``conv1_W:0``, ``conv1_b:0`` (Theano era:
  ``conv1_W``), Keras 2 ``conv1/kernel:0``, ``conv1/bias:0`` (so the dataset path is
  ``conv1/conv1/kernel:0``). The loader follows ``weight_names``, so all load alike.

Note the layer names are the Caffe ones (conv1, conv2: no "a"); we name our layers the
same. Expected shapes (kernels channels_last ``(t, h, w, in, out)``, dense ``(in, out)``):

========  =====================  ========  =============================================
layer     kernel                 bias      note
========  =====================  ========  =============================================
conv1     (3, 3, 3, 3, 64)       (64,)     paper's conv1a; input channels BGR
conv2     (3, 3, 3, 64, 128)     (128,)    paper's conv2a
conv3a    (3, 3, 3, 128, 256)    (256,)
conv3b    (3, 3, 3, 256, 256)    (256,)
conv4a    (3, 3, 3, 256, 512)    (512,)
conv4b    (3, 3, 3, 512, 512)    (512,)
conv5a    (3, 3, 3, 512, 512)    (512,)
conv5b    (3, 3, 3, 512, 512)    (512,)
fc6       (8192, 4096)           (4096,)   rows in (t=1, h=4, w=4, c=512) flatten order
fc7       (4096, 4096)           (4096,)   output: the 4096-d feature
fc8       (4096, 487)            (487,)    optional, ignored (Sports-1M classifier)
========  =====================  ========  =============================================

A file that does not match (missing layer, wrong shape, e.g. the channels_first Theano
conversion ``c3d-sports1M_weights.h5`` whose conv1 kernel is (64, 3, 3, 3, 3)) fails with
:class:`C3DWeightsError` naming the first mismatching layer, expected vs found shape,
before any weight is assigned. Keras 3 ``*.weights.h5`` files use another layout and are
not accepted; :func:`save_c3d_weights` writes the layout above.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

from pipeline import video
from vreloc_tf.contract import FC7_DIM, FRAMES_PER_FEATURE
from vreloc_tf.errors import InputError

log = logging.getLogger("vreloc.c3d")

CLIP_LEN = FRAMES_PER_FEATURE  # one feature per clip, no overlap
CROP_SIZE = 112
INPUT_SHAPE = (CLIP_LEN, CROP_SIZE, CROP_SIZE, 3)
FEATURE_DIM = FC7_DIM
# Per-channel BGR mean of mmaction2's Sports-1M C3D config (used when no mean cube is given).
DEFAULT_BGR_MEAN = (104.0, 117.0, 128.0)

# (name, filters) of the conv layers and the pool that follows each group (None: no pool).
_CONVS = (
    ("conv1", 64, (1, 2, 2)),
    ("conv2", 128, (2, 2, 2)),
    ("conv3a", 256, None),
    ("conv3b", 256, (2, 2, 2)),
    ("conv4a", 512, None),
    ("conv4b", 512, (2, 2, 2)),
    ("conv5a", 512, None),
    ("conv5b", 512, "pool5"),
)

# layer name -> (kernel shape, bias shape), in network order: the documented file contract.
EXPECTED_SHAPES: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {}
_in = 3
for _name, _filters, _ in _CONVS:
    EXPECTED_SHAPES[_name] = ((3, 3, 3, _in, _filters), (_filters,))
    _in = _filters
EXPECTED_SHAPES["fc6"] = ((8192, FC7_DIM), (FC7_DIM,))
EXPECTED_SHAPES["fc7"] = ((FC7_DIM, FC7_DIM), (FC7_DIM,))
del _in, _name, _filters

PathLike = Union[str, os.PathLike]


def flops_per_clip() -> float:
    """Floating-point operations (2 per multiply-add) of one clip through conv1 ... fc7, from the layer table."""
    macs, t, hw, c_in = 0, CLIP_LEN, CROP_SIZE, 3
    for _name, filters, pool in _CONVS:
        macs += t * hw * hw * filters * 27 * c_in  # 3x3x3 'same' convolution
        c_in = filters
        if pool == "pool5":
            t, hw = max(1, t // 2), (hw + 1) // 2  # the zero pad makes the 7x7 maps pool to 4x4
        elif pool is not None:
            t, hw = t // pool[0], hw // pool[1]
    macs += 8192 * FC7_DIM + FC7_DIM * FEATURE_DIM
    return 2.0 * macs


GFLOPS_PER_CLIP = flops_per_clip() / 1e9  # 77.0


class C3DWeightsError(InputError):
    """The weights file does not match the documented C3D layout."""


def build_c3d(seed: Optional[int] = None, name: str = "c3d"):
    """The C3D feature network: float32 [N, 16, 112, 112, 3] (preprocessed) -> fc7 [N, 4096].

    Weights are He-uniform random (seeded when ``seed`` is given) until loaded with
    :func:`load_c3d_weights`; use :func:`c3d_from_weights` or :func:`random_c3d`.
    """
    import keras
    from keras import layers

    def init(i):
        return keras.initializers.HeUniform(seed=None if seed is None else seed + i)

    x = inputs = keras.Input(shape=INPUT_SHAPE, name="clips")
    i = 0
    for conv_name, filters, pool in _CONVS:
        x = layers.Conv3D(filters, 3, padding="same", activation="relu", name=conv_name,
                          kernel_initializer=init(i))(x)
        i += 1
        if pool == "pool5":
            x = layers.ZeroPadding3D(((0, 0), (0, 1), (0, 1)), name="zeropad5")(x)
            x = layers.MaxPooling3D((2, 2, 2), strides=(2, 2, 2), name="pool5")(x)
        elif pool is not None:
            x = layers.MaxPooling3D(pool, strides=pool, name=f"pool{conv_name[4]}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(FC7_DIM, activation="relu", name="fc6", kernel_initializer=init(i))(x)
    x = layers.Dense(FEATURE_DIM, activation="relu", name="fc7", kernel_initializer=init(i + 1))(x)
    return keras.Model(inputs, x, name=name)


def _weights_root(f):
    return f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f


def _decode(names: Iterable) -> list:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def read_c3d_weights(path: PathLike) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Read and check a weights file: ``{layer: (kernel, bias)}`` for conv1 ... fc7.

    Raises :class:`C3DWeightsError` naming the first layer (in network order) that is
    missing or whose kernel/bias shape differs from :data:`EXPECTED_SHAPES`.
    """
    import h5py

    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise C3DWeightsError(f"C3D weights file {path}: cannot open as HDF5 ({e})") from e
    out = {}
    with f:
        root = _weights_root(f)
        listed = _decode(root.attrs.get("layer_names", list(root.keys())))
        for layer, (kernel_shape, bias_shape) in EXPECTED_SHAPES.items():
            where = f"C3D weights file {path}: layer '{layer}'"
            if layer not in root or layer not in listed:
                raise C3DWeightsError(
                    f"{where} not found (expected kernel {kernel_shape}, bias {bias_shape}); "
                    f"the file has layers {listed}")
            group = root[layer]
            names = _decode(group.attrs.get("weight_names", []))
            if len(names) != 2:
                raise C3DWeightsError(
                    f"{where} has {len(names)} weights {names}, expected 2 (kernel {kernel_shape}, "
                    f"bias {bias_shape})")
            arrays = []
            for what, wname, expected in (("kernel", names[0], kernel_shape), ("bias", names[1], bias_shape)):
                if wname not in group:
                    raise C3DWeightsError(f"{where}: dataset '{wname}' listed in weight_names is missing")
                found = tuple(group[wname].shape)
                if found != expected:
                    hint = ""
                    if what == "kernel" and len(found) == 5 and found == expected[::-1][:2] + (3, 3, 3):
                        hint = (" (this looks like a channels_first/Theano conversion; this loader "
                                "expects the channels_last layout of sports1M_weights_tf.h5)")
                    raise C3DWeightsError(
                        f"{where} {what} has shape {found}, expected {expected}{hint}")
                arrays.append(np.asarray(group[wname][()], dtype=np.float32))
            out[layer] = (arrays[0], arrays[1])
    return out


def load_c3d_weights(model, path: PathLike) -> None:
    """Check the whole file first, then assign conv1 ... fc7 of ``model`` (from build_c3d)."""
    weights = read_c3d_weights(path)
    for layer, (kernel, bias) in weights.items():
        model.get_layer(layer).set_weights([kernel, bias])
    log.info("loaded C3D Sports-1M weights from %s", os.fspath(path))


def save_c3d_weights(model, path: PathLike, fc8: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> None:
    """Write ``model``'s conv1 ... fc7 in the documented (Keras 2 ``save_weights``) layout.

    ``fc8`` (kernel [4096, 487], bias [487]) may be added to mimic the distributed files.
    """
    import h5py

    layer_names = []
    with h5py.File(os.fspath(path), "w") as f:
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        items = [(name, model.get_layer(name).get_weights()) for name in EXPECTED_SHAPES]
        if fc8 is not None:
            items.append(("fc8", list(fc8)))
        for name, (kernel, bias) in items:
            group = f.create_group(name)
            wnames = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in wnames])  # 'S' like Keras
            group.create_dataset(wnames[0], data=np.asarray(kernel, np.float32))
            group.create_dataset(wnames[1], data=np.asarray(bias, np.float32))
            layer_names.append(name.encode("utf8"))
        f.attrs["layer_names"] = np.array(layer_names)


def c3d_from_weights(path: PathLike):
    """The C3D feature network with the Sports-1M weights of ``path``."""
    model = build_c3d()
    load_c3d_weights(model, path)
    return model


def random_c3d(seed: int = 0):
    """A C3D with seeded random weights, for tests and demos only: its features are meaningless."""
    log.warning("C3D with RANDOM weights (seed %d): features are meaningless, for tests and demos only",
                seed)
    return build_c3d(seed=seed)


def load_mean(mean: Union[None, PathLike, np.ndarray, Sequence[float]] = None) -> np.ndarray:
    """The BGR mean to subtract, broadcastable to [16, 112, 112, 3] (float32).

    ``None`` -> :data:`DEFAULT_BGR_MEAN` as shape [3]; three numbers -> that per-channel
    BGR mean; a mean cube (array or ``.npy`` path) of shape (1,3,16,128,171),
    (3,16,128,171), (16,128,171,3) or already cropped (16,112,112,3) -> center-cropped
    [16, 112, 112, 3], the same crop as the frames (see pipeline.video).
    """
    if mean is None:
        return np.asarray(DEFAULT_BGR_MEAN, np.float32)
    if isinstance(mean, (str, os.PathLike)):
        mean = np.load(os.fspath(mean))
    cube = np.asarray(mean, np.float32)
    if cube.shape == (3,):
        return cube
    if cube.ndim == 5 and cube.shape[0] == 1:
        cube = cube[0]
    if cube.shape[0] == 3 and cube.ndim == 4:
        cube = np.transpose(cube, (1, 2, 3, 0))
    if cube.shape == (CLIP_LEN, 128, 171, 3):
        top, left = (128 - CROP_SIZE) // 2, (171 - CROP_SIZE) // 2
        cube = cube[:, top:top + CROP_SIZE, left:left + CROP_SIZE]
    if cube.shape != INPUT_SHAPE:
        raise InputError(f"C3D mean has shape {np.shape(mean)}; expected 3 channel values or a mean cube "
                         f"(1,3,16,128,171), (3,16,128,171), (16,128,171,3) or {INPUT_SHAPE}")
    return np.ascontiguousarray(cube)


def preprocess_clips(clips, mean):
    """uint8 RGB clips [N, 16, 112, 112, 3] -> float32 BGR minus ``mean`` (keras.ops)."""
    from keras import ops

    x = ops.cast(clips, "float32")
    x = ops.flip(x, axis=-1)  # RGB -> BGR, the channel order the Caffe weights were trained on
    return x - ops.convert_to_tensor(mean, dtype="float32")


class C3DExtractor:
    """Clips -> fc7 features, batch by batch, through one compiled function.

    ``extractor(clips)`` takes uint8 RGB clips [n, 16, 112, 112, 3] (as pipeline.video
    yields them) and returns float32 [n, 4096]. Inputs are cut into batches of at most
    ``batch_size`` clips; the compiled function has a dynamic batch dimension, so the
    last, smaller batch does not retrace.
    """

    def __init__(self, model, batch_size: int = 8, mean=None):
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        self.mean = load_mean(mean)
        mean_t = tf.constant(self.mean)

        # Measured on a 2-core AVX-512 CPU (docs/BENCHMARKS.md, "Backbones"): TensorFlow's oneDNN Conv3D
        # runs this at ~1.1x the dense matmul rate per CPU-second, flat from batch 4 up. XLA
        # (jit_compile=True) was 3x slower (its CPU Conv3D), and neither channels-first, plain tf.nn ops
        # in place of the Keras layers, nor conv1 as a 2-D convolution on time-stacked frames was faster.
        @tf.function(input_signature=[tf.TensorSpec([None, *INPUT_SHAPE], tf.uint8)], jit_compile=False)
        def features(clips):
            return model(preprocess_clips(clips, mean_t), training=False)

        self._features = features

    @classmethod
    def from_weights(cls, path: PathLike, **kwargs) -> "C3DExtractor":
        return cls(c3d_from_weights(path), **kwargs)

    @classmethod
    def random(cls, seed: int = 0, **kwargs) -> "C3DExtractor":
        return cls(random_c3d(seed), **kwargs)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[1:] != INPUT_SHAPE or clips.dtype != np.uint8:
            raise ValueError(f"C3D input must be uint8 clips [n, {', '.join(map(str, INPUT_SHAPE))}], "
                             f"got {clips.dtype} {clips.shape}")
        out = np.empty((len(clips), FEATURE_DIM), np.float32)
        for start in range(0, len(clips), self.batch_size):
            batch = clips[start:start + self.batch_size]
            out[start:start + len(batch)] = self._features(batch).numpy()
        return out

    def extract_video(self, path: PathLike, batch_clips: int = 32):
        """fc7 features of every whole clip of a video file: (float32 [n_clips, 4096], VideoInfo).

        Decodes batch by batch (memory bounded); raises pipeline.video.VideoError like
        :func:`pipeline.video.decode_clips`.
        """
        info = video.probe(path)
        counts: dict = {}
        feats = [self(b) for b in video.iter_clips(path, batch_clips=batch_clips, counts=counts)]
        return np.concatenate(feats, axis=0), dataclasses.replace(info, n_frames=counts["frames"])
