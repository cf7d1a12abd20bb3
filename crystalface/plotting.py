"""Pictures: the fingerprint as an RGB image, and galleries of fingerprints."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_fingerprint", "save_fingerprint", "save_gallery"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless machines: write files, never open windows
    import matplotlib.pyplot as plt

    return plt


def plot_fingerprint(image: np.ndarray, ax=None, title: str | None = None, channels: bool = False):
    """Draw a (3, n, n) fingerprint as RGB (x -> red, y -> green, z -> blue); optionally each channel too.

    Returns the matplotlib Axes (or the list of Axes with ``channels=True``).
    """
    plt = _pyplot()
    image = np.asarray(image)
    if channels:
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
        axes[0].imshow(np.moveaxis(image, 0, -1), origin="lower")
        axes[0].set_title(title or "DF-2D")
        for c, (name, cmap) in enumerate(zip("xyz", ("Reds", "Greens", "Blues"))):
            axes[c + 1].imshow(image[c], origin="lower", cmap=cmap, vmin=0, vmax=max(float(image[c].max()), 1e-12))
            axes[c + 1].set_title(f"rotations about {name}")
        for a in axes:
            a.set_xticks([])
            a.set_yticks([])
        return list(axes)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 3.2))
    ax.imshow(np.moveaxis(image, 0, -1), origin="lower")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def save_fingerprint(image: np.ndarray, path: str | Path, title: str | None = None, channels: bool = True) -> Path:
    """Write a fingerprint picture (PNG or any format matplotlib writes) and return its path."""
    plt = _pyplot()
    result = plot_fingerprint(image, title=title, channels=channels)
    fig = (result[0] if isinstance(result, list) else result).figure
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_gallery(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, columns: int = 4) -> Path:
    """Write several fingerprints side by side in one picture."""
    plt = _pyplot()
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        plot_fingerprint(image, ax=ax, title=title)
        ax.axis("on")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
