"""The contract, defined once: every module that needs one of these names or numbers imports it from here.

* The benchmark's fixed numbers: the index space (one feature per 16 frames), the 300-feature
  window, the 32-feature ground truth, the 500-d features and the 64-step decoding limit are
  properties of the data contract (Feng et al. 2018's splits, the paper's Implementation
  Details), not tunable hyper-parameters.
* The model's tensor names: the inputs of the Keras model, the input pipeline's batches, the
  exported signature and every client; the model's outputs; the serving signature's outputs.
  (serving/signature.py adds what only serving needs: dtypes, shapes, files, ports, limits.)

Why one home: written in several places they drift apart silently (a renamed input breaks the
export, the server or a client only at run time). Nothing here imports anything heavy, so every
module, the CLI's included, can import it.
"""
from __future__ import annotations

from typing import List, Tuple

FRAMES_PER_FEATURE = 16  # one C3D feature per 16 frames, no overlap (paper, Implementation Details)
FRAMES_PER_HDF5_ROW = 8  # the ActivityNet C3D HDF5 file has one row every 8 frames ...
HDF5_ROW_STRIDE = FRAMES_PER_FEATURE // FRAMES_PER_HDF5_ROW  # ... so rows[::2] is the feature index space
MAX_WINDOW = 300  # a split entry's window is cut to at most 300 features (Feng et al. 2018 splits)
MAX_GROUNDTRUTH = 32  # a ground-truth segment is at most 32 features (Feng et al. 2018 splits)
FULL_DECODE_MAX_FRAMES = 1024  # longest predicted segment under full supervision (paper, Implementation Details)
FULL_DECODE_MAX_LENGTH = FULL_DECODE_MAX_FRAMES // FRAMES_PER_FEATURE  # = 64 features: Eq. 20's and Feng's limit
FEATURE_DIM = 500  # the paper's feature dim: C3D fc7 reduced by ActivityNet's PCA (the released features' width)
FC7_DIM = 4096  # C3D fc7 width, before PCA
# The shapes every speed figure is measured at (`vreloc bench`, vreloc/bench/model.py): the paper's
# batch of 128 pairs, a 16-step query, a reference of one whole window, the paper's feature dim.
PAPER_SHAPES = dict(batch_size=128, query_steps=16, reference_steps=MAX_WINDOW, feature_dim=FEATURE_DIM)
SUPERVISIONS = ("full", "weak")
# Decoding rules (vreloc_tf.model.decoding): Eq. 20, the weak threshold rule, Feng et al. 2018's decoding loop
DECODE_RULES = ("full", "weak", "feng")

# -- tensor names ------------------------------------------------------------------------------------
# Inputs of the model, of every batch the input pipeline makes, and of the serving signature.
QUERY = "query"  # float32 [B, Lq, D]
QUERY_LENGTH = "query_length"  # int32 [B]: valid steps of each query
REFERENCE = "reference"  # float32 [B, Lr, D]
REFERENCE_LENGTH = "reference_length"  # int32 [B]: valid steps of each reference
INPUT_NAMES = (QUERY, QUERY_LENGTH, REFERENCE, REFERENCE_LENGTH)
# Outputs of the Keras model (vreloc_tf.model.functional).
PROBABILITIES = "probabilities"  # float32 [B, Lr, 4]: softmax over (start, end, action, background)
ATTENTION = "attention"  # float32 [B, Lr, k]: the multiscale attention (CGBM: its cross gates)
SELF_ATTENTION = "self_attention"  # float32 [B, Lr, h*d_k] ([B, Lr, 0] when off)
MODEL_OUTPUT_NAMES = (PROBABILITIES, ATTENTION, SELF_ATTENTION)
# Outputs of the serving signature (serving/export.py): the probabilities and the decoded segment.
START = "start"  # int32 [B]: first feature index of the segment
END = "end"  # int32 [B]: one past its last feature index (exclusive)
SCORE = "score"  # float32 [B]: the decoding score of the segment
SIGNATURE_OUTPUT_NAMES = (PROBABILITIES, START, END, SCORE)
# Batch keys beside the inputs: the targets of the losses (vreloc_tf.model.losses), [B, 2] int32 [start, end).
GROUNDTRUTH = "groundtruth"  # the labelled segment (full supervision; vreloc_tf.data.input_pipeline)
PSEUDO_GROUNDTRUTH = "pseudo_groundtruth"  # the teacher's segment (weak supervision, ours; input_pipeline)
SELF_TARGET = "self_target"  # the segment of the student's running average (vreloc_tf.training.fit)


def reference_windows(length: int, window: int) -> List[Tuple[int, int]]:
    """[start, end) windows of at most ``window`` steps, overlapping by half, covering [0, length).

    How a reference longer than the model's window is cut (`vreloc locate`, and the exhaustive
    reference of library search), so both see a long video the same way.
    """
    if length <= window:
        return [(0, length)]
    hop = max(1, window // 2)
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] + window < length:
        starts.append(length - window)
    return [(s, s + window) for s in starts]
