"""The ``clip`` backbone's network: frames -> a keras-hub CLIP image encoder -> L2-normalized embeddings.

Why CLIP: the best published result on this benchmark since the paper (MATR, ICCV 2025)
uses frozen CLIP ViT-B/32 embeddings of one frame every 2 s. A ViT-B/32 image costs 8.8
GFLOP (4.4 G multiply-adds; pipeline.backbones counts them from the config), so 30 frames per
video minute cost ~0.26 TFLOP against C3D's ~7.2 TFLOP (94 clips of 77 GFLOP at 25 fps).

Weights come as a keras-hub *preset*: a handle (``clip_vit_base_patch32``, or
``kaggle://keras/clip/keras/clip_vit_base_patch32/3``), which keras-hub downloads into the
KaggleHub cache at first use, or a local preset folder in the layout keras-hub writes
(``save_to_preset``): ``config.json`` (the ``CLIPBackbone`` config), ``model.weights.h5``,
``metadata.json``, ``image_converter.json`` (the preprocessing), ``tokenizer.json`` and
``assets/tokenizer/``. keras-hub itself checks every weight's shape against the config when
it loads ``model.weights.h5``.

Preprocessing is that release's ``CLIPImageConverter`` (read from ``image_converter.json``):
centre crop to the target aspect ratio, bicubic resize to 224x224, then ``x * scale +
offset`` with CLIP's per-channel mean and std (:data:`CLIP_MEAN`, :data:`CLIP_STD`). The
embedding is ``CLIPBackbone.get_vision_embeddings`` (the pooled class token through the
vision projection, 512-d for ViT-B/32), divided by its L2 norm.

``--random-weights`` builds the ViT-B/32 architecture (:data:`VIT_B32`, the config of the
published preset) with seeded random values: the same shapes and cost, meaningless features.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import numpy as np

from vreloc_tf.errors import InputError

log = logging.getLogger("vreloc.clip")

DEFAULT_PRESET = "clip_vit_base_patch32"  # keras-hub preset of OpenAI's CLIP ViT-B/32
PRESET_URL = "https://www.kaggle.com/models/keras/clip/keras/clip_vit_base_patch32"
IMAGE_SIZE = 224
# OpenAI CLIP's image normalisation (openai/clip-vit-base-patch32 preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# CLIPBackbone config of the published ViT-B/32 preset (config.json): vision 12 x 768 (patch 32),
# text 12 x 512, projection 512; 151,277,363 parameters (keras-hub's preset metadata).
VIT_B32 = {
    "vision_encoder": {"patch_size": 32, "hidden_dim": 768, "num_layers": 12, "num_heads": 12,
                       "intermediate_dim": 3072, "intermediate_activation": "quick_gelu",
                       "image_shape": (IMAGE_SIZE, IMAGE_SIZE, 3)},
    "text_encoder": {"vocabulary_size": 49408, "embedding_dim": 512, "hidden_dim": 512, "num_layers": 12,
                     "num_heads": 8, "intermediate_dim": 2048, "intermediate_activation": "quick_gelu",
                     "max_sequence_length": 77},
    "projection_dim": 512,
}
VIT_B32_PARAMS = 151_277_363


class ClipWeightsError(InputError):
    """A preset that cannot be loaded as a CLIP-style image encoder; the message names it."""


def build_clip(config: Optional[dict] = None):
    """A keras-hub ``CLIPBackbone`` of ``config`` (default :data:`VIT_B32`) with Keras's own initial values."""
    import keras_hub

    config = config or VIT_B32
    vision = keras_hub.models.CLIPVisionEncoder(**config["vision_encoder"])
    text = keras_hub.models.CLIPTextEncoder(**config["text_encoder"])
    return keras_hub.models.CLIPBackbone(vision, text, projection_dim=config["projection_dim"])


def randomize(model, seed: int) -> None:
    """Overwrite every float weight with seeded values, the same on every machine and backend.

    Kernels ~ N(0, 1 / fan_in) (so a random network still passes image content through its
    12 layers: with CLIP's own N(0, 0.02) init every frame maps to nearly the same vector),
    embeddings ~ N(0, 0.02), biases and LayerNorm betas 0, gammas 1, the logit scale
    log(1 / 0.07) (CLIP's init); integer buffers (position ids) are left alone. Keras
    initializers depend on the global seed state and the backend; this does not.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:  # construction order: deterministic
        if "int" in str(variable.dtype):
            continue
        path = variable.path
        name = path.rsplit("/", 1)[-1]
        shape = tuple(variable.shape)
        if name == "gamma":
            value = np.ones(shape)
        elif name in ("beta", "bias"):
            value = np.zeros(shape)
        elif name == "logit_scale":
            value = np.full(shape, np.log(1 / 0.07))
        elif name == "kernel":
            fan_in = int(np.prod(shape[:-1])) if len(shape) != 3 or path.endswith("attention_output/kernel") \
                else shape[0]
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        else:  # class, patch position, token embeddings
            value = rng.normal(0.0, 0.02, shape)
        variable.assign(np.asarray(value, np.float32))


def image_converter(image_size: int = IMAGE_SIZE):
    """The preprocessing of the published CLIP presets (what their ``image_converter.json`` holds)."""
    import keras_hub

    return keras_hub.layers.CLIPImageConverter(
        image_size=(image_size, image_size), scale=[1.0 / 255.0 / s for s in CLIP_STD],
        offset=[-m / s for m, s in zip(CLIP_MEAN, CLIP_STD)], interpolation="bicubic")


def random_clip(seed: int = 0):
    """(ViT-B/32 CLIPBackbone with seeded RANDOM weights, its image converter): tests and offline demos.

    Meaningless features; the caller says so (pipeline.backbones.resolve logs it once per job).
    """
    model = build_clip()
    randomize(model, seed)
    return model, image_converter()


def check_preset_folder(preset: str) -> None:
    """A local preset folder must hold the files keras-hub reads (ClipWeightsError naming the missing ones)."""
    if os.path.isdir(preset):
        missing = [f for f in ("config.json", "model.weights.h5", "image_converter.json")
                   if not os.path.exists(os.path.join(preset, f))]
        if missing:
            raise ClipWeightsError(f"--weights {preset}: not a keras-hub preset folder (missing {', '.join(missing)})")


def load_preset(preset: str):
    """(backbone, image converter) of a keras-hub preset handle or local preset folder.

    The backbone must offer ``get_vision_embeddings`` (CLIP; SigLIP presets load the same way).
    """
    import keras_hub

    check_preset_folder(preset)
    try:
        model = keras_hub.models.Backbone.from_preset(preset)
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as exc:  # keras-hub raises ValueError/OSError/KaggleApiHTTPError/... for a bad preset
        raise ClipWeightsError(
            f"--weights {preset}: cannot load it as a keras-hub preset ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); give a preset handle such as {DEFAULT_PRESET} (downloaded "
            f"at first use, needs the internet), a local preset folder, or --random-weights for an offline "
            f"smoke test") from None
    if not hasattr(model, "get_vision_embeddings"):
        raise ClipWeightsError(f"--weights {preset}: a {type(model).__name__} has no image embeddings "
                               f"(get_vision_embeddings); use a CLIP preset")
    return model, converter


def preset_weights_file(preset: str) -> str:
    """The local path of a preset's ``model.weights.h5`` (downloading the preset if it is a handle)."""
    check_preset_folder(preset)
    if os.path.isdir(preset):
        return os.path.join(preset, "model.weights.h5")
    from keras_hub.src.utils.preset_utils import get_file

    try:
        return get_file(preset, "model.weights.h5")
    except Exception as exc:
        raise ClipWeightsError(
            f"--weights {preset}: cannot fetch the preset ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:300]}); without the internet, copy the preset folder to this "
            f"machine and pass its path, or use --random-weights for an offline smoke test") from None


def preset_embedding_dim(preset: str) -> Optional[int]:
    """The embedding width a preset's ``config.json`` declares (``projection_dim``), without building it."""
    from keras_hub.src.utils.preset_utils import load_json

    try:
        config = load_json(preset, "config.json")
    except Exception as exc:
        raise ClipWeightsError(f"--weights {preset}: cannot read the preset's config.json ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:300]})") from None
    dim = (config.get("config") or {}).get("projection_dim") if isinstance(config, dict) else None
    return int(dim) if isinstance(dim, int) else None


def embedding_dim(model) -> int:
    return int(model.vision_projection.units) if hasattr(model, "vision_projection") else int(
        model.vision_encoder.output.shape[-1])


def image_size(model) -> Tuple[int, int]:
    shape = model.vision_encoder.image_shape
    return int(shape[0]), int(shape[1])


class ClipEncoder:
    """uint8 RGB frames [n, H, W, 3] -> float32 L2-normalized embeddings [n, E], batch by batch.

    One ``tf.function`` holds the image converter and the encoder; its signature has free
    batch, height and width, so frames of any size (one video's share one) do not retrace.
    """

    def __init__(self, model, converter, batch_size: int = 16):
        import tensorflow as tf

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.converter, self.batch_size = model, converter, int(batch_size)
        self.dim = embedding_dim(model)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def embed(frames):
            images = converter(tf.cast(frames, tf.float32))
            e = model.get_vision_embeddings(images)
            return e / tf.maximum(tf.norm(e, axis=-1, keepdims=True), 1e-12)

        self._embed = embed

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"CLIP input must be uint8 frames [n, H, W, 3], got {frames.dtype} {frames.shape}")
        out = np.empty((len(frames), self.dim), np.float32)
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start:start + self.batch_size]
            out[start:start + len(batch)] = self._embed(batch).numpy()
        return out
