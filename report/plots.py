"""The report's figures, drawn with matplotlib's object API (no pyplot, so no global state), from run
folders loaded by dgmkit.runs.finished.load_run.
"""
import math
from statistics import NormalDist

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread as _imread

from dgmkit.errors import UserError, first_line
from formats import count, fixed, percent, plural


def read_png(png):
    """A run's PNG as an array; a damaged one (or a folder in its place) is a one-line UserError."""
    try:
        return _imread(png)
    except Exception as error:  # PIL and matplotlib raise several types (OSError, ValueError, SyntaxError, ...)
        raise UserError(f"{png} is not a readable PNG ({first_line(error)[:120]}); regenerate it by rerunning "
                        "the training or evaluate.py") from None


def new_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg backend (no pyplot, so no global state)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_bpd_curves(run, data="", quantity="Negative ELBO", ylabel="negative ELBO (bits per dimension)"):
    """Train and validation bpd per epoch, and the test bpd of the best-by-validation model."""
    history = run["history"]
    fig = new_figure(figsize=(6.4, 4.2), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    for split, label in (("train", "train (average over the epoch)"), ("val", "validation (after the epoch)")):
        points = [(h["epoch"], h[f"{split}_bpd"]) for h in history if h.get(f"{split}_bpd") is not None]
        if points:
            ax.plot(*zip(*points), label=label)
    m = run["metrics"]
    if m.get("test_bpd") is not None and m.get("best_epoch") is not None:
        ax.plot([m["best_epoch"]], [m["test_bpd"]], "k*", markersize=12,
                label=f"test, best-by-validation model (epoch {m['best_epoch']}): {fixed(m['test_bpd'])}")
    z_dim = run["args"].get("z_dim")
    ax.set_title(f"{quantity} during training{f' (z_dim {z_dim})' if z_dim is not None else ''}"
                 + (f"\n{data}" if data else ""), fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def sample_title(epoch):
    if epoch == 0:
        return "before training (epoch 0)"
    return f"after {plural(epoch, 'epoch')}"


def plot_samples(run, data="", about=None):
    """The run's sample grids side by side, titled by epoch; `about` replaces the VAE's description."""
    samples = run["samples"]
    ncols = min(len(samples), 4)
    nrows = math.ceil(len(samples) / ncols)
    fig = new_figure(figsize=(3.2 * ncols, 3.5 * nrows), dpi=150, layout="constrained")
    for i, (epoch, png) in enumerate(samples.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(read_png(png), cmap="gray", interpolation="nearest")
        ax.set_title(sample_title(epoch))
        ax.set_axis_off()
    z_dim = run["args"].get("z_dim")
    about = about or (f"64 samples (z ~ N(0, I), every pixel drawn from its categorical)"
                      f"{f', z_dim {z_dim}' if z_dim is not None else ''}")
    fig.suptitle(about + (f"\n{data}" if data else ""))
    return fig


FRAME, BRIGHT = 3, 4  # brightness_text: the frame's width in pixels, the lowest "bright" level (of 0..15)


def grid_levels(png):
    """The 28x28 images of a make_grid PNG (padding 2) as 4-bit levels [N, 28, 28], or None if not such a grid."""
    image = read_png(png)
    levels = np.rint((image[..., 0] if image.ndim == 3 else image) * 15).astype(int)
    rows, cols = ((n - 2) / 30 for n in levels.shape)
    if rows != int(rows) or cols != int(cols) or rows < 1 or cols < 1:
        return None
    return np.stack([levels[2 + 30 * r:30 + 30 * r, 2 + 30 * c:30 + 30 * c]
                     for r in range(int(rows)) for c in range(int(cols))])


def bright_shares(images):
    """(share of frame pixels, share of interior pixels) at level >= BRIGHT, over all images [N, 28, 28]."""
    frame = np.ones((28, 28), dtype=bool)
    frame[FRAME:-FRAME, FRAME:-FRAME] = False
    return float((images[:, frame] >= BRIGHT).mean()), float((images[:, ~frame] >= BRIGHT).mean())


def brightness_text(run, real=None):
    """One sentence measuring how bright the sample grids' backgrounds are, and the real test images' (levels)."""
    parts = []
    for epoch, png in run["samples"].items():
        if (tiles := grid_levels(png)) is not None:
            frame, interior = bright_shares(tiles)
            parts.append(f"{sample_title(epoch).split(' (')[0]}: {percent(frame)} / {percent(interior)}")
    if not parts:
        return None
    if real is not None and len(real):
        frame, interior = bright_shares(real)
        parts.append(f"the {count(len(real))} real test images: {percent(frame)} / {percent(interior)}")
    return (f"Sample grids of `{run['name']}`: the share of pixels at level {BRIGHT} or above (of 0-15) in each "
            f"28x28 image's outer {FRAME}-pixel frame (mostly background in real images) / in its "
            f"{28 - 2 * FRAME}x{28 - 2 * FRAME} interior: " + "; ".join(parts) + ".")


def plot_manifold(png, data=""):
    """Re-plot vae_manifold.png with the z1/z2 axes marked at the grid's ppf values."""
    image = read_png(png)
    fig = new_figure(figsize=(8.6, 8.6), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray", interpolation="nearest")
    # torchvision's make_grid: padding 2, so cell i spans pixels 2 + 30 i .. 2 + 30 i + 27.
    height, width = image.shape[:2]
    grid = (width - 2) / 30
    if grid == int(grid) and grid >= 2 and height == width:
        grid = int(grid)
        values = [NormalDist().inv_cdf((i + 0.5) / grid) for i in range(grid)]
        positions = [2 + 30 * i + 13.5 for i in range(grid)]  # cell centres
        labels = [fixed(v, 2) for v in values]
        size = 7 if grid > 10 else 9
        ax.set_xticks(positions, labels, rotation=90, fontsize=size)
        ax.set_yticks(positions, labels, fontsize=size)
        caption = f"{grid}x{grid} decoder means; per axis z = Φ⁻¹((i + 0.5)/{grid}), i = 0..{grid - 1}"
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        caption = "decoder means over a grid of z"
    ax.set_xlabel("$z_1$ (increasing left → right)")
    ax.set_ylabel("$z_2$ (increasing top → bottom)")
    ax.set_title(f"Learned manifold of the z_dim 2 VAE\n{caption}" + (f"\n{data}" if data else ""))
    return fig
