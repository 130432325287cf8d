"""The report's section "The 2019 models" (Part 3, `make_figures.py --models_2019 DIR --compare REALNVP_DIR
VAE_DIR`): the binary-MNIST VAE, the GAN and RealNVP (the figures the 2019 questions ask for), and the comparison of
RealNVP's dequantization bound with the VAE's importance-weighted bound on the same data (in the report, 4-bit
FashionMNIST) over training seeds, as figures/models2019_*.png, figures/models_2019.md and between the report's
models2019 markers.

Its runs are found and checked by runs_2019.py before anything is drawn (comparisons only of runs on the same data);
labels and headings name the runs' own data, K and sizes.
"""
import math

import compare
import plots
from blocks import generated_comment, replace_block, save_figure, write_section
from dgmkit.runs.folder import RunDir
from formats import count, fixed, signed, span, table
from run_data import data_key, data_name, describe_run_data
from runs_2019 import load_comparison, load_models, load_timing, size

MARKERS = ("<!-- models2019:begin -->", "<!-- models2019:end -->")


def timing_text(timing):
    if timing is None:
        return "No side-by-side timing was recorded (REALNVP_DIR/timing/)."
    vae, nvp = (timing[k]["metrics"] for k in ("vae", "realnvp"))
    machine = nvp.get("machine") or {}
    ratio = nvp["seconds_per_epoch"] / vae["seconds_per_epoch"]
    return (f"Side by side on one machine ({machine.get('device_name', '?')}, torch {machine.get('torch', '?')}, "
            f"{machine.get('threads', '?')} thread(s); `timing/`, {vae['epochs']} and {nvp['epochs']} epochs, run "
            f"one after the other on the same data and settings): the VAE takes {fixed(vae['seconds_per_epoch'], 2)} "
            f"s per epoch, RealNVP {fixed(nvp['seconds_per_epoch'], 2)} s ({fixed(ratio, 1)} times as long).")


def comparison(pairs):
    """compare.seed_difference of RealNVP's test bpd minus the VAE's IW bpd, per seed, with the per-image
    differences (the same test images in the same order) behind the image-level SE."""
    deltas = {s: nvp["metrics"]["test_bpd"] - vae["eval"]["iw_bpd"] for s, (nvp, vae) in pairs.items()}
    per_image = {}
    for seed, (nvp, vae) in pairs.items():
        ours, theirs = (nvp["eval"] or {}).get("per_image_bpd"), vae["eval"].get("per_image_iw_bpd")
        if ours and theirs and len(ours) == len(theirs):
            per_image[seed] = [a - b for a, b in zip(ours, theirs)]
    return compare.seed_difference(deltas, per_image)


def plot_gan_curves(run, data):
    fig = plots.new_figure(figsize=(9.6, 3.8), dpi=150, layout="constrained")
    history = run["history"]
    epochs = [h["epoch"] for h in history]
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot(epochs, [h["train_d_loss"] for h in history], label="discriminator loss")
    left.plot(epochs, [h["train_g_loss"] for h in history], label="generator loss (-log D(G(z)))")
    right.plot(epochs, [h["train_d_real"] for h in history], label="D(x), real images")
    right.plot(epochs, [h["train_d_fake"] for h in history], label="D(G(z)), generated")
    right.axhline(0.5, color="k", linewidth=0.6)
    for ax, what in ((left, "loss (nats, mean over the epoch's batches)"), (right, "mean discriminator output")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"GAN training, per epoch\n{data}", fontsize=10)
    return fig


def plot_interpolation(run, data):
    fig = plots.new_figure(figsize=(9.6, 1.9), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(plots.read_png(RunDir(run["dir"]).figure_path("interpolation")), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    a, b = [*run["metrics"].get("interpolation_labels", []), "?", "?"][:2]
    ax.set_title(f"G(z) along z0 -> z1 in 7 steps (ends included); nearest training digits of the ends: {a}, {b}\n"
                 f"{data}", fontsize=9)
    return fig


def figures(models, pairs, result, data):
    """{file name: figure} of the section (data: {role: text naming the data of that run})."""
    nvp_curve = dict(quantity="Dequantization bound on -log P(x)", ylabel="bits per dimension (upper bound)")
    diff = plots.new_figure(figsize=(7.2, 3.6), dpi=150, layout="constrained")
    compare.plot_differences([(f"RealNVP − VAE (IW, K = {iw_samples(pairs)})", result)], diff, "difference in test "
                             "bpd (negative: RealNVP lower)")
    diff.axes[0].set_ylim(-0.6, 0.8)  # one row: the dots at 0, the mean and interval just above
    diff.axes[0].set_title(f"Per-seed differences, mean, 95% t-interval ({len(pairs)} seeds)\n{data['compare']}",
                           fontsize=9)
    return {
        "models2019_vae_curves.png": plots.plot_bpd_curves(models["vae"], data["vae"]),
        "models2019_vae_samples.png": plots.plot_samples(models["vae"], data["vae"]),
        "models2019_vae_manifold.png": plots.plot_manifold(models["vae_z2"]["manifold"], data["vae_z2"]),
        "models2019_gan_curves.png": plot_gan_curves(models["gan"], data["gan"]),
        "models2019_gan_samples.png": plots.plot_samples(models["gan"], data["gan"],
                                                         "64 GAN samples G(z), z ~ N(0, I)"),
        "models2019_gan_interpolation.png": plot_interpolation(models["gan"], data["gan"]),
        "models2019_realnvp_curves.png": plots.plot_bpd_curves(models["realnvp"], data["realnvp"], **nvp_curve),
        "models2019_realnvp_samples.png": plots.plot_samples(models["realnvp"], data["realnvp"], (
            f"64 RealNVP samples (z ~ N(0, T²I), T = {models['realnvp']['args'].get('temperature', 1.0)})")),
        "models2019_compare.png": diff,
    }


def markdown(models, pairs, result, data, names, timing=None):
    """The section's Markdown: what each run reached, the figures, and the comparison with its limits."""
    vae, gan, nvp = models["vae"]["metrics"], models["gan"]["metrics"], models["realnvp"]["metrics"]
    on = {key: data_name(data_key(run)) for key, run in models.items()}
    binary = " (`--bits 1`)" if data_key(models["vae"])[1] == 1 else ""
    rows = [
        (f"VAE, {on['vae']}{binary}, z_dim {models['vae']['args'].get('z_dim')}", data["vae"],
         f"test IW bpd (K = {vae.get('iw_samples')}) {fixed(vae.get('test_iw_bpd'))} ± "
         f"{fixed(vae.get('test_iw_bpd_se'))}; ELBO {fixed(vae['test_bpd'])}"),
        (f"VAE, {on['vae_z2']}, z_dim {models['vae_z2']['args'].get('z_dim')}", data["vae_z2"],
         f"test ELBO bpd {fixed(models['vae_z2']['metrics']['test_bpd'])}"),
        (f"GAN, {on['gan']}", data["gan"], f"last epoch: D(x) {fixed(gan.get('final_d_real'), 3)}, D(G(z)) "
         f"{fixed(gan.get('final_d_fake'), 3)} (no likelihood)"),
        (f"RealNVP, {on['realnvp']}", data["realnvp"], f"test bpd {fixed(nvp['test_bpd'])} ± "
         f"{fixed(nvp['test_bpd_se'])} (bound, {nvp.get('draws')} draws per image)"),
    ]
    run_rows = []
    for (label, where, reached), key in zip(rows, ("vae", "vae_z2", "gan", "realnvp")):
        m = models[key]["metrics"]
        run_rows.append([f"{label} (`{models[key]['name']}`)", where, reached, str(m["epochs"]),
                         fixed(m.get("seconds_per_epoch"), 2), f"{fixed(m['wall_time_s'], 0)} s"])
    seeds = ", ".join(str(s) for s in result["seeds"])
    nvp_runs, vae_runs = [p[0] for p in pairs.values()], [p[1] for p in pairs.values()]
    sizes = [" / ".join(count(n) for n in sorted({size(r) for r in runs})) for runs in (nvp_runs, vae_runs)]
    seed_rows = []
    for seed, delta in zip(result["seeds"], result["deltas"]):
        nvp_m, vae_e = pairs[seed][0]["metrics"], pairs[seed][1]["eval"]
        seed_rows.append([str(seed), f"{fixed(nvp_m['test_bpd'])} ± {fixed(nvp_m['test_bpd_se'])}",
                          f"{fixed(vae_e['iw_bpd'])} ± {fixed(vae_e['iw_bpd_se'])}", signed(delta)])
    seconds = [fixed(_mean(r["metrics"]["seconds_per_epoch"] for r in group), 1) for group in (nvp_runs, vae_runs)]
    speed = (f"mean seconds per epoch recorded by these runs: RealNVP {seconds[0]}, VAE {seconds[1]} (other "
             "sessions and machines for the VAE; a side-by-side timing follows the table)")
    return "\n".join([
        table(["model", "data", "result", "epochs", "seconds / epoch", "wall time"], run_rows, rule="---"), "",
        *(f"![{name}](figures/{name})" for name in names), "",
        f"**RealNVP against the VAE on {data_name(data_key(nvp_runs[0]))}** ({data['compare']}; seeds {seeds}; "
        f"RealNVP `{nvp_runs[0]['name'].rsplit('_s', 1)[0]}` with {sizes[0]} parameters, the VAE {sizes[1]}; {speed}).",
        "", table(["seed", "RealNVP test bpd (bound, SE over images)", f"VAE test IW bpd, K = {iw_samples(pairs)}",
                   "difference"], seed_rows, rule="---"), "",
        f"Mean difference {signed(result['mean'])} bpd, seed SE {fixed(result['seed_se'])}, 95% t-interval "
        f"{span(result['interval'])} ({len(result['seeds'])} seeds): **{compare.verdict(result['interval'])}**"
        f"{' for RealNVP' if result['interval'][1] < 0 or result['interval'][0] > 0 else ''}. The Monte Carlo SE "
        f"over test images of the mean difference, for these trained models, is {fixed(result['image_se'])}: a "
        f"second figure, {_relation(result['image_se'], result['seed_se'])} the seed SE.", "", timing_text(timing),
    ])


def iw_samples(pairs):
    """'1000': the K of the VAEs' importance-weighted bounds in the comparison ('100, 1000' when they differ)."""
    return ", ".join(str(k) for k in sorted({vae["eval"]["iw_samples"] for _, vae in pairs.values()}))


def _relation(image_se, seed_se):
    if image_se is None or seed_se is None:
        return "not comparable with"
    return "smaller than" if image_se < seed_se else "at least as large as"


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def data_of(run):
    """'MNIST subset: 2,048 train / 509 test images, 1-bit': the data a run read and its bits."""
    return f"{describe_run_data(run['args'], folder=False, run_dir=run['dir'])}, {data_key(run)[1]}-bit"


def make(models_dir, compare_dirs, out_dir, report, report_path):
    """The section's figures (out_dir/models2019_*.png), out_dir/models_2019.md and the report text with the block
    between MARKERS replaced; every run is read (and a missing one refused) before anything is written.
    Returns (new report text, written paths)."""
    replace_block(report, MARKERS, "", report_path)  # the markers are there, before anything is read or written
    models, pairs, timing = load_models(models_dir), load_comparison(*compare_dirs), load_timing(compare_dirs[0])
    result = comparison(pairs)
    data = {**{key: data_of(run) for key, run in models.items()}, "compare": data_of(next(iter(pairs.values()))[0])}
    figs = figures(models, pairs, result, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figs.items():
        save_figure(fig, out_dir / name)
    sources = ", ".join(f"`{run['name']}`" for run in models.values())
    generated = generated_comment(f"--models_2019 from {sources} and the {len(pairs)} seed pairs of --compare")
    block = f"{generated}\n\n{markdown(models, pairs, result, data, list(figs), timing)}"
    report = write_section(out_dir / "models_2019.md", "The 2019 models", block, report, MARKERS, report_path)
    return report, [*(out_dir / name for name in figs), out_dir / "models_2019.md"]
