"""The study: one row per configuration of a sweep folder (runs named <config>_s<seed> by part1/sweep.py),
mean ± sd over seeds, and the differences between configurations over training seeds (report/compare.py):
per-seed differences, their mean, seed-level SE and 95% t-interval as the headline, the Monte Carlo SE over
test images (from eval_test.json's per_image_iw_bpd) as a second figure. All runs must be on one dataset at one bit
depth (a folder mixing them is refused in one line, not averaged into one row). The report's section 2.11
(`make_figures.py --study SWEEP_DIR`): figures/study_val_bpd.png, figures/study_differences.png, figures/study.md
and the block between the report's study markers.
"""
import math
import re
from collections import Counter
from pathlib import Path
from statistics import mean, median, stdev

import compare
import plots
from blocks import generated_comment, replace_block, save_figure, write_section
from dgmkit.errors import UserError
from dgmkit.runs.finished import load_run
from dgmkit.runs.folder import RunDir
from formats import DASH, fixed, fixed_pm, interval, plural, table
from run_data import describe_run_data, same_data

MARKERS = ("<!-- study:begin -->", "<!-- study:end -->")
BASELINE = "elbo-k1_none-l0"
NAME = re.compile(r"(?P<config>(?P<objective>\w+)-k(?P<k>\d+)_(?P<flow>\w+)-l(?P<length>\d+))_s(?P<seed>\d+)")
COLUMNS = (("test ELBO bpd", "test_bpd"), ("test IW bpd", "test_iw_bpd"), ("gap (bpd)", "gap"),
           ("KL (nats)", "test_kl_nats"), ("active units of μ₀", "test_active_units"),
           ("seconds / epoch (median)", "median_epoch_seconds"))
# The comparisons besides each configuration against the baseline: (configuration, reference).
EXTRA_COMPARISONS = (("iwae-k5_planar-l10", "iwae-k5_none-l0"), ("iwae-k5_none-l0", "elbo-k1_planar-l10"),
                     ("iwae-k5_planar-l10", "elbo-k1_planar-l10"), ("elbo-k1_radial-l10", "elbo-k1_planar-l10"))
# The quantities every comparison reports, with their short names and decimals.
QUANTITIES = (("test_iw_bpd", "Δ test IW bpd", 4), ("test_bpd", "Δ test ELBO bpd", 4), ("gap", "Δ gap (bpd)", 4),
              ("test_kl_nats", "Δ KL (nats)", 2))


def load_study(sweep_dir):
    """{config: {seed: run}} of the finished runs in a sweep folder (run = dgmkit.runs.finished.load_run, eval_test.json included)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep folder {sweep_dir} does not exist")
    configs = {}
    for run_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
        match = NAME.fullmatch(run_dir.name)
        if match and RunDir(run_dir).is_finished():
            run = load_run(run_dir)
            run["metrics"]["gap"] = run["metrics"]["test_bpd"] - run["metrics"].get("test_iw_bpd", math.nan)
            # The median epoch time: robust to an epoch stalled by other load or a paused process.
            run["metrics"]["median_epoch_seconds"] = median(h["seconds"] for h in run["history"])
            configs.setdefault(match["config"], {})[int(match["seed"])] = run
    if not configs:
        raise UserError(f"{sweep_dir} holds no finished run named like <objective>-k<K>_<flow>-l<L>_s<seed>")
    # Runs on other data (dataset or bits) are refused, never averaged into one row.
    same_data([run for runs in configs.values() for run in runs.values()], f"--study {sweep_dir}")
    return dict(sorted(configs.items(), key=lambda item: (item[0] != BASELINE, item[0])))


def mean_sd(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return mean(values), stdev(values) if len(values) > 1 else None


def difference(runs, reference_runs, key="test_iw_bpd"):
    """compare.seed_difference of metric `key`, config minus reference, over the seeds both have; for the
    test IW bpd also the per-image differences (eval_test.json) behind the image-level SE."""
    seeds = sorted(s for s in set(runs) & set(reference_runs)
                   if None not in (runs[s]["metrics"].get(key), reference_runs[s]["metrics"].get(key)))
    deltas = {s: runs[s]["metrics"][key] - reference_runs[s]["metrics"][key] for s in seeds}
    per_image = {}
    for seed in seeds if key == "test_iw_bpd" else ():
        ours, theirs = ((r["eval"] or {}).get("per_image_iw_bpd") for r in (runs[seed], reference_runs[seed]))
        if ours and theirs and len(ours) == len(theirs):
            per_image[seed] = [a - b for a, b in zip(ours, theirs)]
    return compare.seed_difference(deltas, per_image)


def comparisons(configs):
    """[(config, reference, {quantity key: difference})] for every configuration against the baseline, then
    EXTRA_COMPARISONS, for the pairs present."""
    pairs = [(c, BASELINE) for c in configs if c != BASELINE and BASELINE in configs]
    pairs += [pair for pair in EXTRA_COMPARISONS if pair[0] in configs and pair[1] in configs]
    return [(c, r, {key: difference(configs[c], configs[r], key) for key, _, _ in QUANTITIES}) for c, r in pairs]


def study_rows(configs):
    """One dict per configuration: name, seeds, {column key: (mean, sd over seeds)}, and "delta": the test IW
    bpd difference from the baseline (compare.seed_difference; None for the baseline itself)."""
    rows = []
    for config, runs in configs.items():
        row = {"config": config, "seeds": sorted(runs), "args": next(iter(runs.values()))["args"]}
        for _, key in COLUMNS:
            row[key] = mean_sd([r["metrics"].get(key) for r in runs.values()])
        row["delta"] = difference(runs, configs[BASELINE]) if BASELINE in configs and config != BASELINE else None
        rows.append(row)
    return rows


def describe(config):
    """'iwae-k5_planar-l10' -> 'IWAE K=5, planar flow L=10'."""
    m = NAME.fullmatch(config + "_s0")
    k, text = m["k"], "ELBO" if m["objective"] == "elbo" else "IWAE"
    text += "" if k == "1" else f" K={k}"
    return text + ("" if m["flow"] == "none" else f", {m['flow']} flow L={m['length']}")


def short(config):
    """'iwae-k5_planar-l10' -> 'IWAE5+planar10', for figure labels."""
    m = NAME.fullmatch(config + "_s0")
    text = "ELBO" if m["objective"] == "elbo" else "IWAE"
    text += "" if m["k"] == "1" else m["k"]
    return text + ("" if m["flow"] == "none" else f"+{m['flow']}{m['length']}")


def machines_text(configs):
    """Where and how the runs ran: each run's metrics.json `machine` (runs made before that field say so) and
    the precision it trained in (args.json: explicit, or what auto chose), so a mix cannot go unnoticed."""
    counts = Counter(
        (f"{m['device_name']}, {m['cpus']} CPUs usable, {plural(m['threads'], 'torch thread')}, "
         f"torch {m['torch']}") if (m := run["metrics"].get("machine")) else None
        for runs in configs.values() for run in runs.values())
    parts = [f"{key}: {plural(n, 'run')}" for key, n in counts.items() if key is not None]
    if counts[None]:
        parts.append(f"not recorded: {plural(counts[None], 'run')} (made before runs recorded their machine)")
    precisions = Counter(precision_of(run["args"]) for runs in configs.values() for run in runs.values())
    return "; ".join(parts) + ". Precision: " + ", ".join(f"{p}: {plural(n, 'run')}"
                                                           for p, n in sorted(precisions.items()))


def precision_of(args):
    """The precision a run trained in: --precision, or with auto the choice args.json recorded ('?' if none)."""
    if args.get("precision") not in (None, "auto"):
        return args["precision"]
    return (args.get("auto_choices") or {}).get("precision", "?")


def study_markdown(rows, iw_samples, pairs=()):
    """The study table, the table of differences between configurations, and their notes (Markdown)."""
    base = describe(BASELINE)
    header = ["configuration", "seeds"] + [name for name, _ in COLUMNS] + [
        f"Δ test IW bpd vs {base} [95% t-interval]", "seed SE", "image SE", "verdict"]
    decimals = {"test_kl_nats": 2, "test_active_units": 1, "median_epoch_seconds": 2}
    cells = []
    for row in rows:
        delta = row["delta"]
        cells.append([describe(row["config"]), ", ".join(map(str, row["seeds"]))]
                     + [fixed_pm(*row[key], decimals.get(key, 4)) for _, key in COLUMNS]
                     + ([DASH] * 4 if delta is None else [interval(delta, 4), fixed(delta["seed_se"]),
                                                          fixed(delta["image_se"]), verdict_text(delta)]))
    text = table(header, cells) + (
        f"\n\nMean ± sd: the mean and the standard deviation over the seeds of the row (each seed is one "
        f"training run). Test IW bpd: the negative importance-weighted bound with K = {iw_samples} samples; gap: "
        "test ELBO bpd minus test IW bpd, per run; KL: the test KL term in nats per image (closed form without a "
        "flow, a single-sample estimate with one); active units of μ₀: latent dimensions d with "
        "Var_x(μ₀,d(x)) > 0.01, μ₀ the mean of the base Gaussian q₀(z₀|x) (without a flow, E_q[z_d]; with one, "
        "not the mean of the flow's output z_L). Δ: the configuration's test IW bpd minus the baseline's, one "
        "difference per seed, then their mean with a 95% t-interval (S - 1 degrees of freedom) from the seed SE, "
        "sd of the per-seed differences / sqrt(S): the uncertainty of training, the headline. Image SE: the "
        "Monte Carlo error of the test images for these fixed trained models (per-image differences, seed by "
        "seed), the smaller, second figure. Negative is better; **bold**: the interval excludes 0.")
    if pairs:
        text += "\n\n" + differences_markdown(pairs)
    return text


def verdict_text(result, better_is_lower=True):
    """'better' / 'worse' for bpd (lower is better), or the neutral compare.verdict otherwise."""
    word = result["verdict"]
    if word == "no detectable difference" or not better_is_lower:
        return word
    return "better" if word == "lower" else "worse"


def differences_markdown(pairs):
    """Every comparison (configuration minus reference) in each quantity: mean [95% t-interval]."""
    header = ["comparison", "seeds"] + [name + " [95% t-interval]" for _, name, _ in QUANTITIES] + ["IW verdict"]
    cells = []
    for config, reference, results in pairs:
        first = results[QUANTITIES[0][0]]
        cells.append([f"{describe(config)} − {describe(reference)}", ", ".join(map(str, first["seeds"]))]
                     + [interval(results[key], places) for key, _, places in QUANTITIES] + [verdict_text(first)])
    return table(header, cells) + (
        "\n\nEach cell: the mean over seeds of the per-seed difference (first configuration minus second, run "
        "for run with the same seed) and its 95% t-interval from the seed-level SE; **bold** when the interval "
        "excludes 0. For bpd, negative means the first configuration is better; the verdict is for test IW bpd.")


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


def check(sweep_dir, report, report_path):
    """Refuse a report without the study's markers or a sweep folder without finished runs (before anything of any
    section is written)."""
    replace_block(report, MARKERS, "", report_path)
    load_study(sweep_dir)


def make(sweep_dir, out_dir, report, report_path):
    """The study tables (out_dir/study.md and the report's study block), out_dir/study_val_bpd.png and
    out_dir/study_differences.png from the sweep folder; returns (new report text, written paths)."""
    configs = load_study(sweep_dir)
    rows = study_rows(configs)
    first = next(iter(next(iter(configs.values())).values()))
    iw_samples = first["metrics"].get("iw_samples")
    data = describe_run_data(first["args"], run_dir=first["dir"])
    data_name = describe_run_data(first["args"], folder=False, run_dir=first["dir"])
    fig = plots.new_figure(figsize=(7.2, 4.6), dpi=150, layout="constrained")
    plot_validation(configs, fig).set_title(f"Validation bpd per epoch (mean over seeds, band: range)\n{data_name}",
                                            fontsize=10)
    runs = sum(len(r) for r in configs.values())
    pairs = comparisons(configs)
    block = (f"{generated_comment(f'--study from {runs} runs in `{Path(sweep_dir).name}`')}\n\nData: {data}.\n\n"
             f"Machine (each run's metrics.json): {machines_text(configs)}.\n\n{study_markdown(rows, iw_samples, pairs)}")
    diff_fig = plots.new_figure(figsize=(7.2, 1.6 + 0.45 * max(1, len(pairs))), dpi=150, layout="constrained")
    compare.plot_differences([(f"{short(c)} − {short(r)}", results["test_iw_bpd"]) for c, r, results in pairs],
                             diff_fig, "difference in test IW bpd (negative: better)")
    diff_fig.axes[0].set_title(f"Test IW bpd (K = {iw_samples}): per-seed differences, mean, 95% t-interval\n"
                               f"{data_name}", fontsize=10)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out_dir / "study_val_bpd.png")
    save_figure(diff_fig, out_dir / "study_differences.png")
    report = write_section(out_dir / "study.md", "Study", block, report, MARKERS, report_path)
    return report, [out_dir / "study_val_bpd.png", out_dir / "study_differences.png", out_dir / "study.md"]
