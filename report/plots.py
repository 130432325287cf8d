"""The report's figures, drawn with matplotlib's object API (no pyplot, so no global state), from run
folders loaded by run_folder.load_run.
"""
import math
from statistics import NormalDist

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread


def new_figure(**kwargs):
    """A matplotlib Figure drawn by the Agg backend (no pyplot, so no global state)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_bpd_curves(run, data=""):
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
                label=f"test, best-by-validation model (epoch {m['best_epoch']}): {m['test_bpd']:.3f}")
    z_dim = run["args"].get("z_dim")
    ax.set_title(f"Negative ELBO during training{f' (z_dim {z_dim})' if z_dim is not None else ''}"
                 + (f"\n{data}" if data else ""), fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (bits per dimension)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def sample_title(epoch):
    if epoch == 0:
        return "before training (epoch 0)"
    return f"after {epoch} epoch{'s' if epoch != 1 else ''}"


def plot_samples(run, data=""):
    """The run's sample grids side by side, titled by epoch."""
    samples = run["samples"]
    ncols = min(len(samples), 4)
    nrows = math.ceil(len(samples) / ncols)
    fig = new_figure(figsize=(3.2 * ncols, 3.5 * nrows), dpi=150, layout="constrained")
    for i, (epoch, png) in enumerate(samples.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(imread(png), cmap="gray", interpolation="nearest")
        ax.set_title(sample_title(epoch))
        ax.set_axis_off()
    z_dim = run["args"].get("z_dim")
    fig.suptitle(f"64 samples (z ~ N(0, I), every pixel drawn from its categorical)"
                 f"{f', z_dim {z_dim}' if z_dim is not None else ''}" + (f"\n{data}" if data else ""))
    return fig


def plot_manifold(png, data=""):
    """Re-plot vae_manifold.png with the z1/z2 axes marked at the grid's ppf values."""
    image = imread(png)
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
        labels = [f"{v:.2f}" for v in values]
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
