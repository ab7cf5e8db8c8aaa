"""Stand-in weight files in the exact published formats: random values, real layer names and shapes.

Pretrained weights cannot be downloaded here, and must never be committed; these files let
tests run every backbone's loading code on what users will give it:

* :func:`c3d_standin`: ``sports1M_weights_tf.h5`` as axon-research/c3d-keras (re-hosted by
  adamcasson/c3d) saved it -- Keras 1 ``save_weights`` layout, root ``layer_names``, per-layer
  ``weight_names`` ``<layer>_W:0`` / ``<layer>_b:0``, conv kernels channels-last
  ``(3, 3, 3, in, out)``, fc6 ``(8192, 4096)``, fc7 ``(4096, 4096)``, fc8 ``(4096, 487)``, and
  the weightless pool/flatten/dropout layers listed too. 79.5 M float32 values, ~318 MB.
* :func:`clip_standin_preset`: a keras-hub preset folder as keras-hub's
  ``convert_clip_checkpoints.py`` publishes ``clip_vit_base_patch32`` -- the ``CLIPBackbone``
  of the real ViT-B/32 config (151,277,363 parameters, ~605 MB ``model.weights.h5``),
  ``image_converter.json`` (224x224, bicubic, CLIP's mean/std), a tokenizer, ``metadata.json``
  -- written by keras-hub's own ``save_to_preset`` from seeded random values.

Both are written once per test session into the session's temporary folder (``make_*`` take a
folder) and take seconds; the tests that need them are few.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

C3D_SHAPES = {
    "conv1": ((3, 3, 3, 3, 64), (64,)),
    "conv2": ((3, 3, 3, 64, 128), (128,)),
    "conv3a": ((3, 3, 3, 128, 256), (256,)),
    "conv3b": ((3, 3, 3, 256, 256), (256,)),
    "conv4a": ((3, 3, 3, 256, 512), (512,)),
    "conv4b": ((3, 3, 3, 512, 512), (512,)),
    "conv5a": ((3, 3, 3, 512, 512), (512,)),
    "conv5b": ((3, 3, 3, 512, 512), (512,)),
    "fc6": ((8192, 4096), (4096,)),
    "fc7": ((4096, 4096), (4096,)),
    "fc8": ((4096, 487), (487,)),
}
C3D_LAYERS = ["conv1", "pool1", "conv2", "pool2", "conv3a", "conv3b", "pool3", "conv4a", "conv4b", "pool4",
              "conv5a", "conv5b", "zeropadding3d_1", "pool5", "flatten_1", "fc6", "dropout_1", "fc7", "dropout_2",
              "fc8"]


def c3d_standin(path: str, seed: int = 0) -> str:
    """Write the stand-in ``sports1M_weights_tf.h5`` (He-scaled random values) to ``path``."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in C3D_LAYERS])
        for name in C3D_LAYERS:
            group = f.create_group(name)
            if name not in C3D_SHAPES:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel_shape, bias_shape = C3D_SHAPES[name]
            names = [f"{name}_W:0", f"{name}_b:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names])
            fan_in = int(np.prod(kernel_shape[:-1]))
            group.create_dataset(names[0], data=(rng.standard_normal(kernel_shape, dtype=np.float32)
                                                 * np.float32(np.sqrt(2.0 / fan_in))))
            group.create_dataset(names[1], data=rng.standard_normal(bias_shape, dtype=np.float32) * np.float32(0.01))
    return path


def clip_standin_preset(folder: str, seed: int = 0) -> str:
    """Write the stand-in ``clip_vit_base_patch32`` preset folder; returns its path."""
    import keras_hub

    from pipeline import clip

    model = clip.build_clip(clip.VIT_B32)
    clip.randomize(model, seed)
    os.makedirs(folder, exist_ok=True)
    model.save_to_preset(folder)
    clip.image_converter().save_to_preset(folder)
    # A tokenizer in the preset's format (the real one has CLIP's 49,408-entry BPE vocabulary;
    # image features never use it, so a small one keeps the folder's layout without the size).
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b</w>": 3, "ab</w>": 4}
    keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=["a b</w>"]).save_to_preset(folder)
    return folder
