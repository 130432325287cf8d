"""The study: one row per configuration of a sweep folder (runs named <config>_s<seed> by part1/sweep.py),
mean ± sd over seeds, and each configuration's difference from the ELBO baseline in test IW bpd with a
paired standard error.

Paired SE: the configurations are evaluated on the same test images, so for seed s the per-image
differences d_si = iw_C,si - iw_base,si (from eval_test.json's per_image_iw_bpd) give Δ_s = mean_i d_si
with SE_s = sd_i(d_si) / sqrt(N); seeds are independent runs, so Δ = mean_s Δ_s and
SE(Δ) = sqrt(sum_s SE_s²) / S. Differences between configurations are smaller than the spread between
images, which is why the pairing matters.
"""
import math
import re
from collections import Counter
from pathlib import Path
from statistics import mean, median, stdev

import run_folder
from cli_common import UserError

BASELINE = "elbo-k1_none-l0"
NAME = re.compile(r"(?P<config>(?P<objective>\w+)-k(?P<k>\d+)_(?P<flow>\w+)-l(?P<length>\d+))_s(?P<seed>\d+)")
COLUMNS = (("test ELBO bpd", "test_bpd"), ("test IW bpd", "test_iw_bpd"), ("gap (bpd)", "gap"),
           ("KL (nats)", "test_kl_nats"), ("active units", "test_active_units"),
           ("seconds / epoch (median)", "median_epoch_seconds"))


def load_study(sweep_dir):
    """{config: {seed: run}} of the finished runs in a sweep folder (run = run_folder.load_run + eval_test.json)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep folder {sweep_dir} does not exist")
    configs = {}
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        match = NAME.fullmatch(run_dir.name)
        if match and run_folder.is_finished(run_dir):
            run = run_folder.load_run(run_dir)
            run["metrics"]["gap"] = run["metrics"]["test_bpd"] - run["metrics"].get("test_iw_bpd", math.nan)
            # The median epoch time: robust to an epoch stalled by other load or a paused process.
            run["metrics"]["median_epoch_seconds"] = median(h["seconds"] for h in run["history"])
            configs.setdefault(match["config"], {})[int(match["seed"])] = run
    if not configs:
        raise UserError(f"{sweep_dir} holds no finished run named like <objective>-k<K>_<flow>-l<L>_s<seed>")
    return dict(sorted(configs.items(), key=lambda item: (item[0] != BASELINE, item[0])))


def mean_sd(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return mean(values), stdev(values) if len(values) > 1 else None


def paired_difference(runs, baseline_runs):
    """(Δ, SE, seeds used) of test IW bpd, config minus baseline, paired by seed and test image."""
    deltas, variances = [], []
    for seed in sorted(set(runs) & set(baseline_runs)):
        ours, theirs = (r["eval"] and r["eval"].get("per_image_iw_bpd") for r in (runs[seed], baseline_runs[seed]))
        if not ours or not theirs or len(ours) != len(theirs):
            continue
        diffs = [a - b for a, b in zip(ours, theirs)]
        deltas.append(mean(diffs))
        variances.append(stdev(diffs) ** 2 / len(diffs))
    if not deltas:
        return None, None, 0
    return mean(deltas), math.sqrt(sum(variances)) / len(deltas), len(deltas)


def study_rows(configs):
    """One dict per configuration: name, seeds, {column key: (mean, sd)}, and the paired difference."""
    rows = []
    for config, runs in configs.items():
        row = {"config": config, "seeds": sorted(runs), "args": next(iter(runs.values()))["args"]}
        for _, key in COLUMNS:
            row[key] = mean_sd([r["metrics"].get(key) for r in runs.values()])
        row["delta"] = paired_difference(runs, configs[BASELINE]) if BASELINE in configs and config != BASELINE \
            else (None, None, 0)
        rows.append(row)
    return rows


def describe(config):
    """'iwae-k5_planar-l10' -> 'IWAE K=5, planar flow L=10'."""
    m = NAME.fullmatch(config + "_s0")
    k, text = m["k"], "ELBO" if m["objective"] == "elbo" else "IWAE"
    text += "" if k == "1" else f" K={k}"
    return text + ("" if m["flow"] == "none" else f", {m['flow']} flow L={m['length']}")


def machines_text(configs):
    """Where the runs ran, from each run's metrics.json `machine` (runs made before that field say so)."""
    counts = Counter(
        (f"{m['device_name']}, {m['cpus']} CPUs usable, {m['threads']} torch thread{'s' if m['threads'] != 1 else ''}, "
         f"torch {m['torch']}") if (m := run["metrics"].get("machine")) else None
        for runs in configs.values() for run in runs.values())
    parts = [f"{key}: {n} run{'s' if n != 1 else ''}" for key, n in counts.items() if key is not None]
    if counts[None]:
        parts.append(f"not recorded: {counts[None]} run{'s' if counts[None] != 1 else ''} "
                     "(made before runs recorded their machine)")
    return "; ".join(parts)


def fmt_pm(pair, decimals):
    value, sd = pair
    if value is None:
        return "–"
    return f"{value:.{decimals}f}" + ("" if sd is None else f" ± {sd:.{decimals}f}")


def study_markdown(rows, iw_samples):
    """The study table and its notes (Markdown)."""
    header = ["configuration", "seeds"] + [name for name, _ in COLUMNS] + [
        f"Δ test IW bpd vs {describe(BASELINE)} (paired SE)"]
    decimals = {"test_kl_nats": 2, "test_active_units": 1, "median_epoch_seconds": 2}
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        delta, se, _ = row["delta"]
        cells = [describe(row["config"]), ", ".join(map(str, row["seeds"]))]
        cells += [fmt_pm(row[key], decimals.get(key, 4)) for _, key in COLUMNS]
        cells.append("–" if delta is None else f"{delta:+.4f} ± {se:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        f"\n\nMean ± sd over seeds. Test IW bpd: the negative importance-weighted bound with K = {iw_samples} "
        "samples; gap: test ELBO bpd minus test IW bpd, per run; KL: the test KL term in nats per image (closed "
        "form without a flow, a single-sample estimate with one); active units: latent dimensions with "
        "Cov_x(E_q[z_d]) > 0.01; Δ: the configuration's test IW bpd minus the baseline's, paired by seed and "
        "test image (negative is better).")


def plot_validation(configs, fig):
    """Mean validation bpd per epoch per configuration (band: min to max over seeds) into `fig`."""
    ax = fig.add_subplot()
    for config, runs in configs.items():
        curves = [{h["epoch"]: h["val_bpd"] for h in r["history"]} for r in runs.values()]
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        values = [[c[e] for c in curves] for e in epochs]
        (line,) = ax.plot(epochs, [mean(v) for v in values], label=f"{describe(config)} ({len(runs)} seeds)")
        ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], alpha=0.2,
                        color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation negative ELBO (bpd)")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
