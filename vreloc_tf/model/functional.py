"""The models as Keras functional models: the multiscale attention model (Huang et al., AAAI 2020,
Fig. 2; ``model.architecture: multiscale_attention``, the default) and Feng et al.'s CGBM
(``cgbm``; vreloc_tf.model.cgbm has its layers and how its outputs fill the contract below).

    Q, R --Eq.7 encoders--> H^q, H^r --Eq.8 multiscale attention--> H^matt [B, Lr, k]
                                  H^r --Eq.9 self-attention-------> H^satt [B, Lr, h*d_k]
         Q, R (raw) --ours, optional--------> similarity features [B, Lr, 6] (layers.SimilarityFeatures)
    concat -> dropout -> BiLSTM(d_h) -> dropout -> LSTM(d_l) -> Dense(4) -> softmax (Eqs. 10-12)

Inputs and outputs (the serving signature, serving/signature.py, exposes the same names):
inputs ``query`` [B, Lq, D], ``query_length`` [B], ``reference`` [B, Lr, D],
``reference_length`` [B]; outputs ``probabilities`` [B, Lr, 4] (start, end, action,
background), ``attention`` [B, Lr, k] and ``self_attention`` [B, Lr, h*d_k] — a
[B, Lr, 0] placeholder when ``cfg.model.self_attention`` is off (Table 2 ablations).

The CGBM gives the same inputs and outputs: ``attention`` [B, Lr, 2] (its cross gates, forward and
backward) and ``self_attention`` a [B, Lr, 0] placeholder.

Importing this module registers every custom layer, so ``keras.saving.load_model``
needs no ``custom_objects``.

Size: the paper configuration (``configs/paper_full.yaml``, D = 500) has 1,698,820 trainable
parameters (``vreloc.bench.model.count_parameters`` gives the same number analytically).
"""
from __future__ import annotations

from typing import List, Tuple

import keras

from vreloc_tf.model.cgbm import BilinearMatching, CrossGatedMatching, CrossGating  # noqa: F401  (registered)
from vreloc_tf.config import Config
from vreloc_tf.contract import (ATTENTION, INPUT_NAMES, MODEL_OUTPUT_NAMES, PROBABILITIES, QUERY, QUERY_LENGTH,
                                REFERENCE, REFERENCE_LENGTH, SELF_ATTENTION)
from vreloc_tf.model.layers import (  # noqa: F401  (imported to register them for loading)
    EmptyFeatures, MaskedConvEncoder, MultiscaleAttention, SelfAttention, SequenceMask, SimilarityFeatures,
    merge_head_groups)

OUTPUT_NAMES = MODEL_OUTPUT_NAMES  # the model's outputs (INPUT_NAMES: its inputs, both from vreloc_tf.contract)


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


def attention_groups(cfg: Config) -> List[Tuple[int, str]]:
    """Rows of the ``attention`` output in order, as (count, label) groups, for figures (Figure 4)."""
    if cfg.model.architecture == "cgbm":
        return [(1, "forward"), (1, "backward")]
    return [(heads, f"k={kernel} d={dilation}") for heads, kernel, dilation, _ in head_groups(cfg)]


def attention_label(cfg: Config) -> str:
    """What the rows of the ``attention`` output are (a figure's axis label)."""
    return "CGBM cross gate (mean)" if cfg.model.architecture == "cgbm" else "multiscale attention head"


def build_model(cfg: Config, feature_dim: int) -> keras.Model:
    """Build the functional model of ``cfg.model.architecture`` for features of width ``feature_dim`` (D)."""
    if int(feature_dim) < 1:
        raise ValueError(f"build_model: feature_dim must be a positive int, got {feature_dim!r}")
    m = cfg.model
    query = keras.Input(shape=(None, feature_dim), dtype="float32", name=QUERY)
    query_length = keras.Input(shape=(), dtype="int32", name=QUERY_LENGTH)
    reference = keras.Input(shape=(None, feature_dim), dtype="float32", name=REFERENCE)
    reference_length = keras.Input(shape=(), dtype="int32", name=REFERENCE_LENGTH)
    inputs = {QUERY: query, QUERY_LENGTH: query_length, REFERENCE: reference, REFERENCE_LENGTH: reference_length}
    if m.architecture == "cgbm":
        return _build_cgbm(cfg, inputs)
    if m.architecture != "multiscale_attention":
        raise ValueError(f"build_model: unknown model.architecture {m.architecture!r}")

    # Eq. 7: separate encoders for the query and the reference.
    h_q = MaskedConvEncoder(m.hidden_dim, m.encoder_kernel_size, name="query_encoder")(query, query_length)
    h_r = MaskedConvEncoder(m.hidden_dim, m.encoder_kernel_size, name="reference_encoder")(
        reference, reference_length)

    # Eq. 8: multiscale attention, Eq. 9: self-attention on the reference.
    h_matt = MultiscaleAttention([list(g) for g in head_groups(cfg)], name="multiscale_attention")(
        h_r, h_q, reference_length, query_length)
    parts = [h_matt]
    if m.self_attention:
        h_satt = SelfAttention(m.self_attention_heads, m.self_attention_key_dim, name=SELF_ATTENTION)(
            h_r, reference_length)
        parts.append(h_satt)
    else:
        h_satt = EmptyFeatures(name=SELF_ATTENTION)(h_r)
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
    probabilities = keras.layers.Dense(4, activation="softmax", name=PROBABILITIES)(x)

    outputs = {PROBABILITIES: probabilities, ATTENTION: h_matt, SELF_ATTENTION: h_satt}
    return keras.Model(inputs=inputs, outputs=outputs, name="vreloc_multiscale_attention")


def _build_cgbm(cfg: Config, inputs: dict) -> keras.Model:
    """Feng et al.'s CGBM (vreloc_tf.model.cgbm; the sources of its sizes are in configs/cgbm.yaml)."""
    c = cfg.model.cgbm
    query, reference = inputs[QUERY], inputs[REFERENCE]
    query_length, reference_length = inputs[QUERY_LENGTH], inputs[REFERENCE_LENGTH]
    query_mask = SequenceMask(name="query_mask")(query_length, query)
    reference_mask = SequenceMask(name="reference_mask")(reference_length, reference)

    # Sec. 3.1: one LSTM (the same weights) aggregates the query and the reference.
    video_lstm = keras.layers.LSTM(c.memory_dim, return_sequences=True, name="video_lstm")
    h_q = keras.layers.Dropout(c.dropout, name="query_dropout")(video_lstm(query, mask=query_mask))
    h_r = keras.layers.Dropout(c.dropout, name="reference_dropout")(video_lstm(reference, mask=reference_mask))

    # Sec. 3.2: attention, cross gating, bilinear matching, forward and backward matching LSTMs.
    matching, gates = CrossGatedMatching(c.attention_dim, c.bilinear_factors, name="matching")(
        h_r, h_q, reference_length, query_length)

    # Sec. 3.3: localization LSTM and the four per-step probabilities.
    x = keras.layers.Dropout(c.matching_dropout, name="matching_dropout")(matching)
    x = keras.layers.LSTM(c.attention_dim, return_sequences=True, name="localization_lstm")(x, mask=reference_mask)
    probabilities = keras.layers.Dense(4, activation="softmax", name=PROBABILITIES)(x)
    outputs = {PROBABILITIES: probabilities, ATTENTION: gates,
               SELF_ATTENTION: EmptyFeatures(name=SELF_ATTENTION)(reference)}
    return keras.Model(inputs=inputs, outputs=outputs, name="vreloc_cgbm")
