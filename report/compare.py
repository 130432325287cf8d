"""Comparing two configurations of a study over training seeds (pure statistics, no files).

What a user choosing a configuration needs is the difference that survives the randomness of *training*:
each seed s is one independent pair of training runs, Δ_s = metric(config, s) - metric(reference, s). The
headline is their mean Δ, the seed-level standard error sd_s(Δ_s) / sqrt(S) and a 95% t-interval with S - 1
degrees of freedom; a difference is claimed only when that interval excludes 0.

The Monte Carlo error of the test set is a second, smaller figure: for fixed trained models, the per-image
differences d_si of seed s have SE_s = sd_i(d_si) / sqrt(N), and the image-level SE of Δ is
sqrt(sum_s SE_s²) / S. It says how well 509 test images pin down the difference between *these* trained
models, not how a retrained pair would differ, so it is never the only figure.
"""
import math
from statistics import mean, stdev

from scipy.stats import t as student_t

from formats import percent

CONFIDENCE = 0.95


def t_quantile(degrees_of_freedom, confidence=CONFIDENCE):
    """The two-sided Student-t quantile: P(|T| <= q) = confidence for T with that many degrees of freedom."""
    return float(student_t.ppf(0.5 + confidence / 2, degrees_of_freedom))


def verdict(interval):
    """'lower' or 'higher' when the interval excludes 0, else 'no detectable difference' (also for None)."""
    if interval is None or interval[0] <= 0 <= interval[1]:
        return "no detectable difference"
    return "lower" if interval[1] < 0 else "higher"


def seed_difference(deltas, per_image=None, confidence=CONFIDENCE):
    """The seed-level comparison of per-seed differences.

    Args:
        deltas: {seed: Δ_s}, the config's metric minus the reference's for the same seed.
        per_image: optional {seed: [d_si]}, the per-image differences behind Δ_s (same test images).
    Returns:
        dict: "seeds" (sorted), "deltas" (in that order), "mean", "seed_se" (sd / sqrt(S); None for S < 2),
        "interval" ((low, high), the t-interval; None for S < 2), "verdict", and "image_se" (the Monte Carlo
        SE over test images for the fixed trained models; None without per-image values for every seed).
    """
    seeds = sorted(deltas)
    values = [deltas[s] for s in seeds]
    S = len(values)
    result = {"seeds": seeds, "deltas": values, "mean": mean(values) if values else None,
              "seed_se": None, "interval": None, "image_se": None}
    if S >= 2:
        result["seed_se"] = stdev(values) / math.sqrt(S)
        half = t_quantile(S - 1, confidence) * result["seed_se"]
        result["interval"] = (result["mean"] - half, result["mean"] + half)
    if per_image and S and all(len(per_image.get(s) or ()) >= 2 for s in seeds):
        variances = [stdev(per_image[s]) ** 2 / len(per_image[s]) for s in seeds]
        result["image_se"] = math.sqrt(sum(variances)) / S
    result["verdict"] = verdict(result["interval"])
    return result


def plot_differences(comparisons, fig, xlabel):
    """Per-seed differences (dots), their mean (diamond) and t-interval (bar), against a line at zero.

    comparisons: list of (label, seed_difference result); fig: a matplotlib Figure. Returns the axes.
    """
    ax = fig.add_subplot()
    for row, (label, result) in enumerate(reversed(comparisons)):
        ax.scatter(result["deltas"], [row] * len(result["deltas"]), s=18, color="0.45", zorder=2,
                   label="one seed (Δ_s)" if row == 0 else None)
        if result["interval"] is not None:
            low, high = result["interval"]
            ax.plot([low, high], [row + 0.18] * 2, color="C0", linewidth=2.5, zorder=3,
                    label=f"{percent(CONFIDENCE)} t-interval" if row == 0 else None)
        ax.scatter([result["mean"]], [row + 0.18], marker="D", s=36, color="C3", zorder=4,
                   label="mean over seeds" if row == 0 else None)
    ax.axvline(0, color="k", linewidth=0.8)
    ax.set_yticks(range(len(comparisons)), [label for label, _ in reversed(comparisons)], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14 * 8 / max(8, len(comparisons) + 2)),
              ncol=3, frameon=False)
    return ax
