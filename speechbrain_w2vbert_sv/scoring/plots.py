"""PNG plots of verification results: DET curves and score histograms.

matplotlib is imported inside the functions (with the file-only ``Agg``
backend), so the rest of the package does not need it.

Authors
 * speechbrain-w2vbert-sv contributors
"""

import numpy as np
import torch

from speechbrain_w2vbert_sv.scoring.metrics import check_scores_labels, det_curve

_DET_TICKS = (
    0.0001,
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    0.9,
    0.95,
    0.98,
    0.99,
)


def _pyplot():
    """matplotlib's pyplot on the Agg backend (PNG files, no display)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _probit(rates):
    """Standard normal quantiles of rates (the DET axis scale)."""
    return torch.special.ndtri(torch.as_tensor(rates, dtype=torch.float64)).numpy()


def _thin(x, y, step):
    """Keeps the points where the curve has travelled ``step`` since the last.

    A DET curve of millions of trials has millions of points; keeping one per
    ``step`` of path length (in probit units) draws the same line.
    """
    path = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    keep = np.flatnonzero(np.diff(np.floor(path / step), prepend=-1.0) > 0)
    keep = np.union1d(keep, [len(x) - 1])
    return x[keep], y[keep]


def plot_det(path, systems, limits=(0.0001, 0.5), title=None):
    """Draws DET curves (miss vs false-alarm rate on probit axes) to a PNG.

    Arguments
    ---------
    path : str or os.PathLike
        Output PNG file.
    systems : dict
        ``name -> (scores, labels)`` for each curve (numpy arrays or tensors).
    limits : tuple of float
        Lowest and highest rate shown on both axes.
    title : str, optional
        Figure title.

    Returns
    -------
    str or os.PathLike
        ``path``.

    Example
    -------
    >>> import os, tempfile
    >>> labels = torch.arange(400) % 2
    >>> scores = labels + torch.randn(400, generator=torch.Generator().manual_seed(0))
    >>> path = plot_det(os.path.join(tempfile.mkdtemp(), "det.png"), {"sys": (scores, labels)})
    >>> open(path, "rb").read(4)
    b'\\x89PNG'
    """
    low, high = limits
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"limits must satisfy 0 < low < high < 1, got {limits}")
    if not systems:
        raise ValueError("systems is empty: give at least one (scores, labels)")
    plt = _pyplot()
    axis_low, axis_high = _probit([low, high])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    try:
        for name, (scores, labels) in systems.items():
            curve = det_curve(scores, labels)
            eer = curve.eer()
            # Clipping to the axis range keeps zero rates (probit -inf) drawable.
            x = _probit(np.clip(curve.p_fa, low / 2, 1 - low / 2))
            y = _probit(np.clip(curve.p_miss, low / 2, 1 - low / 2))
            x, y = _thin(x, y, step=(axis_high - axis_low) / 2000)
            (line,) = ax.plot(x, y, label=f"{name} (EER {100 * eer:.2f}%)")
            point = _probit(np.clip(eer, low / 2, 1 - low / 2))
            ax.plot(point, point, "o", color=line.get_color(), markersize=4)
        ticks = [t for t in _DET_TICKS if low <= t <= high]
        ax.set_xticks(_probit(ticks))
        ax.set_yticks(_probit(ticks))
        labels_pct = [f"{100 * t:g}" for t in ticks]
        ax.set_xticklabels(labels_pct, rotation=45)
        ax.set_yticklabels(labels_pct)
        ax.set_xlim(axis_low, axis_high)
        ax.set_ylim(axis_low, axis_high)
        ax.plot([axis_low, axis_high], [axis_low, axis_high], ":", color="grey", lw=0.8)
        ax.set_xlabel("False alarm rate (%)")
        ax.set_ylabel("Miss rate (%)")
        ax.grid(True, lw=0.4, alpha=0.6)
        ax.legend(loc="upper right", fontsize=8)
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def plot_score_histogram(path, scores, labels, bins=100, title=None):
    """Draws the target and non-target score distributions to a PNG.

    Both histograms share their bins and are normalised to unit area, so
    lists with few targets remain readable.

    Arguments
    ---------
    path : str or os.PathLike
        Output PNG file.
    scores : numpy.ndarray or torch.Tensor
        [T] scores.
    labels : numpy.ndarray or torch.Tensor
        [T] 1 for targets, 0 for non-targets.
    bins : int
        Number of bins over the score range.
    title : str, optional
        Figure title.

    Returns
    -------
    str or os.PathLike
        ``path``.

    Example
    -------
    >>> import os, tempfile
    >>> labels = torch.arange(400) % 2
    >>> scores = labels + torch.randn(400, generator=torch.Generator().manual_seed(0))
    >>> path = os.path.join(tempfile.mkdtemp(), "hist.png")
    >>> open(plot_score_histogram(path, scores, labels), "rb").read(4)
    b'\\x89PNG'
    """
    scores, labels = check_scores_labels(scores, labels)
    finite = np.isfinite(scores)
    edges = np.histogram_bin_edges(scores[finite].astype(np.float64), bins=bins)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    try:
        for mask, name in ((~labels, "non-target"), (labels, "target")):
            selected = scores[mask & finite]
            ax.hist(
                selected,
                bins=edges,
                density=True,
                alpha=0.55,
                label=f"{name} ({int(mask.sum()):,})",
            )
        ax.set_xlabel("score")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
