"""Custom Keras layers of the multiscale attention model (Huang et al., AAAI 2020).

Every layer uses ``keras.ops`` only, so the model does not depend on TensorFlow.
Every layer takes the per-example lengths of its sequences next to the padded
tensors: padding never changes a result for a valid step, because

* inputs are zeroed at padded steps before any convolution, so a "same"
  convolution sees exactly the zeros an unpadded example would be padded with;
* softmaxes give padded steps a weight of exactly zero;
* means over query frames divide by the true query length;
* outputs at padded steps are zeroed (finite, and ignored downstream).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import keras
from keras import ops

_NEG_INF = -1e9  # added to masked attention logits; exp() of it underflows to exactly 0


def sequence_mask(lengths, max_length):
    """Boolean mask [B, L]: True where the step index is below the example's length."""
    steps = ops.arange(max_length, dtype="int32")
    return ops.less(ops.expand_dims(steps, 0), ops.expand_dims(ops.cast(lengths, "int32"), 1))


def _float_mask(lengths, x):
    """Float mask [B, L, 1] for a padded sequence x [B, L, C]."""
    mask = sequence_mask(lengths, ops.shape(x)[1])
    return ops.expand_dims(ops.cast(mask, x.dtype), -1)


def _unit(x):
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True)), 1e-6)


@keras.saving.register_keras_serializable(package="vreloc")
class SequenceMask(keras.layers.Layer):
    """Lengths [B] (+ a padded sequence for its length L) -> boolean mask [B, L], fed to the LSTMs."""

    def call(self, lengths, sequence):
        return sequence_mask(lengths, ops.shape(sequence)[1])

    def compute_output_spec(self, lengths, sequence):
        return keras.KerasTensor(sequence.shape[:2], dtype="bool")


@keras.saving.register_keras_serializable(package="vreloc")
class MaskedConvEncoder(keras.layers.Layer):
    """Eq. 7: a 1-D convolution followed by layer normalization, blind to padding.

    The query and the reference each get their own instance (no weight sharing).
    """

    def __init__(self, units: int, kernel_size: int = 3, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_size = int(kernel_size)
        self.epsilon = float(epsilon)
        self.norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="norm")

    def build(self, sequence_shape, lengths_shape=None):
        dim = int(sequence_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(self.kernel_size, dim, self.units),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self.norm.build(tuple(sequence_shape[:-1]) + (self.units,))
        self.built = True

    def call(self, sequence, lengths):
        mask = _float_mask(lengths, sequence)
        hidden = ops.conv(sequence * mask, self.kernel, strides=1, padding="same") + self.bias
        return self.norm(hidden) * mask

    def compute_output_shape(self, sequence_shape, lengths_shape=None):
        return tuple(sequence_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "kernel_size": self.kernel_size, "epsilon": self.epsilon})
        return config


def merge_head_groups(groups: Sequence[Sequence[int]]) -> List[Tuple[int, int, int, int]]:
    """Merge head groups that share (kernel_size, dilation, filters) so each becomes one convolution.

    ``groups`` holds (heads, kernel_size, dilation, filters) rows (Table 1). The order of heads
    in the output map follows the first appearance of each (kernel, dilation, filters) triple.
    """
    merged: Dict[Tuple[int, int, int], int] = {}
    for heads, kernel_size, dilation, filters in groups:
        key = (int(kernel_size), int(dilation), int(filters))
        merged[key] = merged.get(key, 0) + int(heads)
    return [(heads, k, d, f) for (k, d, f), heads in merged.items()]


@keras.saving.register_keras_serializable(package="vreloc")
class MultiscaleAttention(keras.layers.Layer):
    """Eqs. 4-6: k attention heads, each with its own pair of dilated 1-D convolutions.

    Head i encodes the reference with f_i^conv1 and the query with f_i^conv2, forms the map
    R_i Q_i^T / sqrt(d_k) [Lr, Lq], takes a softmax over the (valid) reference steps for each
    query frame and averages over the (valid) query frames -> one score per reference step.
    f_i^conv1 has no bias: under the softmax over reference steps it would cancel exactly.

    Why grouped: heads sharing (kernel size, dilation, filters) are one convolution with
    heads*filters output channels, and all maps of a group are one batched matmul; this gives
    the same numbers as one layer per head at a fraction of the kernel launches.

    ``head_groups``: list of [heads, kernel_size, dilation, filters]; d_k of a head = filters.
    Output: [B, Lr, k], heads in the order of ``head_groups``.
    """

    def __init__(self, head_groups: Sequence[Sequence[int]], **kwargs):
        super().__init__(**kwargs)
        self.head_groups = [[int(v) for v in g] for g in head_groups]
        if not self.head_groups:
            raise ValueError("MultiscaleAttention: head_groups is empty; at least one head is needed")
        for g in self.head_groups:
            if len(g) != 4 or min(g) < 1:
                raise ValueError(
                    f"MultiscaleAttention: each head group must be [heads, kernel_size, dilation, filters] "
                    f"of positive ints, got {g}")
        self._groups = [tuple(g) for g in self.head_groups]
        self.num_heads = sum(g[0] for g in self._groups)

    def build(self, reference_shape, query_shape=None, reference_lengths_shape=None,
              query_lengths_shape=None):
        ref_dim = int(reference_shape[-1])
        query_dim = int((query_shape or reference_shape)[-1])
        self.reference_kernels, self.query_kernels, self.query_biases = [], [], []
        for index, (heads, kernel_size, _dilation, filters) in enumerate(self._groups):
            channels = heads * filters
            # No bias on the reference side: it would add b . q_j to every logit of query frame j,
            # a constant over the reference axis that the softmax over that axis removes exactly
            # (its gradient is identically zero).
            self.reference_kernels.append(self.add_weight(
                name=f"reference_kernel_{index}", shape=(kernel_size, ref_dim, channels),
                initializer="glorot_uniform"))
            self.query_kernels.append(self.add_weight(
                name=f"query_kernel_{index}", shape=(kernel_size, query_dim, channels),
                initializer="glorot_uniform"))
            self.query_biases.append(self.add_weight(
                name=f"query_bias_{index}", shape=(channels,), initializer="zeros"))
        self.built = True

    def _encode(self, x, kernel, bias, heads, dilation, filters):
        y = ops.conv(x, kernel, strides=1, padding="same", dilation_rate=dilation)
        if bias is not None:
            y = y + bias
        return ops.reshape(y, (ops.shape(x)[0], ops.shape(x)[1], heads, filters))

    def call(self, reference, query, reference_lengths, query_lengths):
        ref_mask = sequence_mask(reference_lengths, ops.shape(reference)[1])  # [B, Lr]
        query_mask = sequence_mask(query_lengths, ops.shape(query)[1])  # [B, Lq]
        reference = reference * ops.expand_dims(ops.cast(ref_mask, reference.dtype), -1)
        query = query * ops.expand_dims(ops.cast(query_mask, query.dtype), -1)

        # Encode every group, scale by 1/sqrt(d_k) of its heads, then stack groups that share
        # a key width so their maps come out of a single batched matmul.
        by_width: Dict[int, Tuple[list, list]] = {}
        for index, (heads, _k, dilation, filters) in enumerate(self._groups):
            r = self._encode(reference, self.reference_kernels[index], None,
                             heads, dilation, filters) * (1.0 / math.sqrt(filters))
            q = self._encode(query, self.query_kernels[index], self.query_biases[index],
                             heads, dilation, filters)
            refs, queries = by_width.setdefault(filters, ([], []))
            refs.append(r)
            queries.append(q)

        # Softmax over the valid reference steps for every head and query frame, then the mean
        # over the valid query frames, written as exp / per-column sums folded into one matmul:
        # mean_j softmax_i(l_ij) = sum_j [w_j / Z_j] exp(l_ij - max_i l_ij), w_j = mask_j / n_q.
        # Same numbers as softmax-then-mean, with fewer passes over the [B, k, Lq, Lr] tensor.
        ref_bias = ops.where(ref_mask, 0.0, _NEG_INF)[:, None, None, :]  # [B, 1, 1, Lr]
        query_weight = ops.cast(query_mask, reference.dtype)
        query_weight = query_weight / ops.maximum(ops.sum(query_weight, axis=1, keepdims=True), 1.0)  # [B, Lq]
        head_scores = []
        for filters in by_width:  # one entry per distinct key width (usually one)
            refs, queries = by_width[filters]
            r = refs[0] if len(refs) == 1 else ops.concatenate(refs, axis=2)  # [B, Lr, h, f]
            q = queries[0] if len(queries) == 1 else ops.concatenate(queries, axis=2)  # [B, Lq, h, f]
            logits = ops.matmul(ops.transpose(q, (0, 2, 1, 3)), ops.transpose(r, (0, 2, 3, 1))) + ref_bias
            exps = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))  # [B, h, Lq, Lr]
            column_weight = query_weight[:, None, :] / ops.sum(exps, axis=-1)  # [B, h, Lq]
            head_scores.append(ops.squeeze(ops.matmul(column_weight[:, :, None, :], exps), axis=2))  # [B, h, Lr]
        scores = head_scores[0] if len(head_scores) == 1 else ops.concatenate(head_scores, axis=1)
        if len(by_width) > 1:  # restore the order of head_groups
            order = []
            offsets, start = {}, 0
            for f in by_width:
                offsets[f] = start
                start += sum(h for h, _k, _d, ff in self._groups if ff == f)
            seen = {f: 0 for f in by_width}
            for heads, _k, _d, f in self._groups:
                order.extend(range(offsets[f] + seen[f], offsets[f] + seen[f] + heads))
                seen[f] += heads
            scores = ops.take(scores, order, axis=1)
        scores = ops.transpose(scores, (0, 2, 1))  # [B, Lr, k]
        return scores * ops.expand_dims(ops.cast(ref_mask, scores.dtype), -1)

    def compute_output_shape(self, reference_shape, query_shape=None, reference_lengths_shape=None,
                             query_lengths_shape=None):
        return tuple(reference_shape[:2]) + (self.num_heads,)

    def get_config(self):
        config = super().get_config()
        config.update({"head_groups": self.head_groups})
        return config


@keras.saving.register_keras_serializable(package="vreloc")
class SelfAttention(keras.layers.Layer):
    """Eqs. 1-3: multi-head scaled dot-product self-attention, heads concatenated (no output projection).

    Each head projects X with its own W^Q, W^K, W^V (d_in x d_k, no bias, as Eq. 2 writes
    plain matrices); keys at padded steps get zero weight. Output [B, L, heads * key_dim].
    """

    def __init__(self, num_heads: int = 2, key_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        if self.num_heads < 1 or self.key_dim < 1:
            raise ValueError(f"SelfAttention: num_heads and key_dim must be >= 1, got "
                             f"{self.num_heads} and {self.key_dim}")

    def build(self, sequence_shape, lengths_shape=None):
        dim = int(sequence_shape[-1])
        # Q, K and V projections of every head side by side: one matmul instead of 3*h.
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(dim, 3 * self.num_heads * self.key_dim),
                                          initializer="glorot_uniform")
        self.built = True

    def call(self, sequence, lengths):
        batch, steps = ops.shape(sequence)[0], ops.shape(sequence)[1]
        mask = sequence_mask(lengths, steps)  # [B, L]
        x = sequence * ops.expand_dims(ops.cast(mask, sequence.dtype), -1)
        qkv = ops.reshape(ops.matmul(x, self.qkv_kernel), (batch, steps, 3, self.num_heads, self.key_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # [3, B, h, L, d_k]
        q, k, v = qkv[0] * (1.0 / math.sqrt(self.key_dim)), qkv[1], qkv[2]
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # [B, h, L, L]
        logits = logits + ops.where(mask, 0.0, _NEG_INF)[:, None, None, :]  # padded keys get weight 0
        # softmax(l) V = (exp(l - max) V) / sum exp(l - max): normalize the small [B, h, L, d_k]
        # product instead of the [B, h, L, L] weights (one pass less over the big tensor).
        exps = ops.exp(logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True)))
        out = ops.matmul(exps, v) / ops.sum(exps, axis=-1, keepdims=True)  # [B, h, L, d_k]
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, steps, self.num_heads * self.key_dim))
        return out * ops.expand_dims(ops.cast(mask, out.dtype), -1)

    def compute_output_shape(self, sequence_shape, lengths_shape=None):
        return tuple(sequence_shape[:2]) + (self.num_heads * self.key_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "key_dim": self.key_dim})
        return config


@keras.saving.register_keras_serializable(package="vreloc")
class SimilarityFeatures(keras.layers.Layer):
    """Parameter-free similarity of every reference step to the query: 6 features per step.

    Why (ours, not in the paper; docs/QUALITY_HISTORY.md has the ablation that chose it; docs/QUALITY.md the current rows): the learned heads of
    the multiscale attention must discover on their own how to ignore what differs between
    two videos of the same action (each video's scene, a component shared by every clip).
    With a few hundred training videos they partly memorise the training classes instead.
    These features give the localization predictor a similarity that is invariant to a
    constant offset of the reference by construction and has nothing to overfit:

    * the reference is centred by its own mean over its valid steps (a per-video
      component cancels) and every step is L2-normalised;
    * its cosine to every query frame is pooled over the valid query frames in three ways:
      a soft maximum ``tau * log mean_j exp(cos_ij / tau)`` for the raw query ("does this
      step look like *some* part of the query"), the same for the query centred by its own
      mean (its per-video component cancels too, leaving how the action moves), and the
      plain mean for the raw query (the frame-level baseline's score);
    * each of the three is also given standardised over the valid reference steps.

    Output [B, Lr, 6], zero at padded steps. ``temperature`` = tau.
    """

    def __init__(self, temperature: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        if not self.temperature > 0:
            raise ValueError(f"SimilarityFeatures: temperature must be > 0, got {temperature!r}")

    def call(self, reference, query, reference_lengths, query_lengths):
        ref_mask = _float_mask(reference_lengths, reference)  # [B, Lr, 1]
        query_valid = sequence_mask(query_lengths, ops.shape(query)[1])  # [B, Lq]
        query_mask = ops.expand_dims(ops.cast(query_valid, query.dtype), -1)  # [B, Lq, 1]
        ref_count = ops.maximum(ops.sum(ref_mask, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
        query_count = ops.maximum(ops.sum(query_mask, axis=1, keepdims=True), 1.0)  # [B, 1, 1]

        centered = (reference - ops.sum(reference * ref_mask, axis=1, keepdims=True) / ref_count) * ref_mask
        query = query * query_mask
        query_centered = (query - ops.sum(query, axis=1, keepdims=True) / query_count) * query_mask
        r = _unit(centered)
        column_mask = query_valid[:, None, :]  # [B, 1, Lq]
        log_count = ops.log(query_count[:, :, 0])  # [B, 1]
        features = []
        for q in (_unit(query), _unit(query_centered)):
            cosine = ops.matmul(r, ops.transpose(q, (0, 2, 1)))  # [B, Lr, Lq]
            logits = ops.where(column_mask, cosine / self.temperature, _NEG_INF)
            features.append(self.temperature * (ops.logsumexp(logits, axis=-1) - log_count))
            if len(features) == 1:
                features.append(ops.sum(ops.where(column_mask, cosine, 0.0), axis=-1) / query_count[:, :, 0])
        raw = ops.stack(features, axis=-1)  # [B, Lr, 3]
        mean = ops.sum(raw * ref_mask, axis=1, keepdims=True) / ref_count
        variance = ops.sum(ops.square(raw - mean) * ref_mask, axis=1, keepdims=True) / ref_count
        standardized = (raw - mean) / ops.sqrt(variance + 1e-6)
        return ops.concatenate([standardized, raw], axis=-1) * ref_mask

    def compute_output_shape(self, reference_shape, query_shape=None, reference_lengths_shape=None,
                             query_lengths_shape=None):
        return tuple(reference_shape[:2]) + (6,)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


@keras.saving.register_keras_serializable(package="vreloc")
class EmptyFeatures(keras.layers.Layer):
    """A [B, L, 0] placeholder: the "self_attention" output when the ablation switches it off.

    Keeps the model's output dict the same shape of contract in every Table 2 configuration.
    """

    def call(self, sequence):
        return ops.zeros((ops.shape(sequence)[0], ops.shape(sequence)[1], 0), dtype=sequence.dtype)

    def compute_output_shape(self, sequence_shape):
        return tuple(sequence_shape[:2]) + (0,)
