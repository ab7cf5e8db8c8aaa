"""Plain NumPy references for the model's math, written the slow, obvious way.

Every function works on ONE example's valid steps (no padding, no batch), in float64,
following the paper's equations literally (one head at a time, loops over (s, e)), so
that agreement with the vectorized, padded, batched keras.ops code means something.
"""
from __future__ import annotations

import math

import numpy as np


def conv_same(x, kernel, bias, dilation=1):
    """'same' 1-D convolution: out[i] = b + sum_t x[i - left + t*d] W[t], zeros outside [0, L)."""
    k = kernel.shape[0]
    left = ((k - 1) * dilation) // 2
    out = np.tile(np.asarray(bias, np.float64), (x.shape[0], 1))
    for i in range(x.shape[0]):
        for t in range(k):
            j = i - left + t * dilation
            if 0 <= j < x.shape[0]:
                out[i] += x[j] @ kernel[t]
    return out


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def encoder(x, kernel, bias, gamma, beta, eps):
    """Eq. 7 on one example's valid steps."""
    return layer_norm(conv_same(x, kernel, bias), gamma, beta, eps)


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def multiscale_attention(reference, query, groups, ref_kernels, ref_biases, query_kernels, query_biases):
    """Eqs. 4-6 one head at a time: returns [Lr, k].

    ``groups`` rows are (heads, kernel_size, dilation, filters); head h of a group uses output
    channels [h*filters, (h+1)*filters) of the group's kernel.
    """
    columns = []
    for g, (heads, _k, dilation, filters) in enumerate(groups):
        for h in range(heads):
            sl = slice(h * filters, (h + 1) * filters)
            r = conv_same(reference, ref_kernels[g][:, :, sl], ref_biases[g][sl], dilation)  # [Lr, f]
            q = conv_same(query, query_kernels[g][:, :, sl], query_biases[g][sl], dilation)  # [Lq, f]
            attention_map = r @ q.T / math.sqrt(filters)  # [Lr, Lq]
            columns.append(softmax(attention_map, axis=0).mean(axis=1))  # softmax over Lr, mean over Lq
    return np.stack(columns, axis=1)


def self_attention(x, qkv_kernel, heads, key_dim):
    """Eqs. 1-3 one head at a time: returns [L, heads*key_dim]."""
    w = qkv_kernel.reshape(x.shape[1], 3, heads, key_dim)
    outs = []
    for h in range(heads):
        q, k, v = x @ w[:, 0, h], x @ w[:, 1, h], x @ w[:, 2, h]
        outs.append(softmax(q @ k.T / math.sqrt(key_dim), axis=1) @ v)
    return np.concatenate(outs, axis=1)


def weighted_cross_entropy(p, groundtruth, boundary_weight, eps=1e-7):
    """Eq. 19 for one example p [L, 4] (valid steps only), labels as in Feng et al.; an empty
    segment (end <= start, a negative pair) labels every step background."""
    start, end = int(groundtruth[0]), int(groundtruth[1])
    if end <= start:
        return float(-np.mean(np.log(np.clip(p[:, 3], eps, 1.0))))
    total = 0.0
    for i in range(p.shape[0]):
        y = np.array([i == start, i == end - 1, start <= i < end, not (start <= i < end)], np.float64)
        y = y / y.sum()
        w = boundary_weight if (i == start or i == end - 1) else 1.0
        total += -w * float(np.sum(y * np.log(np.clip(p[i], eps, 1.0))))
    return total / p.shape[0]


def cosine(a, b, eps=1e-7):
    return float(a @ b / (max(np.linalg.norm(a), eps) * max(np.linalg.norm(b), eps)))


def coattention_loss(query, reference, p, alpha, action_mask=None, eps=1e-7):
    """Eqs. 13-18 for one example (valid steps only); masks multiply p3 and p4 when given."""
    qa = query.mean(axis=0)
    p3, p4 = p[:, 2].astype(np.float64), p[:, 3].astype(np.float64)
    if action_mask is not None:
        p3 = p3 * action_mask
        p4 = p4 * (1.0 - action_mask)
    g3 = p3 / max(p3.sum(), eps)
    g4 = p4 / max(p4.sum(), eps)
    ra, rb = g3 @ reference, g4 @ reference
    d_pos = cosine(qa, ra, eps)
    d_neg = alpha * cosine(qa, rb, eps) + (1 - alpha) * cosine(ra, rb, eps)
    return math.exp(-d_pos) / (math.exp(-d_pos) + math.exp(-d_neg))


def decode_full_bruteforce(p, max_length=None):
    """Eq. 20 over every (s, e), s <= e, e - s + 1 <= max_length: (s, e_exclusive, score)."""
    p = np.asarray(p, np.float64)
    best, best_s, best_e = -1.0, 0, 0
    for s in range(p.shape[0]):
        for e in range(s, p.shape[0]):
            if max_length is not None and e - s + 1 > max_length:
                break
            score = p[s, 0] * p[e, 1] * np.prod(p[s:e + 1, 2]) ** (1.0 / (e - s + 1))
            if score > best:  # strict: ties keep the earliest (s, e)
                best, best_s, best_e = score, s, e + 1
    return best_s, best_e, (best if p.shape[0] else 0.0)


def decode_weak_bruteforce(p, max_length=None):
    """Longest run of p3 strictly above mean(p3); earliest on ties; runs capped at max_length."""
    p3 = np.asarray(p, np.float64)[:, 2]
    if p3.size == 0:
        return 0, 0, 0.0
    threshold = p3.mean()
    runs, i = [], 0
    while i < p3.size:
        if p3[i] > threshold:
            j = i
            while j < p3.size and p3[j] > threshold:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    if not runs:
        s, e = 0, p3.size
    else:
        capped = [(s, min(e, s + max_length) if max_length else e) for s, e in runs]
        s, e = max(capped, key=lambda se: (se[1] - se[0], -se[0]))
    return s, e, float(p3[s:e].mean())


def similarity_features(reference, query, temperature):
    """One unpadded example [L, D], [Lq, D] -> [L, 6] (layers.SimilarityFeatures), written plainly."""
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)

    r = unit(reference - reference.mean(axis=0))
    raw = []
    for q in (query, query - query.mean(axis=0)):
        cos = r @ unit(q).T  # [L, Lq]
        soft_max = np.array([temperature * np.log(np.mean(np.exp(row / temperature))) for row in cos])
        raw.append(soft_max)
        if len(raw) == 1:
            raw.append(cos.mean(axis=1))
    raw = np.stack(raw, axis=1)  # [L, 3]: soft max raw query, mean raw query, soft max centred query
    standardized = (raw - raw.mean(axis=0)) / np.sqrt(raw.var(axis=0) + 1e-6)
    return np.concatenate([standardized, raw], axis=1)


# --- Feng et al.'s CGBM (vreloc_tf.model.cgbm), written after their TF1 code one step at a time ----------

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cross_gating(reference, query, w_r, b_r, w_q, b_q):
    """One (reference step, query vector) pair: (r * sigmoid(q W_r + b_r), q * sigmoid(r W_q + b_q))."""
    return reference * sigmoid(query @ w_r + b_r), query * sigmoid(reference @ w_q + b_q)


def bilinear_matching(x, y, kernel, bias, factors):
    """One pair of vectors: out_i = sum_j (xW + b)[i*k + j] * (yW + b)[i*k + j], one W for both sides."""
    px, py = x @ kernel + bias, y @ kernel + bias
    units = kernel.shape[1] // factors
    return np.array([sum(px[i * factors + j] * py[i * factors + j] for j in range(factors)) for i in range(units)])


def basic_lstm_cell(x, h, c, kernel, bias, forget_bias=1.0):
    """TF1's BasicLSTMCell: [x, h] W + b split into i, j, f, o."""
    i, j, f, o = np.split(np.concatenate([x, h]) @ kernel + bias, 4)
    c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    return np.tanh(c) * sigmoid(o), c


def cgbm_matching(reference, query, w):
    """CrossGatedMatching on ONE unpadded example (reference [Lr, D], query [Lq, D]), as Feng's
    MatchCellWrapper runs in dynamic_rnn: forward over the steps, backward over the reversed steps
    (shared attention/gates/bilinear, own LSTMs). ``w``: the layer's weights by name.
    Returns ([Lr, 2u] = [forward, backward], [Lr, 2] reference-gate channel means)."""
    dr = reference.shape[1]
    u = w["query_kernel"].shape[1]
    outputs, gates = np.zeros((reference.shape[0], 2 * u)), np.zeros((reference.shape[0], 2))
    for direction, (kernel, bias) in enumerate([(w["forward_kernel"], w["forward_bias"]),
                                                (w["backward_kernel"], w["backward_bias"])]):
        order = range(reference.shape[0]) if direction == 0 else reversed(range(reference.shape[0]))
        h, c = np.zeros(u), np.zeros(u)
        for t in order:
            r = reference[t]
            hq = query @ w["query_kernel"]  # fc_hq (no bias)
            hp = np.concatenate([r, h]) @ w["state_kernel"] + w["state_bias"]  # fc_hp
            g = np.tanh(hq + hp) @ w["score_kernel"][:, 0]  # fc_g (its bias cancels in the softmax)
            alpha = softmax(g, axis=0)
            attended = alpha @ query
            gated_r, gated_q = cross_gating(r, attended, w["reference_gate_kernel"], w["reference_gate_bias"],
                                            w["query_gate_kernel"], w["query_gate_bias"])
            x = bilinear_matching(gated_r, gated_q, w["kernel"], w["bias"], w["kernel"].shape[1] // dr)
            h, c = basic_lstm_cell(x, h, c, kernel, bias)
            outputs[t, direction * u:(direction + 1) * u] = h
            gates[t, direction] = sigmoid(attended @ w["reference_gate_kernel"] + w["reference_gate_bias"]).mean()
    return outputs, gates


def feng_decode_loop(p, max_length=64):
    """Feng et al.'s decoding loop (video_reloc match.py map_body), literally: for each length
    it = 0 .. min(L, max_length) - 1 the best start (first maximum), then the best length (first
    maximum). Log scores; the mean of log p3 covers [s, s + it - 1] (the end step left out) for it > 0.
    Returns (start, end exclusive, exp(score))."""
    logp = np.log(np.maximum(np.asarray(p, np.float64), 1e-30))
    n = logp.shape[0]
    if n == 0:
        return 0, 0, 0.0
    limit = n if max_length is None else min(n, max_length)
    best_idx, best_val = [], []
    for it in range(limit):
        total = []
        for s in range(n - it):
            inside = logp[s, 2] if it == 0 else np.mean([logp[s + j, 2] for j in range(it)])
            total.append(logp[s, 0] + logp[s + it, 1] + inside)
        best_idx.append(int(np.argmax(total)))
        best_val.append(total[best_idx[-1]])
    it = int(np.argmax(best_val))
    return best_idx[it], best_idx[it] + it + 1, float(np.exp(best_val[it]))


def feng_loss(p, groundtruth, lengths, boundary_weight=10.0, eps=1e-7):
    """Feng et al.'s Eq. 10 over a batch (match.py): the weighted per-step CE of every valid step of
    every example, averaged over all of them at once."""
    terms = []
    for b in range(len(lengths)):
        start, end = int(groundtruth[b][0]), int(groundtruth[b][1])
        for i in range(int(lengths[b])):
            y = np.array([i == start, i == end - 1, start <= i < end, not (start <= i < end)], np.float64)
            w = boundary_weight if y[0] + y[1] > 0.9 else 1.0
            y = y / y.sum()
            terms.append(-w * float(np.sum(y * np.log(np.clip(p[b][i], eps, 1.0)))))
    return float(np.mean(terms))
