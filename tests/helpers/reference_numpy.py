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
    """Eq. 19 for one example p [L, 4] (valid steps only), labels as in Feng et al."""
    start, end = int(groundtruth[0]), int(groundtruth[1])
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
