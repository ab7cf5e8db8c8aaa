"""Figures people would rather see than numbers: the paper's Figure 4 and probability timelines.

Pure plotting (NumPy in, PNG out) so that `vreloc visualize`, `vreloc locate --plot` and the
pipeline share one drawing of each figure.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

PROBABILITY_NAMES = ("start", "end", "action", "background")
PROBABILITY_COLORS = ("tab:green", "tab:red", "tab:blue", "tab:gray")


def head_group_labels(groups: Sequence) -> List[Tuple[int, int, str]]:
    """[(first row, last row exclusive, label), ...] from the model's (count, label) groups of the
    attention output (``vreloc_tf.model.functional.attention_groups``), in their order."""
    out, start = [], 0
    for count, label in groups:
        out.append((start, start + count, label))
        start += count
    return out


def _agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_probabilities(ax, probabilities: np.ndarray, predicted: Optional[Tuple[int, int]] = None,
                       groundtruth: Optional[Tuple[int, int]] = None, seconds_per_step: Optional[float] = None,
                       names: Optional[Sequence[str]] = None):
    """Per-step curves over the reference timeline (default: the four probabilities), segments shaded.

    Step i covers [i, i+1) in index units (drawn centred on i) or [i*s, (i+1)*s) seconds.
    """
    curves = np.asarray(probabilities)
    steps = np.arange(curves.shape[0])
    if seconds_per_step:
        x, edge = (steps + 0.5) * seconds_per_step, (lambda i: i * seconds_per_step)
    else:
        x, edge = steps.astype(float), (lambda i: i - 0.5)
    if names is None:
        names = [f"p{j + 1} {n}" for j, n in enumerate(PROBABILITY_NAMES)]
    for j, name in enumerate(names):
        color = PROBABILITY_COLORS[j] if len(names) == 4 else None
        ax.plot(x, curves[:, j], label=name, color=color, lw=1.4)
    if groundtruth is not None and groundtruth[0] >= 0:
        ax.axvspan(edge(groundtruth[0]), edge(groundtruth[1]), color="red", alpha=0.12, label="ground truth")
    if predicted is not None:
        ax.axvspan(edge(predicted[0]), edge(predicted[1]), ymin=0.0, ymax=0.06, color="black", alpha=0.8,
                   label="prediction")
        for i in predicted:
            ax.axvline(edge(i), color="black", ls="--", lw=1)
    if len(names) == 4:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
    ax.set_xlim(edge(0), edge(curves.shape[0]))
    ax.set_xlabel("reference time (s)" if seconds_per_step else "reference step (feature index)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=6, frameon=False)


def figure4(attention: np.ndarray, probabilities: np.ndarray, groups: Sequence, out_path: str,
            groundtruth: Optional[Tuple[int, int]] = None, predicted: Optional[Tuple[int, int]] = None,
            title: str = "", row_label: str = "multiscale attention head") -> str:
    """Heads × reference steps heat map (like the paper's Figure 4) above the probability curves.

    ``attention``: [Lr, k] for one pair (valid steps only); ``probabilities``: [Lr, 4]; ``groups``:
    (count, label) rows of the attention output (``vreloc_tf.model.functional.attention_groups``: heads grouped by
    kernel/dilation, or CGBM's forward and backward gates), ``row_label`` what a row is.
    The ground-truth segment is framed in red.
    """
    from matplotlib.patches import Rectangle

    plt = _agg()
    attention = np.asarray(attention, dtype=np.float32)
    lr, k = attention.shape
    fig, axes = plt.subplots(2, 2, figsize=(max(8.0, min(16.0, lr / 8)), 7.5),
                             gridspec_kw={"height_ratios": [3, 2], "width_ratios": [40, 1], "wspace": 0.03})
    (ax_map, ax_cbar), (ax_p, ax_empty) = axes
    ax_empty.axis("off")
    ax_p.sharex(ax_map)
    im = ax_map.imshow(attention.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                       extent=(-0.5, lr - 0.5, -0.5, k - 0.5))
    groups = head_group_labels(groups)
    for first, last, _ in groups[1:]:
        ax_map.axhline(first - 0.5, color="white", lw=0.8)
    ax_map.set_yticks([(a + b - 1) / 2 for a, b, _ in groups])
    ax_map.set_yticklabels([(f"heads {a + 1}-{b}\n{name}" if b - a > 1 else name) for a, b, name in groups],
                           fontsize=8)
    ax_map.set_ylabel(row_label)
    if groundtruth is not None and groundtruth[0] >= 0:
        g0, g1 = groundtruth
        ax_map.add_patch(Rectangle((g0 - 0.5, -0.5), g1 - g0, k, fill=False, edgecolor="red", lw=2.2,
                                   label="ground truth"))
        ax_map.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, cax=ax_cbar, label="attention score")
    ax_map.tick_params(labelbottom=False)
    plot_probabilities(ax_p, np.asarray(probabilities), predicted=predicted, groundtruth=groundtruth)
    ax_map.set_title(title or f"{row_label} over the reference (cf. paper Figure 4)")
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path


def timeline(curves: np.ndarray, out_path: str, predicted: Optional[Tuple[int, int]] = None,
             seconds_per_step: Optional[float] = None, title: str = "", names: Optional[Sequence[str]] = None,
             ylabel: Optional[str] = None) -> str:
    """Per-step curves over the reference timeline (for `vreloc locate --plot`)."""
    plt = _agg()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    plot_probabilities(ax, np.asarray(curves), predicted=predicted, seconds_per_step=seconds_per_step, names=names)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title or "Where the query matches the reference")
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path
