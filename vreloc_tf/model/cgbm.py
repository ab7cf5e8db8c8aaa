"""CGBM: the cross-gated bilinear matching model of Feng et al. (ECCV 2018) as Keras layers.

The paper's Table 4 compares against it; this is Feng et al.'s own TF1 code
(fengyang0317/video_reloc, ``match.py`` and ``match_cell_wrapper.py``) rewritten in
``keras.ops``, so that the same commands train, evaluate, export and serve it
(``model.architecture: cgbm``; ``configs/cgbm.yaml`` names the source of every value).

    Q, R --shared video LSTM (mem_dim)--> H^q, H^r --dropout-->                       (Sec. 3.1)
    for every reference step t, forward and backward (CrossGatedMatching, Sec. 3.2):
        attention over the valid query steps from (h^r_t, previous matching state) -> q_t
        cross gating: h^r_t * sigmoid(W q_t + b), q_t * sigmoid(W' h^r_t + b')   (CrossGating)
        factorized bilinear matching of the two gated vectors                     (BilinearMatching)
        one LSTM step (att_dim) on the matching result
    [forward, backward] --dropout--> localization LSTM (att_dim) --> Dense(4) --> softmax  (Sec. 3.3)

What is the same as Feng's code and what is not:

* Weight sharing as in the code: one video LSTM for query and reference (the same cell
  object); the attention, gates and bilinear projection are shared by the two directions
  (the backward ``MatchCellWrapper`` is built with ``reuse=tf.AUTO_REUSE`` in the forward
  one's variable scope), the two matching LSTMs are not (cells ``forward`` / ``backward``);
  the bilinear matching projects both of its inputs with ONE fully connected layer (scope
  ``bi/fc`` with ``reuse=tf.AUTO_REUSE``), so both must have the same width.
* The matching LSTMs are TF1's ``BasicLSTMCell`` exactly (one glorot-uniform kernel on
  [input, h], zero bias, gate order i, j, f, o, forget bias +1.0). The video and
  localization LSTMs are ``keras.layers.LSTM``: the same function and the same forget-bias
  start (Keras' ``unit_forget_bias`` initialises the bias to 1 where TF1 adds a constant 1
  to a zero bias), but Keras' initialisers (glorot kernel, orthogonal recurrent kernel).
* Feng's attention score layer ``fc_g`` has a bias; it adds the same number to every
  query step's logit, which the softmax over the query steps removes exactly (its gradient
  is zero), so it is left out: the same numbers.
* Padding: Feng's ``dynamic_rnn(sequence_length=...)`` and ``reverse_sequence``; here the
  sequences are masked (vreloc_tf.model.layers' rules): padded steps carry the state unchanged
  and give zero outputs, the backward direction starts at each example's last valid step.

Outputs of the model (the contract of vreloc_tf.model.functional): ``probabilities`` [B, Lr, 4];
``attention`` [B, Lr, 2] = the reference-side cross gate sigmoid(W q_t + b) averaged over
its channels, in the forward and the backward direction: how far the query attended at
step t opens step t (zero at padded steps); ``self_attention`` [B, Lr, 0], a placeholder
(CGBM has no self-attention).

Loss and decoding (vreloc_tf.model.losses, vreloc_tf.model.decoding) are selectable for either model:
``loss.full_losses: feng`` is Feng's Eq. 10 as coded (the weights and labels of our Eq. 19,
but normalised by all valid steps of the batch, not per example), ``decode.rule: feng`` his
decoding loop (Eq. 20's search, but the mean of log p3 leaves out the end step).
"""
from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from vreloc_tf.model.layers import _NEG_INF, sequence_mask


@keras.saving.register_keras_serializable(package="vreloc")
class CrossGating(keras.layers.Layer):
    """Cross gating (Feng et al. 2018, Sec. 3.2; ``gate_q`` / ``gate_r`` in match_cell_wrapper.py).

    reference' = reference * sigmoid(query @ W_r + b_r)   (the query gates the reference)
    query'     = query * sigmoid(reference @ W_q + b_q)   (the reference gates the query)

    Works on any leading shape ([..., D_r] and [..., D_q] with the same leading dims).
    """

    def build(self, reference_shape, query_shape=None):
        dr = int(reference_shape[-1])
        dq = int((query_shape or reference_shape)[-1])
        self.reference_gate_kernel = self.add_weight(name="reference_gate_kernel", shape=(dq, dr),
                                                     initializer="glorot_uniform")
        self.reference_gate_bias = self.add_weight(name="reference_gate_bias", shape=(dr,), initializer="zeros")
        self.query_gate_kernel = self.add_weight(name="query_gate_kernel", shape=(dr, dq),
                                                 initializer="glorot_uniform")
        self.query_gate_bias = self.add_weight(name="query_gate_bias", shape=(dq,), initializer="zeros")
        self.built = True

    def reference_gate(self, query):
        """sigmoid(query @ W_r + b_r): the gate on the reference (Feng's ``gate_r``, from the query)."""
        return ops.sigmoid(ops.matmul(query, self.reference_gate_kernel) + self.reference_gate_bias)

    def query_gate(self, reference):
        """sigmoid(reference @ W_q + b_q): the gate on the query (Feng's ``gate_q``, from the reference)."""
        return ops.sigmoid(ops.matmul(reference, self.query_gate_kernel) + self.query_gate_bias)

    def call(self, reference, query):
        return reference * self.reference_gate(query), query * self.query_gate(reference)

    def compute_output_shape(self, reference_shape, query_shape=None):
        return tuple(reference_shape), tuple(query_shape or reference_shape)


@keras.saving.register_keras_serializable(package="vreloc")
class BilinearMatching(keras.layers.Layer):
    """Factorized bilinear matching (Feng et al. 2018, Sec. 3.2; ``bilinear`` in match_cell_wrapper.py).

    out_i = sum_{j<k} (x W + b)_{i k + j} (y W + b)_{i k + j}, i < units: one projection W, b
    (D -> units * k) shared by both sides, as Feng's ``bi/fc`` scope with ``reuse=AUTO_REUSE``;
    x and y therefore have the same width D. ``units`` None = D (Feng's ``num_outputs=None``).
    """

    def __init__(self, units: Optional[int] = None, factors: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.units = None if units is None else int(units)
        self.factors = int(factors)
        if self.factors < 1 or (self.units is not None and self.units < 1):
            raise ValueError(f"BilinearMatching: units and factors must be >= 1, got {units!r} and {factors!r}")

    def build(self, x_shape, y_shape=None):
        dim = int(x_shape[-1])
        if y_shape is not None and int(y_shape[-1]) != dim:
            raise ValueError(f"BilinearMatching: both inputs go through one shared projection, so they need the "
                             f"same width; got {dim} and {int(y_shape[-1])}")
        self.output_dim = self.units or dim
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.output_dim * self.factors),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.output_dim * self.factors,), initializer="zeros")
        self.built = True

    def call(self, x, y):
        return self.match(x, y)

    def match(self, x, y):
        """The matching itself (what ``call`` does; callable inside a loop without a layer call)."""
        product = (ops.matmul(x, self.kernel) + self.bias) * (ops.matmul(y, self.kernel) + self.bias)
        shape = ops.shape(product)
        leading = [shape[i] for i in range(len(product.shape) - 1)]
        return ops.sum(ops.reshape(product, leading + [self.output_dim, self.factors]), axis=-1)

    def compute_output_shape(self, x_shape, y_shape=None):
        return tuple(x_shape[:-1]) + (self.units or int(x_shape[-1]),)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "factors": self.factors})
        return config


@keras.saving.register_keras_serializable(package="vreloc")
class CrossGatedMatching(keras.layers.Layer):
    """Sec. 3.2: the matching of every reference step with the query, forward and backward.

    At reference step t, with (c, h) the state of this direction's matching LSTM (zero at
    the first valid step):

        e_j   = w^T tanh(H^q_j W^q + [h^r_t, h] W^p + b^p)   over the valid query steps j
        q_t   = sum_j softmax(e)_j H^q_j                      (Feng's fc_hq, fc_hp, fc_g)
        r', q' = CrossGating(h^r_t, q_t)
        m_t   = BilinearMatching(r', q')
        (c, h) = BasicLSTMCell(m_t, (c, h))                    (units = att_dim)

    The backward direction runs the same on the reversed valid steps with its own LSTM.
    Inputs: reference [B, Lr, D], query [B, Lq, D] (the video LSTM's outputs, equal widths),
    their lengths [B]. Returns (matching [B, Lr, 2 * units] = [forward, backward],
    gates [B, Lr, 2] = the reference gate's channel mean per direction); both zero at
    padded steps. Both directions run in one ``ops.scan`` over the reference steps.
    """

    def __init__(self, units: int = 128, factors: int = 8, forget_bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.factors = int(factors)
        self.forget_bias = float(forget_bias)
        if self.units < 1:
            raise ValueError(f"CrossGatedMatching: units must be >= 1, got {units!r}")
        self.gating = CrossGating(name="cross_gating")
        self.bilinear = BilinearMatching(None, self.factors, name="bilinear")
        # Its inputs come from LSTMs called with a Keras mask; padding is read from the lengths
        # here, so the mask is accepted and consumed (compute_mask: None), not warned about.
        self.supports_masking = True

    def build(self, reference_shape, query_shape=None, reference_lengths_shape=None, query_lengths_shape=None):
        dr = int(reference_shape[-1])
        dq = int((query_shape or reference_shape)[-1])
        u = self.units
        self.query_kernel = self.add_weight(name="query_kernel", shape=(dq, u), initializer="glorot_uniform")
        self.state_kernel = self.add_weight(name="state_kernel", shape=(dr + u, u), initializer="glorot_uniform")
        self.state_bias = self.add_weight(name="state_bias", shape=(u,), initializer="zeros")
        self.score_kernel = self.add_weight(name="score_kernel", shape=(u, 1), initializer="glorot_uniform")
        self.gating.build((None, dr), (None, dq))
        self.bilinear.build((None, dr), (None, dq))
        matched = dr  # BilinearMatching(units=None) keeps the reference width
        self.forward_kernel = self.add_weight(name="forward_kernel", shape=(matched + u, 4 * u),
                                              initializer="glorot_uniform")
        self.forward_bias = self.add_weight(name="forward_bias", shape=(4 * u,), initializer="zeros")
        self.backward_kernel = self.add_weight(name="backward_kernel", shape=(matched + u, 4 * u),
                                               initializer="glorot_uniform")
        self.backward_bias = self.add_weight(name="backward_bias", shape=(4 * u,), initializer="zeros")
        self.built = True

    def call(self, reference, query, reference_lengths, query_lengths):
        u, dr = self.units, int(reference.shape[-1])
        ref_mask = ops.cast(sequence_mask(reference_lengths, ops.shape(reference)[1]), reference.dtype)  # [B, Lr]
        query_valid = sequence_mask(query_lengths, ops.shape(query)[1])  # [B, Lq]
        reference = reference * ref_mask[:, :, None]
        query = query * ops.cast(query_valid, query.dtype)[:, :, None]

        # What does not depend on the recurrent state is computed once, for every step.
        query_keys = ops.matmul(query, self.query_kernel)[None]  # [1, B, Lq, u]   fc_hq
        reference_keys = ops.matmul(reference, self.state_kernel[:dr]) + self.state_bias  # [B, Lr, u]  fc_hp (input half)
        query_gates = self.gating.query_gate(reference)  # [B, Lr, Dq]  gate_q
        state_kernel = self.state_kernel[dr:]  # [u, u]  fc_hp (state half)
        logit_bias = ops.where(query_valid, 0.0, _NEG_INF)[None]  # [1, B, Lq]
        kernels = ops.concatenate([self.forward_kernel[None], self.backward_kernel[None]], axis=0)  # [2, Dr + u, 4u]
        biases = ops.concatenate([self.forward_bias[None], self.backward_bias[None]], axis=0)[:, None, :]  # [2, 1, 4u]

        def directions(x):
            """[B, Lr, F] -> [Lr, 2, B, F]: time-major, forward and reversed (backward) side by side."""
            return ops.moveaxis(ops.stack([x, ops.flip(x, axis=1)], axis=0), 2, 0)

        # One stacked input (Keras' TensorFlow scan needs a single input when Lr is not static).
        widths = (dr, u, int(query.shape[-1]), 1)
        steps = directions(ops.concatenate([reference, reference_keys, query_gates, ref_mask[:, :, None]], axis=-1))

        def step(carry, inputs):
            h, c, _ = carry  # [2, B, u] each
            r, r_key, q_gate, valid = ops.split(inputs, [sum(widths[:1]), sum(widths[:2]), sum(widths[:3])],
                                                axis=-1)  # [2, B, Dr], [2, B, u], [2, B, Dq], [2, B, 1]
            scores = ops.tanh(query_keys + (r_key + ops.matmul(h, state_kernel))[:, :, None, :])  # [2, B, Lq, u]
            logits = ops.squeeze(ops.matmul(scores, self.score_kernel), axis=-1) + logit_bias  # [2, B, Lq]
            weights = ops.softmax(logits, axis=-1)
            attended = ops.squeeze(ops.matmul(weights[:, :, None, :], query[None]), axis=2)  # [2, B, Dq]
            r_gate = self.gating.reference_gate(attended)  # [2, B, Dr]
            matched = self.bilinear.match(r * r_gate, attended * q_gate)  # [2, B, Dr]
            z = ops.matmul(ops.concatenate([matched, h], axis=-1), kernels) + biases  # [2, B, 4u]
            i, j, f, o = ops.split(z, 4, axis=-1)  # BasicLSTMCell's gate order
            new_c = c * ops.sigmoid(f + self.forget_bias) + ops.sigmoid(i) * ops.tanh(j)
            new_h = ops.tanh(new_c) * ops.sigmoid(o)
            keep = ops.greater(valid, 0.0)  # padded steps carry the state unchanged
            new_c = ops.where(keep, new_c, c)
            new_h = ops.where(keep, new_h, h)
            gate = ops.mean(r_gate, axis=-1, keepdims=True) * valid
            return (new_h, new_c, gate), (new_h * valid, new_c, gate)

        batch, length = ops.shape(reference)[0], ops.shape(reference)[1]
        zeros = ops.zeros((2, batch, u), dtype=reference.dtype)
        init = (zeros, zeros, ops.zeros((2, batch, 1), dtype=reference.dtype))
        # (Keras' TensorFlow scan stacks outputs shaped like the carry, hence the carry's third slot.)
        _, (outputs, _, gates) = ops.scan(step, init, steps)  # [Lr, 2, B, ...]
        outputs = ops.moveaxis(ops.reshape(outputs, (length, 2, batch, u)), 0, 2)  # [2, B, Lr, u]
        gates = ops.moveaxis(ops.reshape(gates, (length, 2, batch, 1)), 0, 2)  # [2, B, Lr, 1]
        matching = ops.concatenate([outputs[0], ops.flip(outputs[1], axis=1)], axis=-1)
        gate_means = ops.concatenate([gates[0], ops.flip(gates[1], axis=1)], axis=-1)
        return matching, gate_means

    def compute_mask(self, *args, **kwargs):
        return None

    def compute_output_spec(self, reference, query=None, reference_lengths=None, query_lengths=None):
        batch, steps = reference.shape[0], reference.shape[1]
        return (keras.KerasTensor((batch, steps, 2 * self.units), dtype=self.compute_dtype),
                keras.KerasTensor((batch, steps, 2), dtype=self.compute_dtype))

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "factors": self.factors, "forget_bias": self.forget_bias})
        return config
