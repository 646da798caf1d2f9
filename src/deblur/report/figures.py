"""The report's figures: training curves, per-image gains, sample comparisons, a real photo.

Each function draws one PNG and knows nothing about where its data came from.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FormatStrFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)
from scipy.ndimage import uniform_filter  # noqa: E402

from deblur import fsutil  # noqa: E402
from deblur.kinds import LABELS  # noqa: E402

ZOOM = "#ffd23f"  # the crop's frame, on the full view and around the enlarged crop
COLORS = {"gan": "#d1495b", "ae": "#00798c", "baseline": "#edae49", "blurry": "#8d8d8d"}
NAMES = {**LABELS, "baseline": "baseline", "blurry": "blurry input"}
DPI = 110

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.08,
    }
)


def _save(fig, path: str | os.PathLike) -> None:
    with fsutil.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)


def training_curves(
    curves: dict[str, pd.DataFrame], path: str | os.PathLike, blurry: dict[str, float] | None = None
) -> None:
    """Train loss (log scale) and validation PSNR against epoch, both models on each panel.

    ``blurry`` (kind -> validation PSNR of the blurry inputs) draws the level a model must
    beat to have learned anything.
    """
    fig, (loss_ax, psnr_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    last = 1
    for kind, df in curves.items():
        per_epoch = df.groupby("epoch", sort=True).agg({"train_loss": "mean", "val_psnr": "last"})
        style = {"color": COLORS.get(kind), "label": NAMES.get(kind, kind), "marker": "o", "ms": 3}
        loss_ax.plot(per_epoch.index, per_epoch["train_loss"], **style)
        val = per_epoch["val_psnr"].dropna()
        psnr_ax.plot(val.index, val.values, **style)
        last = max(last, int(per_epoch.index.max()))
    for i, level in enumerate(sorted(set((blurry or {}).values()))):
        label = "blurry input" if i == 0 else None
        psnr_ax.axhline(level, color=COLORS["blurry"], ls="--", lw=1, label=label)
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="loss", yscale="log")
    # 0.02, 0.05, 0.1 instead of matplotlib's 2x10^-2 labels
    loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    loss_ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    loss_ax.yaxis.set_minor_formatter(NullFormatter())
    psnr_ax.set(title="validation PSNR (held-out train scenes)", xlabel="epoch", ylabel="dB")
    for ax in (loss_ax, psnr_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, last + 0.5)
        if curves:
            ax.legend(frameon=False)
    fig.tight_layout()
    _save(fig, path)


def quality_curve(curve: pd.DataFrame, path: str | os.PathLike) -> None:
    """Test PSNR gain over the blurry input against training steps, one line per model
    through its part-way checkpoints: what more training buys. Steps, not seconds: the
    figure is a DVC out and stays the same when a rerun takes longer."""
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for kind, rows in curve.groupby("model", sort=False):
        rows = rows.sort_values("percent")
        style = {"color": COLORS.get(kind), "label": NAMES.get(kind, kind), "marker": "o"}
        # Every line starts at (0, 0): an untrained Restorer is the identity.
        ax.plot([0, *rows["step"]], [0, *rows["psnr_gain"]], markevery=slice(1, None), **style)
        for xv, yv, pct in zip(rows["step"], rows["psnr_gain"], rows["percent"], strict=True):
            ax.annotate(f"{pct}%", (xv, yv), textcoords="offset points", xytext=(4, -10))
    ax.axhline(0, color=COLORS["blurry"], ls="--", lw=1)
    ax.set_xlim(left=0)
    ax.legend(frameon=False, loc="lower right")
    ax.set(title="test PSNR gain vs training steps", xlabel="step", ylabel="dB over blurry")
    fig.tight_layout()
    _save(fig, path)


def gain_scatter(per_image: pd.DataFrame, path: str | os.PathLike) -> None:
    """Each method's PSNR against the blurry input's, per test image: above the line = helped."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    blurry = per_image[per_image["model"] == "blurry"].set_index(["image", "protocol"])["psnr"]
    lo, hi = np.inf, -np.inf
    for key in ("baseline", "ae", "gan"):
        rows = per_image[per_image["model"] == key]
        if rows.empty:
            continue
        x = blurry.loc[list(zip(rows["image"], rows["protocol"], strict=True))].to_numpy()
        y = rows["psnr"].to_numpy()
        ax.scatter(x, y, s=16, alpha=0.8, color=COLORS[key], label=NAMES[key], edgecolors="none")
        lo, hi = min(lo, x.min(), y.min()), max(hi, x.max(), y.max())
    if np.isfinite(lo):
        pad = 0.03 * (hi - lo) + 0.1
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#444", lw=0.8, ls="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.legend(frameon=False, loc="upper left")
    ax.set(title="per test image: output vs blurry input", xlabel="blurry input PSNR (dB)")
    ax.set_ylabel("output PSNR (dB)")
    ax.set_aspect("equal")
    fig.tight_layout()
    _save(fig, path)


def detail_box(image: np.ndarray, side: int) -> tuple[int, int, int]:
    """(top, left, side) of the square with the most edges: where deblurring shows."""
    gray = np.asarray(image, np.float32).mean(axis=2)
    gr, gc = np.gradient(gray)
    energy = uniform_filter(np.hypot(gr, gc), size=side, mode="constant")
    half = side // 2
    h, w = gray.shape
    inner = energy[half : h - side + half + 1, half : w - side + half + 1]
    top, left = np.unravel_index(np.argmax(inner), inner.shape)
    return int(top), int(left), side


def comparison(panels: list[tuple[str, np.ndarray]], path: str | os.PathLike, zoom=True) -> None:
    """Images side by side, titled; below them an enlarged crop of the most detailed region.

    ``panels`` are (title, uint8 HxWx3) with the sharp image, if any, last: the crop is
    chosen on it, so every panel is zoomed on the same place.
    """
    h, w = panels[0][1].shape[:2]
    n = len(panels)
    side = max(16, min(h, w) // 3)
    box = detail_box(panels[-1][1], side) if zoom and min(h, w) >= 48 else None
    rows = 2 if box else 1
    width = 2.6 * n
    height = width / n * (h / w) + (width / n if box else 0) + 0.5 * rows
    fig, axes = plt.subplots(rows, n, figsize=(width, height), squeeze=False)
    for col, (title, image) in enumerate(panels):
        ax = axes[0, col]
        ax.imshow(image)
        ax.set_title(title)
        if box:
            top, left, s = box
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), s, s, fill=False, ec=ZOOM, lw=1.2))
            axes[1, col].imshow(image[top : top + s, left : left + s], interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(ax in axes[1:].flat)
            spine.set_color(ZOOM)
            spine.set_linewidth(1.5)
    fig.tight_layout(h_pad=0.4, w_pad=0.4)
    _save(fig, path)


def experiments(points: list[dict], front: list[int], path: str | os.PathLike) -> None:
    """Test PSNR gain against ms per megapixel, one point per model per pipeline run.

    ``points``: {"kind", "label", "ms_per_mp", "gain_db", "champion"}; ``front``: indices of
    the points no other point beats on both axes (faster and better), joined by a line.
    Up and to the left is better; a ring marks each registry champion.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for kind in dict.fromkeys(p["kind"] for p in points):
        mine = [p for p in points if p["kind"] == kind]
        ax.scatter(
            [p["ms_per_mp"] for p in mine],
            [p["gain_db"] for p in mine],
            s=28,
            color=COLORS.get(kind),
            label=NAMES.get(kind, kind),
            zorder=3,
        )
    if front:
        xs = [points[i]["ms_per_mp"] for i in front]
        ys = [points[i]["gain_db"] for i in front]
        ax.step(xs, ys, where="post", color="#444", lw=1, ls="--", label="Pareto front", zorder=2)
    champions = [p for p in points if p["champion"]]
    if champions:
        ax.scatter(
            [p["ms_per_mp"] for p in champions],
            [p["gain_db"] for p in champions],
            s=150,
            facecolors="none",
            edgecolors="#222",
            linewidths=1.4,
            label="champion",
            zorder=4,
        )
    if len(points) <= 16:  # beyond that the labels hide the points
        for p in points:
            ax.annotate(p["label"], (p["ms_per_mp"], p["gain_db"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7, color="#555")  # fmt: skip
    ax.axhline(0, color=COLORS["blurry"], lw=0.8)
    ax.set(
        title="every pipeline run: quality against speed",
        xlabel="ms per megapixel (this machine's timing)",
        ylabel="test PSNR gain over the blurry input (dB)",
    )
    if points:
        ax.legend(frameon=False, fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, path)
