"""The multiscale attention model (Huang et al., AAAI 2020, Fig. 2) as a Keras functional model.

    Q, R --Eq.7 encoders--> H^q, H^r --Eq.8 multiscale attention--> H^matt [B, Lr, k]
                                  H^r --Eq.9 self-attention-------> H^satt [B, Lr, h*d_k]
         Q, R (raw) --ours, optional--------> similarity features [B, Lr, 6] (layers.SimilarityFeatures)
    concat -> dropout -> BiLSTM(d_h) -> dropout -> LSTM(d_l) -> Dense(4) -> softmax (Eqs. 10-12)

Inputs and outputs (the serving signature, serving/signature.py, exposes the same names):
inputs ``query`` [B, Lq, D], ``query_length`` [B], ``reference`` [B, Lr, D],
``reference_length`` [B]; outputs ``probabilities`` [B, Lr, 4] (start, end, action,
background), ``attention`` [B, Lr, k] and ``self_attention`` [B, Lr, h*d_k] — a
[B, Lr, 0] placeholder when ``cfg.model.self_attention`` is off (Table 2 ablations).

Importing this module registers every custom layer, so ``keras.saving.load_model``
needs no ``custom_objects``.

Size: the paper configuration (``configs/paper_full.yaml``, D = 500) has 1,698,820 trainable
parameters (``vreloc_tf.model_bench.count_parameters`` gives the same number analytically).
"""
from __future__ import annotations

from typing import List, Tuple

import keras

from vreloc_tf.config import Config
from vreloc_tf.layers import (  # noqa: F401  (imported to register them for loading)
    EmptyFeatures, MaskedConvEncoder, MultiscaleAttention, SelfAttention, SequenceMask, SimilarityFeatures,
    merge_head_groups)

INPUT_NAMES = ("query", "query_length", "reference", "reference_length")
OUTPUT_NAMES = ("probabilities", "attention", "self_attention")


def head_groups(cfg: Config) -> List[Tuple[int, int, int, int]]:
    """The (heads, kernel_size, dilation, filters) groups of the multiscale attention.

    ``cfg.model.multiscale = False`` is Table 2's base model: the same heads and filters,
    but every head with kernel 3 and dilation 1. Groups with equal settings are merged
    into one convolution.
    """
    groups = []
    for g in cfg.model.heads:
        if cfg.model.multiscale:
            groups.append((g.heads, g.kernel_size, g.dilation, g.filters))
        else:
            groups.append((g.heads, 3, 1, g.filters))
    return merge_head_groups(groups)


def build_model(cfg: Config, feature_dim: int) -> keras.Model:
    """Build the functional model for features of width ``feature_dim`` (D)."""
    if int(feature_dim) < 1:
        raise ValueError(f"build_model: feature_dim must be a positive int, got {feature_dim!r}")
    m = cfg.model
    query = keras.Input(shape=(None, feature_dim), dtype="float32", name="query")
    query_length = keras.Input(shape=(), dtype="int32", name="query_length")
    reference = keras.Input(shape=(None, feature_dim), dtype="float32", name="reference")
    reference_length = keras.Input(shape=(), dtype="int32", name="reference_length")

    # Eq. 7: separate encoders for the query and the reference.
    h_q = MaskedConvEncoder(m.hidden_dim, m.encoder_kernel_size, name="query_encoder")(query, query_length)
    h_r = MaskedConvEncoder(m.hidden_dim, m.encoder_kernel_size, name="reference_encoder")(
        reference, reference_length)

    # Eq. 8: multiscale attention, Eq. 9: self-attention on the reference.
    h_matt = MultiscaleAttention([list(g) for g in head_groups(cfg)], name="multiscale_attention")(
        h_r, h_q, reference_length, query_length)
    parts = [h_matt]
    if m.self_attention:
        h_satt = SelfAttention(m.self_attention_heads, m.self_attention_key_dim, name="self_attention")(
            h_r, reference_length)
        parts.append(h_satt)
    else:
        h_satt = EmptyFeatures(name="self_attention")(h_r)
    if m.similarity_features:  # ours: parameter-free similarity on the raw features (layers.SimilarityFeatures)
        parts.append(SimilarityFeatures(m.similarity_temperature, name="similarity_features")(
            reference, query, reference_length, query_length))
    features = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="localization_input")(parts)

    # Eqs. 10-12: localization predictor; the LSTMs skip padded steps (the backward
    # direction starts at each example's last valid step).
    mask = SequenceMask(name="reference_mask")(reference_length, reference)
    x = keras.layers.Dropout(m.dropout_before_bilstm, name="dropout_before_bilstm")(features)
    x = keras.layers.Bidirectional(keras.layers.LSTM(m.hidden_dim, return_sequences=True), name="bilstm")(
        x, mask=mask)
    x = keras.layers.Dropout(m.dropout_after_bilstm, name="dropout_after_bilstm")(x)
    x = keras.layers.LSTM(m.lstm_dim, return_sequences=True, name="lstm")(x, mask=mask)
    probabilities = keras.layers.Dense(4, activation="softmax", name="probabilities")(x)

    inputs = {"query": query, "query_length": query_length,
              "reference": reference, "reference_length": reference_length}
    outputs = {"probabilities": probabilities, "attention": h_matt, "self_attention": h_satt}
    return keras.Model(inputs=inputs, outputs=outputs, name="vreloc_multiscale_attention")
