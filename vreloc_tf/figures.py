"""Figures people would rather see than numbers: the paper's Figure 4 and probability timelines.

Pure plotting (NumPy in, PNG out) so that `vreloc visualize`, `vreloc locate --plot` and the
pipeline share one drawing of each figure.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

PROBABILITY_NAMES = ("start", "end", "action", "background")
PROBABILITY_COLORS = ("tab:green", "tab:red", "tab:blue", "tab:gray")


def head_group_labels(head_groups: Sequence) -> List[Tuple[int, int, str]]:
    """[(first head, last head exclusive, 'k=3 d=2'), ...] from the config's HeadGroup list."""
    out, start = [], 0
    for g in head_groups:
        out.append((start, start + g.heads, f"k={g.kernel_size} d={g.dilation}"))
        start += g.heads
    return out


def _agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_probabilities(ax, probabilities: np.ndarray, predicted: Optional[Tuple[int, int]] = None,
                       groundtruth: Optional[Tuple[int, int]] = None, seconds_per_step: Optional[float] = None):
    """The four per-step probability curves over the reference timeline, with segments shaded."""
    steps = np.arange(probabilities.shape[0])
    x = steps * seconds_per_step if seconds_per_step else steps
    for j, (name, color) in enumerate(zip(PROBABILITY_NAMES, PROBABILITY_COLORS)):
        ax.plot(x, probabilities[:, j], label=f"p{j + 1} {name}", color=color, lw=1.4)
    scale = seconds_per_step or 1.0
    # A segment [s, e) covers steps s..e-1, drawn as cells centred on the steps.
    if groundtruth is not None and groundtruth[0] >= 0:
        ax.axvspan((groundtruth[0] - 0.5) * scale, (groundtruth[1] - 0.5) * scale, color="red", alpha=0.12,
                   label="ground truth")
    if predicted is not None:
        ax.axvspan((predicted[0] - 0.5) * scale, (predicted[1] - 0.5) * scale, ymin=0.0, ymax=0.06,
                   color="black", alpha=0.8, label="prediction")
        for edge in predicted:
            ax.axvline((edge - 0.5) * scale, color="black", ls="--", lw=1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(x[0] - 0.5 * scale, x[-1] + 0.5 * scale)
    ax.set_xlabel("reference time (s)" if seconds_per_step else "reference step (feature index)")
    ax.set_ylabel("probability")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=6, frameon=False)


def figure4(attention: np.ndarray, probabilities: np.ndarray, head_groups: Sequence, out_path: str,
            groundtruth: Optional[Tuple[int, int]] = None, predicted: Optional[Tuple[int, int]] = None,
            title: str = "") -> str:
    """Heads × reference steps heat map (like the paper's Figure 4) above the probability curves.

    ``attention``: [Lr, k] for one pair (valid steps only); ``probabilities``: [Lr, 4].
    The ground-truth segment is framed in red; heads are grouped by kernel/dilation.
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
    groups = head_group_labels(head_groups)
    for first, last, _ in groups[1:]:
        ax_map.axhline(first - 0.5, color="white", lw=0.8)
    ax_map.set_yticks([(a + b - 1) / 2 for a, b, _ in groups])
    ax_map.set_yticklabels([f"heads {a + 1}-{b}\n{name}" for a, b, name in groups], fontsize=8)
    ax_map.set_ylabel("multiscale attention head")
    if groundtruth is not None and groundtruth[0] >= 0:
        g0, g1 = groundtruth
        ax_map.add_patch(Rectangle((g0 - 0.5, -0.5), g1 - g0, k, fill=False, edgecolor="red", lw=2.2,
                                   label="ground truth"))
        ax_map.legend(loc="upper right", fontsize=8)
    fig.colorbar(im, cax=ax_cbar, label="attention score")
    ax_map.tick_params(labelbottom=False)
    plot_probabilities(ax_p, np.asarray(probabilities), predicted=predicted, groundtruth=groundtruth)
    ax_map.set_title(title or "Multiscale attention heads over the reference (cf. paper Figure 4)")
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path


def timeline(probabilities: np.ndarray, out_path: str, predicted: Optional[Tuple[int, int]] = None,
             seconds_per_step: Optional[float] = None, title: str = "") -> str:
    """Per-step probabilities over the reference timeline (for `vreloc locate --plot`)."""
    plt = _agg()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    plot_probabilities(ax, np.asarray(probabilities), predicted=predicted, seconds_per_step=seconds_per_step)
    ax.set_title(title or "Where the query matches the reference")
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_path
